"""The one exception base of the bot package, and its family."""


class ConveyorError(Exception):
    """Base of conveyor's own errors; the message says what was wrong and what to do."""


class ConfigError(ConveyorError):
    """A setting is missing or has a value that is not allowed."""
