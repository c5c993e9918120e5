"""The one exception base of the state package."""


class StateError(Exception):
    """Base of the domain's errors."""


class StoreError(StateError):
    """The database refused or could not be reached; the message says which."""


class StaleVersionError(StateError):
    """A compare-and-set lost: someone else changed the task first. Re-read and re-decide."""
