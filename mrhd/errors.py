"""User-facing errors.

A :class:`MrhdError` is a mistake the user can fix (missing file, unknown model, no network): the
command line prints its message as one line and exits non-zero, never with a traceback.
"""

from __future__ import annotations


class MrhdError(Exception):
    """An error caused by input or environment, with a message that says what to do."""

    exit_code = 2


class OfflineError(MrhdError):
    """A download was needed but the network is unreachable."""

    exit_code = 3
