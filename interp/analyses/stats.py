"""Interval estimates and tests of the analyses, in one place (float64, NumPy and the standard library).

- `wilson_interval`: the Wilson score interval of a binomial proportion k / n (an accuracy).
- `paired_bootstrap_diff`: a percentile bootstrap interval of mean(after) - mean(before) over
  paired items (the same prompts scored twice).
- `mcnemar_exact`: the exact two-sided McNemar test of paired correctness (a binomial test on the
  discordant pairs).
- `t_interval`: the Student-t interval of the mean of independent values.
- `mean_spread`: per cell of a [sample, ...] array, the SD over samples and the Student-t 95%
  interval of the mean (a heads.csv's spread of each per-head mean); `proportion_spread`: the
  same for 0/1 outcomes (an accuracy), with the Wilson interval.

Each function takes plain numbers or arrays and returns plain floats, so an analysis can report
them in its tables and its checks can read them.
"""

from __future__ import annotations

import math
import statistics
from typing import Optional, Sequence

import numpy as np

from interp.errors import InterpError

__all__ = [
    "wilson_interval",
    "paired_bootstrap_diff",
    "mcnemar_exact",
    "t_interval",
    "mean_spread",
    "proportion_spread",
    "spread_columns",
]


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k / n.

    Raises:
        InterpError: no items (n <= 0).
    """
    if n <= 0:
        raise InterpError("no items to compute an accuracy interval from")
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_bootstrap_diff(
    before: np.ndarray, after: np.ndarray, *, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(after) - mean(before), resampling items (paired).

    Args:
        before: [n] per-item values before (e.g. correct = 1).
        after: [n] the same items' values after.
    """
    before, after = np.asarray(before, float), np.asarray(after, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(before), size=(n_boot, len(before)))
    diffs = after[idx].mean(1) - before[idx].mean(1)
    lo, hi = np.quantile(diffs, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def mcnemar_exact(before: np.ndarray, after: np.ndarray) -> float:
    """Two-sided exact McNemar p-value for paired correctness vectors (binomial on discordant pairs).

    Args:
        before: [n] bool, item correct before.
        after: [n] bool, the same item correct after.
    """
    before, after = np.asarray(before, bool), np.asarray(after, bool)
    b = int((before & ~after).sum())
    c = int((~before & after).sum())
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(0, min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom (beyond: the normal's 1.96).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)  # fmt: skip


def t_interval(values: Sequence[Optional[float]]) -> tuple[float, float, float]:
    """(mean, lo, hi): the 95% Student-t interval of the mean of independent ``values`` (None and
    non-finite values left out; NaN for everything without values, NaN bounds below 2 values)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return (float("nan"),) * 3
    mean = float(v.mean())
    if v.size < 2:
        return mean, float("nan"), float("nan")
    t = _T975[v.size - 2] if v.size - 1 <= len(_T975) else 1.96
    half = t * float(v.std(ddof=1)) / math.sqrt(v.size)
    return mean, mean - half, mean + half


def mean_spread(per_sample: np.ndarray) -> dict[str, np.ndarray]:
    """The spread of a mean over samples, cell by cell: ``per_sample[n, ...]`` -> arrays ``[...]``.

    Returns:
        ``{"mean", "sd", "ci_low", "ci_high"}``: the mean over the first axis, the sample
        standard deviation (ddof 1) and the 95% Student-t interval of the mean (t with n - 1
        degrees of freedom, 1.96 past the table). With fewer than 2 samples the SD and the
        interval are NaN: one sample has no spread to report (never 0).
    """
    x = np.asarray(per_sample, dtype=np.float64)
    n = x.shape[0]
    mean = x.mean(axis=0) if n else np.full(x.shape[1:], np.nan)
    if n < 2:
        nan = np.full(x.shape[1:], np.nan)
        return {"mean": mean, "sd": nan, "ci_low": nan, "ci_high": nan.copy()}
    sd = x.std(axis=0, ddof=1)
    t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
    half = t * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half}


def proportion_spread(correct: np.ndarray) -> dict[str, np.ndarray]:
    """`mean_spread` for 0/1 outcomes ``correct[n, ...]`` (an accuracy per cell): the interval is
    Wilson's (`wilson_interval`, which stays inside [0, 1] and is not empty at 0 or 1 correct)."""
    x = np.asarray(correct, dtype=np.float64)
    out = mean_spread(x)
    n = x.shape[0]
    if n < 2:
        return out
    z = statistics.NormalDist().inv_cdf(0.975)
    p = out["mean"]
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return {**out, "ci_low": np.maximum(0.0, centre - half), "ci_high": np.minimum(1.0, centre + half)}


def spread_columns(name: str, spread: dict[str, np.ndarray], cells: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
    """heads.csv columns ``name_sd``, ``name_ci_low``, ``name_ci_high`` of ``spread`` (`mean_spread`) at ``cells``."""
    return {f"{name}_{key}": spread[key][cells] for key in ("sd", "ci_low", "ci_high")}
