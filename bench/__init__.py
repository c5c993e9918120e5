"""Benchmarks that print conveyor's figures beside their floors, measured in one run.

Each module runs as `python bench/<name>.py [options]` and exposes `run(...)` for the
smoke tests in tests/bench.
"""
