"""Analyses: pure functions from captured statistics to findings, plus thin model drivers.

One module per analysis; each has a frozen result dataclass with ``to_dataframe()``.
"""

__all__: list[str] = []
