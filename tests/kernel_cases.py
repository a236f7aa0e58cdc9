"""Kernel test cases shared by test modules (test_kernels, test_kernels_gpu): one random problem
(`Case`) and the float64 comparison rule (error of a backend vs float64 <= 2 x the error of the
same-dtype plain computation + a dtype tolerance; flash-attention's rule)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from interp.kernels import AttentionStats, attention_stats
from interp.kernels._problem import prepare
from interp.kernels._reference import reference_probs, reference_stats
from interp.kernels._table import STATS

# every float statistic of the table (`interp.kernels._table.STATS`): a new row is checked by every test below
FLOAT_STATS = tuple(stat.name for stat in STATS if stat.dtype.is_floating_point)
TOL = 2e-5  # float32 accumulation tolerance, absolute and relative


@dataclass
class Case:
    """One random problem: tensors plus the keyword arguments of attention_stats."""

    q: torch.Tensor
    k: torch.Tensor
    kwargs: dict = field(default_factory=dict)

    def __repr__(self) -> str:  # hypothesis prints this on failure
        return f"Case(q={tuple(self.q.shape)} {self.q.dtype}, k={tuple(self.k.shape)}, kwargs={self.kwargs})"


def check_against_reference(case: Case, backend: str, **extra) -> None:
    """Every statistic of `backend` within the flash-attention tolerance of float64."""
    compare_to_reference(case, attention_stats(case.q, case.k, backend=backend, **case.kwargs, **extra))


def compare_to_reference(case: Case, got: AttentionStats) -> None:
    """`got` (statistics of `case` from any backend) within the tolerance rule of float64."""
    problem = prepare(case.q, case.k, **prepare_kwargs(case.kwargs))
    ref = reference_stats(problem, torch.float64)
    base = reference_stats(problem, case.q.dtype)  # the plain same-dtype computation
    for name in FLOAT_STATS:
        g, r, b = getattr(got, name), ref[name], base[name]
        if r is None:
            assert g is None, name
            continue
        assert g.shape == r.shape and g.dtype == torch.float32, name
        g, b = g.double(), b.double()
        assert torch.equal(g.isnan(), r.isnan()), f"{name}: NaN pattern differs"
        err = (g - r).abs().nan_to_num(0.0)
        bound = 2 * (b - r).abs().nan_to_num(0.0) + TOL + TOL * r.abs().nan_to_num(0.0)
        worst = (err - bound).max() if err.numel() else 0.0
        assert worst <= 0, f"{name}: error {err.max():.3g} exceeds the bound by {worst:.3g} ({case})"
    check_top1(got, ref, base, problem)


def check_top1(got: AttentionStats, ref: dict, base: dict, problem) -> None:
    """top1 agrees with float64 except at near-ties, where both keys carry the max mass."""
    assert got.top1.dtype == torch.int64
    differ = got.top1 != ref["top1"]
    if not differ.any():
        return
    assert (ref["top1"][differ] >= 0).all() and (got.top1[differ] >= 0).all(), "padding flags differ"
    _, a64 = reference_probs(problem)
    a64 = a64[:, :, problem.rows]
    p_got = a64.gather(-1, got.top1.clamp(min=0)[..., None])[..., 0]
    slack = TOL + 2 * (base["top1p"].double() - ref["top1p"]).abs().nan_to_num(0.0)
    assert (ref["top1p"] - p_got <= slack)[differ].all(), "top1 differs away from a near-tie"


def prepare_kwargs(kwargs: dict) -> dict:
    full = dict(
        causal=True, softcap=None, sliding_window=None, sink_tokens=1, window=10, band=(10, 100),
        segments=None, n_segments=None, key_padding_mask=None, query_rows=None, columns=True,
        sink_logits=None, recent_windows=(),
    )  # fmt: skip
    full.update(kwargs)
    return full
