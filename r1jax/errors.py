"""Errors a user can cause or must fix; the command line prints each as one line (r1jax.cli)."""


class ConfigError(ValueError):
    """A config field (or a command-line flag) is wrong; the message names it and the fix."""


class FileError(ValueError):
    """A file r1jax reads is truncated, corrupt or not what it should be; the message names it."""


class StateError(RuntimeError):
    """A run cannot go on or resume safely (non-finite updates in a row, no usable checkpoint,
    a workdir held by another run); the message names the workdir or checkpoint and the fix."""


def one_line(e: BaseException) -> str:
    """The first line of an exception's message (its type if it has none)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
