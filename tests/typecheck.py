"""Reaching behind the test-time type checker.

Under pytest every function and dataclass of `interp` is wrapped by beartype through jaxtyping's
import hook (``--jaxtyping-packages`` in pyproject's addopts), so annotated shapes and types are
checked on every call the tests make. A user's process has no such wrapper: there, a wrong type
reaches interp's own validation, which raises `InterpError` with the fix. Tests of that user-facing
error call the unwrapped function, as a user's process would.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable


def unchecked(fn: Callable) -> Callable:
    """``fn`` without the type checker's wrapper (itself when there is none)."""
    return inspect.unwrap(fn)


def unchecked_new(cls: type, *args: Any, **kwargs: Any) -> Any:
    """``cls(*args, **kwargs)`` through the class's own ``__init__`` and validation only."""
    obj = object.__new__(cls)
    unchecked(cls.__init__)(obj, *args, **kwargs)
    return obj
