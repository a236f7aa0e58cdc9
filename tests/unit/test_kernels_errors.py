"""interp.kernels.attention_stats: every bad input raises InterpError with a message that says what to do.

Under pytest the jaxtyping import hook (pyproject's addopts) rejects a shape or type that
contradicts the annotations before our own check runs. A user's process has no hook, so the
cases of a wrong shape or type call `attention_stats` (and the `prepare` it validates with)
without the type checker (`tests/typecheck.py`) and require our InterpError and its message.
"""

from __future__ import annotations

import inspect
import re
from contextlib import contextmanager

import pytest
import torch
from typecheck import unchecked

from interp.errors import InterpError
from interp.kernels import _problem, attention_stats
from interp.kernels import stats as stats_module

GEN = torch.Generator().manual_seed(0)
Q = torch.randn(2, 4, 6, 8, generator=GEN)
K = torch.randn(2, 2, 6, 8, generator=GEN)


@contextmanager
def shape_error(match: str):
    """Our InterpError matching `match`, as a user's process (no type checker) gets it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stats_module, "prepare", unchecked(_problem.prepare))
        for name, fn in vars(_problem).items():  # prepare's own helpers, found through the module
            if inspect.isfunction(fn) and fn.__module__ == _problem.__name__:
                mp.setattr(_problem, name, unchecked(fn))
        with pytest.raises(InterpError) as caught:
            yield
    assert re.search(match, str(caught.value)), str(caught.value)


def call_unchecked(q=Q, k=K, **kwargs):
    """`call` without the type checker's wrapper (use inside `shape_error`)."""
    kwargs.setdefault("scale", 0.35)
    kwargs.setdefault("backend", "torch")
    return unchecked(attention_stats)(q, k, **kwargs)


def call(q=Q, k=K, **kwargs):
    kwargs.setdefault("scale", 0.35)
    kwargs.setdefault("backend", "torch")
    return attention_stats(q, k, **kwargs)


@pytest.mark.parametrize(
    ("q", "k", "match"),
    [
        (Q[0], K, "q must be a 4-d tensor"),
        (Q, K[:1], "batch or d_head"),
        (Q, K[..., :4], "batch or d_head"),
        (Q, torch.randn(2, 3, 6, 8), "not a multiple of kv_head"),
        (torch.randn(2, 4, 7, 8), K, "query_pos <= key_pos"),
    ],
)
def test_shape_mismatch(q, k, match) -> None:
    with shape_error(match):
        call_unchecked(q, k)


def test_dtype_mismatch() -> None:
    with pytest.raises(InterpError, match="share dtype"):
        call(Q.half(), K)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("which", ["q", "k"])
def test_non_finite_inputs(bad: float, which: str) -> None:
    q, k = Q.clone(), K.clone()
    (q if which == "q" else k)[1, 1, 3, 2] = bad
    with pytest.raises(InterpError, match=f"{which} contains NaN or inf"):
        call(q, k)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(window=0), "window"),
        (dict(band=(5, 4)), "lo=5 > hi=4"),
        (dict(sink_tokens=-1), "sink_tokens"),
        (dict(sink_tokens=7), "sink_tokens"),
        (dict(scale=0.0), "scale"),
        (dict(softcap=-1.0), "softcap"),
        (dict(sliding_window=0), "sliding_window"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(backend="cuda"), "unknown backend"),
        (dict(n_segments=2), "without segments"),
        (dict(segments=torch.full((2, 6), 3), n_segments=2), "n_segments=2"),
        (dict(segments=torch.full((2, 6), -2)), "-1"),
        (dict(key_padding_mask=torch.full((2, 6), 2)), "0/1"),
        (dict(query_rows=torch.tensor([0, 6])), "query_rows out of range"),
        (dict(query_rows=torch.tensor([-1])), "query_rows out of range"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(InterpError, match=match):
        call(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(segments=torch.zeros(2, 5, dtype=torch.long)), "segments must be"),
        (dict(key_padding_mask=torch.ones(1, 6, dtype=torch.bool)), "key_padding_mask must be"),
    ],
)
def test_mask_and_segment_shapes(kwargs: dict, match: str) -> None:
    with shape_error(match):
        call_unchecked(**kwargs)


