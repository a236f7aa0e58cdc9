"""Analyses: pure functions from attention statistics to findings.

One module per analysis: a frozen config (a subclass of `Config`: validated when built, serialised
by ``settings()``), pure functions over statistics, and a frozen result with ``to_dataframe()``
and ``summary()``. Heads are ranked by one rule everywhere (`rank_heads`). No model calls, no
files, no progress bars: the runner that drives the model is `interp.experiments.<name>`.
"""

from interp.analyses.ranking import rank_heads
from interp.config import Config

__all__ = ["Config", "rank_heads"]
