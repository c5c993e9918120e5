"""The dashboard: `/ui` pages, `/events` (SSE), the read token, templates and static files."""
