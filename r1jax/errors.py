"""Errors a user can cause, raised before anything is compiled or allocated."""


class ConfigError(ValueError):
    """A config field (or a command-line flag) is wrong; the message names it and the fix."""
