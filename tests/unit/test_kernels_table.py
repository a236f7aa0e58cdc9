"""The statistics table (interp/kernels/_table.py): one declaration per statistic, iterated everywhere.

A toy statistic added to a copy of the table flows through the finaliser (fill values, shape),
`to_dataframe`, the torch backend's buffers and the Triton output allocation without any other
change; a backend that forgets a statistic of the table fails loudly instead of leaving it out.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math

import pytest
import torch
from kernel_cases import FLOAT_STATS

from interp.kernels import AttentionStats
from interp.kernels._problem import prepare
from interp.kernels._table import STATS, Stat, present
from interp.kernels._torch import _Accumulator, torch_stats
from interp.kernels.stats import _finalize

TOY_ROW = Stat("toy", "row", "a row statistic that only this test knows")
TOY_WINDOW = Stat("toy_win", "window", "a per-window statistic that only this test knows", fill=-7.0)
TOY_TABLE = (*STATS, TOY_ROW, TOY_WINDOW)


def _toy_class() -> type:
    """AttentionStats with the two toy fields and the toy table, as a new row would make it."""
    fields = [(s.name, torch.Tensor | None, dataclasses.field(default=None)) for s in (TOY_ROW, TOY_WINDOW)]
    return dataclasses.make_dataclass(
        "ToyStats", fields, bases=(AttentionStats,), frozen=True, namespace={"table": TOY_TABLE}
    )


def _problem(**extra):
    gen = torch.Generator().manual_seed(31)
    q, k = torch.randn(2, 4, 9, 8, generator=gen), torch.randn(2, 2, 12, 8, generator=gen)
    mask = torch.arange(12)[None] >= torch.tensor([[0], [5]])  # batch 1: padded rows 0-1 of q (keys 0-4)
    kw = dict(
        scale=0.3, causal=True, softcap=None, sliding_window=None, sink_tokens=1, window=4, band=(1, 5),
        segments=None, n_segments=None, key_padding_mask=mask, query_rows=None, columns=True,
        recent_windows=(2, 6),
    )  # fmt: skip
    return prepare(q, k, **(kw | extra))


def test_every_field_of_attention_stats_is_a_row_of_the_table() -> None:
    names = [s.name for s in STATS]
    assert len(names) == len(set(names))
    fields = [f.name for f in dataclasses.fields(AttentionStats)]
    assert fields == ["query_rows", *names, "recent_windows"]
    assert AttentionStats.table is STATS
    assert all(f"- {name} " in AttentionStats.__doc__ for name in names)  # documented from the table
    assert set(FLOAT_STATS) == {s.name for s in STATS} - {"top1"}  # the tests' list is the table's


def test_a_toy_statistic_flows_through_the_finaliser_and_the_dataframe() -> None:
    pb = _problem()
    toy_cls = _toy_class()
    raw = torch_stats(pb)
    toy = torch.arange(2 * 4 * 9, dtype=torch.float32).view(2, 4, 9) + 0.5
    toy_win = torch.rand(2, 4, 9, 2, generator=torch.Generator().manual_seed(1))
    got = _finalize(pb, raw | {"toy": toy, "toy_win": toy_win}, toy_cls)
    assert isinstance(got, toy_cls) and isinstance(got, AttentionStats)
    # padded query rows (batch 1, rows 0-1) take each statistic's fill; the rest is the raw value
    assert (
        got.toy[1, :, :2].isnan().all()
        and torch.equal(got.toy[0], toy[0])
        and torch.equal(got.toy[1, :, 2:], toy[1, :, 2:])
    )
    assert (got.toy_win[1, :, :2] == -7.0).all() and torch.equal(got.toy_win[0], toy_win[0])
    # the table's other statistics come out as without the toy rows
    plain = _finalize(pb, torch_stats(pb))
    for stat in STATS:
        a, b = getattr(plain, stat.name), getattr(got, stat.name)
        assert (a is None and b is None) or torch.equal(a.nan_to_num(-1.0), b.nan_to_num(-1.0)), stat.name
    frame = got.to_dataframe()
    assert list(frame.columns)[-3:] == ["toy", "toy_win_2", "toy_win_6"]  # table order, one column per window
    one = frame[(frame["batch"] == 0) & (frame["head"] == 3) & (frame["row"] == 3 + 4)]  # row 4 of q sits at key 7
    assert one["toy"].item() == toy[0, 3, 4].item() and one["toy_win_6"].item() == pytest.approx(
        toy_win[0, 3, 4, 1].item()
    )
    assert "toy" not in got.to_dataframe("columns").columns


def test_the_finaliser_refuses_a_backend_that_forgets_a_statistic() -> None:
    pb = _problem()
    with pytest.raises(AssertionError, match="toy"):
        _finalize(pb, torch_stats(pb), _toy_class())  # the torch backend has no maths for the toy rows
    raw = torch_stats(pb)
    del raw["first"]
    with pytest.raises(AssertionError, match="first"):
        _finalize(pb, raw)


def test_backend_buffers_are_allocated_from_the_table() -> None:
    pb = _problem()
    acc = _Accumulator(pb, n_rows=9, table=TOY_TABLE)
    assert acc.rows["toy"].shape == (2, 4, 9) and acc.rows["toy"].isnan().all()
    assert acc.rows["toy_win"].shape == (2, 4, 9, 2) and (acc.rows["toy_win"] == -7.0).all()
    assert acc.rows["top1"].dtype == torch.int64 and (acc.rows["top1"] == -1).all()
    no_windows = _problem(recent_windows=())
    assert not present(TOY_WINDOW, no_windows) and "toy_win" not in _Accumulator(no_windows, 9, TOY_TABLE).rows


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_triton_outputs_are_allocated_and_named_from_the_table() -> None:
    from interp.kernels import _triton

    pb = _problem()
    out = _triton._row_outputs(pb, 9, TOY_TABLE)
    assert out["toy"].shape == (2, 4, 9) and out["toy_win"].shape == (2, 4, 9, 2)
    assert out["top1"].dtype == torch.int32 and out["lse"].dtype == torch.float32
    # each row-like statistic of the real table is one output argument of the row kernel, named after it
    row_like = [_triton._camel(s.name) for s in STATS if s.shape in _triton._ROW_SHAPES]
    assert _triton._camel("self_mass") == "SelfMass" and _triton._camel("toy_win") == "ToyWin"
    assert [a for a in _triton._row_pass.arg_names if a in row_like] == row_like
    assert set(row_like) <= set(_triton._row_pass.arg_names)
    sums = {_triton._camel(s.source) for s in STATS if s.shape == "column"}
    assert sums <= set(_triton._column_pass.arg_names)


def test_fill_values_and_reductions_are_declared() -> None:
    """Regression guard on the conventions the docs state: NaN on padding, top1 -1, column means."""
    by_name = {s.name: s for s in STATS}
    assert by_name["top1"].fill == -1 and by_name["top1"].dtype == torch.int64
    assert all(math.isnan(s.fill) for s in STATS if s.name != "top1")
    assert (by_name["recv_mean"].reduction, by_name["recv_mean"].source) == ("mean", "recv")
    assert by_name["band"].reduction == "band mean" and by_name["recv"].reduction == "sum"
    with pytest.raises(AssertionError):
        Stat("bad", "column", "a column statistic without a column reduction")
