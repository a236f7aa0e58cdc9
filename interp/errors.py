"""The package's one error type.

Every failure that a user can cause (bad input, missing weights, out-of-range heads, bad CLI
flags) raises :class:`InterpError` with a message that says what to do about it.
"""

from __future__ import annotations

__all__ = ["InterpError"]


class InterpError(Exception):
    """An error caused by input or environment, with a message that spells out the fix."""
