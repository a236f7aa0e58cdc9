"""The one configuration convention of every analysis (and of the datasets' generator configs).

An analysis config is a frozen dataclass that subclasses `Config`. It is validated when it is
built (``__post_init__`` calls `Config.validate`), so a config that exists is a valid one, and it
serialises itself with `Config.settings` (JSON-friendly, what run.json and resume logs store).
Checks that need the model (a layer out of range, a prompt longer than the context) belong to the
experiment runner, which has the model; a config never sees one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["Config"]


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class Config:
    """Base of analysis configs: validated at construction, serialised by `settings`."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `interp.errors.InterpError` on a setting outside its range (model-free checks only)."""

    def normalise(self, **values: Any) -> None:
        """Set fields of this frozen config to their normal form while it validates itself
        (``self.normalise(layers=tuple(self.layers))``): the one place a config's fields change."""
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def settings(self) -> dict[str, Any]:
        """JSON-friendly settings: every field, tuples as lists, other objects as strings."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
