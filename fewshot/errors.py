"""The one error type the command line renders: a message a user can act on, never a traceback."""

from __future__ import annotations


class FewshotError(Exception):
    """A user-facing failure: bad input, a missing file, an unusable checkpoint.

    ``hint`` is an optional second sentence that says what to do about it.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"
