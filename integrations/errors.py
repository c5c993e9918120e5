"""The one exception base of the integrations package."""


class IntegrationError(Exception):
    """Something outside conveyor (git, a tracker, a process) did not do what was asked."""
