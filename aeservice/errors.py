"""The one exception type that means "the user asked for something we cannot do".

The CLI prints its message as a single line and exits non-zero; the REST layer turns it into
HTTP 400. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """Bad input or settings, described in one line that names the problem."""
