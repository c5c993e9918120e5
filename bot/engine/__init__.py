"""The engine: workers, the pipeline of stages, merge and deploy, reaper and watchdog."""