@pytest.mark.parametrize(
    ("sinks", "match"),
    [
        (torch.zeros(3), r"sink_logits must be a tensor \[head\] = \(4,\)"),
        (torch.zeros(2, 4), r"sink_logits must be a tensor \[head\]"),
        ([0.0, 0.0, 0.0, 0.0], r"sink_logits must be a tensor \[head\]"),
    ],
)
def test_sink_logits_shape(sinks, match: str) -> None:
    with shape_error(match):
        call_unchecked(sink_logits=sinks)


@pytest.mark.parametrize(
    ("sinks", "match"),
    [
        (torch.zeros(4, dtype=torch.long), "sink_logits must be a floating tensor"),
        (torch.tensor([0.0, float("nan"), 0.0, 0.0]), "sink_logits contains NaN or inf"),
        (torch.tensor([0.0, 0.0, -float("inf"), 0.0]), "sink_logits contains NaN or inf"),
    ],
)
def test_sink_logits_values(sinks, match: str) -> None:
    with shape_error(match):  # the jaxtyping hook would reject the integer dtype before our check
        call_unchecked(sink_logits=sinks)


@pytest.mark.parametrize(
    ("weight", "match"),
    [
        (torch.ones(2, 3, 6), r"key_weight must be a tensor \[batch, kv_head or head, key_pos\] = \(2, 2 or 4, 6\)"),
        (torch.ones(2, 4, 5), r"key_weight must be a tensor \[batch, kv_head or head, key_pos\]"),
        (torch.ones(6), r"key_weight must be a tensor"),
        ([[1.0] * 6] * 2, r"key_weight must be a tensor"),
        (torch.ones(2, 2, 6, dtype=torch.long), "key_weight must be a floating tensor"),
        (
            torch.ones(2, 2, 6).index_put_((torch.tensor([1]),), torch.tensor(float("nan"))),
            "key_weight contains NaN or inf",
        ),
        (
            torch.ones(2, 4, 6).index_put_((torch.tensor([0]),), torch.tensor(float("inf"))),
            "key_weight contains NaN or inf",
        ),
        (torch.ones(2, 2, 6) - torch.eye(6)[:2] * 1.5, "key_weight must be non-negative .* minimum of -0.5"),
    ],
)
def test_key_weight(weight, match: str) -> None:
    with shape_error(match):  # the jaxtyping hook would reject some before our check
        call_unchecked(key_weight=weight)


def test_sink_logits_of_any_float_dtype_agree() -> None:
    """GPT-OSS keeps `sinks` in bf16: the logits are upcast exactly, not rounded to q's dtype."""
    sinks = torch.tensor([0.5, -1.25, 2.0, 3.5], dtype=torch.bfloat16)
    a, b = call(sink_logits=sinks), call(sink_logits=sinks.double())
    torch.testing.assert_close(a.lse, b.lse, rtol=0, atol=0)
    assert not torch.equal(a.lse, call().lse)


@pytest.mark.parametrize("windows", [(0,), (3, 3), (2.5,), "8", 4])
def test_recent_windows(windows) -> None:
    with shape_error("recent_windows"):
        call_unchecked(scale=0.3, recent_windows=windows)


def test_triton_on_cpu_says_what_to_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(InterpError, match="backend='torch'"):
        call(backend="triton")


def test_dataframe_of_missing_columns() -> None:
    stats = call(columns=False)
    with pytest.raises(InterpError, match="columns=True"):
        stats.to_dataframe("columns")


def test_hf_integer_mask_is_accepted() -> None:
    """HF's attention_mask is a 0/1 LongTensor; it means the same as the bool mask."""
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[0, :2] = 0
    a, b = call(key_padding_mask=mask), call(key_padding_mask=mask.bool())
    torch.testing.assert_close(a.entropy, b.entropy, equal_nan=True)
    assert a.entropy[0, :, :2].isnan().all() and not a.entropy[0, :, 2:].isnan().any()
