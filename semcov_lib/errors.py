"""The common base of every error semcov raises on purpose (bad input, bad files, bad state).

The command line turns any of them into one line ``error: ...`` plus a hint; modules derive
their own errors from :class:`SemcovError` (and, for compatibility, from the builtin they
used to raise, e.g. ``ValueError``).
"""

from __future__ import annotations


class SemcovError(Exception):
    """A problem the user can fix; ``hint`` says how (shown by the command line)."""

    hint: str = ""

    def __init__(self, message: str = "", hint: str = "") -> None:
        super().__init__(message)
        if hint:
            self.hint = hint
