"""The one exception base of the bot package, and its family."""


class ConveyorError(Exception):
    """Base of conveyor's own errors; the message says what was wrong and what to do."""


class ConfigError(ConveyorError):
    """A setting is missing or has a value that is not allowed."""


class UsageError(ConveyorError):
    """A command line the user can fix: an argument conveyor cannot use."""


class ServerError(ConveyorError):
    """The running server could not be reached, or refused or failed a request."""


class StartError(ConveyorError):
    """The server (or `db upgrade`) cannot start: the database does not answer, the port
    is taken. The message says what, where, and what to do."""
