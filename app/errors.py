"""Errors every program may raise to the command line.

``UsageError`` is a start-up problem a person can act on (a missing file, a bad option, a
missing extra): the CLI prints its message without a traceback and exits with status 2.
"""


class EdgetuneError(Exception):
    """Base class of edgetune's own errors."""


class UsageError(EdgetuneError):
    """A bad argument, config value, input path or missing optional dependency."""


def missing_extra(module: str, extra: str) -> UsageError:
    """The error for an optional dependency that is not installed."""
    return UsageError(f"{module} is not installed; install it with: pip install 'edgetune[{extra}]'")
