"""Reduce post-RoPE queries and keys to per-head attention statistics, without a [T, T] matrix.

See `interp.kernels.stats.attention_stats` for the statistics and `docs/CONTRACTS.md` for the
contract; the definitions are in docs/METRICS.md.
"""

from interp.kernels._problem import BACKENDS
from interp.kernels.pattern import attention_pattern
from interp.kernels.stats import AttentionStats, attention_stats

__all__ = ["AttentionStats", "attention_stats", "attention_pattern", "BACKENDS"]
