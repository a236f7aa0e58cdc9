"""The one table of kernel statistics: every statistic of `AttentionStats` declared once.

A `Stat` row says what the rest of the package needs to know about a statistic apart from its
maths: its name, the shape of its values, how the finaliser turns a streaming backend's raw
output into it, the value it holds where it is undefined (padded query rows, padded keys), its
dtype, whether it needs a per-key weight, and its one-line definition. `STATS` is iterated by
`AttentionStats` (its fields, its docstring, `to_dataframe`), by the finaliser (`stats._finalize`),
by the reference's padding fill, by the torch backend's output buffers, by the Triton output
allocation and slicing, and by the tests' list of float statistics. Adding a statistic is one
row here plus its maths in the three backends (`_reference.py`, `_torch.py`, `_triton.py`).

Shapes (`Stat.shape`):

- ``"row"``: [batch, head, n_rows], one value per requested query row;
- ``"segment"``: [batch, head, n_rows, n_segments] (present with `segments`);
- ``"window"``: [batch, head, n_rows, n_windows], one column per w of `recent_windows`;
- ``"column"``: [batch, head, key_pos], one value per key (present with `columns=True`);
- ``"target"``: [batch, head, n_rows, n_targets] (present with `targets`; the last axis is
  dropped for targets [batch, n_rows]).

Reductions (`Stat.reduction`), from the backend's raw output named `Stat.source`:

- ``"row"``: the backend's per-row value is final (rows are complete inside a backend);
- ``"sum"``: a column sum over the real query rows, final as it is;
- ``"mean"``: a column sum divided by the real queries that may see the key;
- ``"band mean"``: a column sum divided by the real queries in the band that may see the key.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interp.kernels._problem import Problem

__all__ = ["Stat", "STATS", "SHAPES", "REDUCTIONS", "present", "raw_names"]

SHAPES = ("row", "segment", "window", "column", "target")
REDUCTIONS = ("row", "sum", "mean", "band mean")
_NAN = float("nan")


@dataclass(frozen=True)
class Stat:
    """One statistic: everything but its maths.

    Attributes:
        name: the field of `AttentionStats` (and the dataframe column, per window / segment
            suffixed `_<w>` / `_<c>`).
        shape: one of SHAPES (module docstring).
        doc: its definition in one line (docs/METRICS.md has the long form).
        reduction: one of REDUCTIONS: how the finaliser makes it from the raw output.
        fill: its value on padded query rows (row-like shapes) or padded keys (column).
        dtype: its dtype from the streaming backends (the reference gives float64 floats).
        weighted: needs `key_weight` (None without it): a share of sum_j A_ij w_j.
        raw: the backend output it is made from, when that is not `name` (recv_mean: recv).
    """

    name: str
    shape: str
    doc: str
    reduction: str = "row"
    fill: float = _NAN
    dtype: torch.dtype = torch.float32
    weighted: bool = False
    raw: str = ""

    def __post_init__(self) -> None:
        assert self.shape in SHAPES and self.reduction in REDUCTIONS, self
        assert (self.shape == "column") == (self.reduction != "row"), self

    @property
    def source(self) -> str:
        """The name of the backend output this statistic is made from."""
        return self.raw or self.name


STATS: tuple[Stat, ...] = (
    Stat("lse", "row", "log sum_j exp(s_ij), natural log; with sink logits log(exp(sigma_h) + sum_j exp(s_ij))"),
    Stat("top1", "row", "key index of max_j A_ij (padding included); ties: the smallest j", fill=-1, dtype=torch.int64),
    Stat("top1p", "row", "max_j A_ij"),
    Stat("entropy", "row", "-sum_j A_ij log A_ij over the keys, in nats (a sink logit is not a key)"),
    Stat("sink", "row", "mass on the first `sink_tokens` real tokens"),
    Stat("dist", "row", "sum_j A_ij (i - j), mean attention distance in positions"),
    Stat("waad", "row", "sum_j A_ij min(i - j, W), windowed average attention distance (Li et al. 2025)"),
    Stat("first", "row", "mass on the first real token whatever `sink_tokens` is; 0 where a window hides it"),
    Stat("self_mass", "row", "A_ii, the mass on the query's own key"),
    Stat("w_first", "row", "value-weighted share of the first real token, A_if w_f / sum_j A_ij w_j", weighted=True),
    Stat("w_sink", "row", "value-weighted share of the first `sink_tokens` real tokens", weighted=True),
    Stat("w_self_mass", "row", "value-weighted share of the query's own key, A_ii w_i / sum_j A_ij w_j", weighted=True),
    Stat("seg", "segment", "mass on each labelled key segment"),
    Stat("recent", "window", "mass on the keys with 0 <= i - j < w (the last w positions, the query included)"),
    Stat("distant", "window", "mass on the keys with i - j >= w that are not among the first `sink_tokens`"),
    Stat("w_recent", "window", "value-weighted share of the keys of `recent`", weighted=True),
    Stat("w_distant", "window", "value-weighted share of the keys of `distant`", weighted=True),
    Stat("recv", "column", "sum_i A_ij over the real queries, attention received by key j", reduction="sum"),
    Stat(
        "recv_mean",
        "column",
        "recv / the real queries that may see j (alpha_j of Gu et al. 2024); NaN when none may",
        reduction="mean",
        raw="recv",
    ),
    Stat(
        "band",
        "column",
        "mean of A_ij over the real queries with lo <= i - j <= hi that may see j (FAI of Li et al. 2025)",
        reduction="band mean",
    ),
    Stat(
        "w_recv",
        "column",
        "sum_i A_ij w_j / sum_j' A_ij' w_j' over the real queries: value-weighted attention received",
        reduction="sum",
        weighted=True,
    ),
    Stat("target", "target", "A_{i, t} on the expected key t (0 when row i may not see t); NaN for t = -1"),
    Stat("target_score", "target", "s_{i, t}, the scaled (soft-capped) logit of the expected key, unmasked"),
)


def present(stat: Stat, problem: Problem) -> bool:
    """Whether `problem` asks for `stat` (the others are None in `AttentionStats`)."""
    if stat.weighted and problem.key_weight is None:
        return False
    return {
        "row": True,
        "segment": problem.segments is not None,
        "window": bool(problem.recent_windows),
        "column": problem.columns,
        "target": problem.targets is not None,
    }[stat.shape]


def raw_names(problem: Problem, table: tuple[Stat, ...] = STATS) -> tuple[str, ...]:
    """The backend outputs `problem` needs, in table order: the `source` of each present statistic."""
    names = (s.source for s in table if present(s, problem))
    return tuple(dict.fromkeys(names))
