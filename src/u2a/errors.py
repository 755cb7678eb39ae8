"""Errors that u2a reports to the user as a message (no traceback) from the command line."""


class U2AError(Exception):
    """Base class of errors caused by the user's input, config or files."""


class ConfigError(U2AError):
    """A config key is unknown, has the wrong type or an impossible value."""


class DataError(U2AError):
    """A dataset file, line or sample is missing or malformed."""


class ModelError(U2AError):
    """An encoder or a saved model cannot be loaded or used as asked."""
