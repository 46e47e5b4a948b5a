"""Errors a user can act on.

Anything raised as a :class:`UserError` reaches the command line as one line naming the
key or file at fault and what to do, with a non-zero exit and no traceback (a full one
only with ``HYDRA_FULL_ERROR=1``). Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, config or environment, not with dltrain."""

    exit_code = 2


class ConfigError(UserError):
    """A config value is missing, out of range or inconsistent with the data."""


def first_line(err: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
