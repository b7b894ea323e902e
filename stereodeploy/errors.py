"""User-facing errors.

A :class:`UserError` is a mistake the user can fix (a missing file, a size mismatch, a wrong model).
The command line prints its message on one line and exits with its ``exit_code``; no traceback.
Anything else that escapes is a bug and may raise.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, with a message that names the problem and the fix."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(UserError):
    """A bad option or argument value (exit code 2, as for any usage error)."""

    exit_code = 2
