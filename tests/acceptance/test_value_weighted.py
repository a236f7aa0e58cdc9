"""Value-weighted attention statistics on the two real models equal an eager float64 computation.

For chosen layers of the embedded SmolLM2 and of Gemma 3 270M (a 512-token local layer past its
window, and a global layer), the expected values are built in the test from the full attention
matrix the model itself returns under ``attn_implementation="eager"`` with ``output_attentions``
and from w_j = ||W_O^h v_j|| computed here from the o_proj weight: u_ij = a_ij w_j,
w_stat = (sum of u_ij over the keys in question) / sum_j u_ij, w_recv_j = sum_i u_ij / sum_j' u_ij'.
The kernel runs on the sdpa model's captured q and k with ``key_weight = cap.value_norms(layer).output``.
Then `interp score sinks` on both models: every first-token sink is classified, and a no-op is
one whose value-weighted mass is under noop_ratio of its attention mass.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.hooks import capture
from interp.kernels import attention_stats

pytestmark = pytest.mark.slow

TOL = 1e-5
SINKS = 4
WINDOWS = (16, 128)


def _eager_attentions(lm, ids) -> tuple[torch.Tensor, ...]:
    """The model's own eager attention probabilities per layer [batch, head, query, key] (float32),
    switched back to the model's implementation afterwards."""
    model = lm.hf_model
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return model(input_ids=ids, output_attentions=True, use_cache=False).attentions
    finally:
        model.set_attn_implementation(before)


def _expected(a: torch.Tensor, w: torch.Tensor, window: int | None) -> dict[str, torch.Tensor]:
    """Weighted statistics from the dense a [head, T, T] and w [head, T] (float64, no padding).

    w_recv is a sum over up to T rows; it is compared per row that may see the key (divided by
    the count of rows with a_ij's mask open: T - j, at most the window), like recv_mean."""
    t = a.shape[-1]
    u = a.double() * w[:, None, :]
    z = u.sum(-1)
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    lag = i - j
    out = {
        "w_first": u[..., 0] / z,
        "w_sink": u[..., :SINKS].sum(-1) / z,
        "w_self_mass": u.diagonal(dim1=-2, dim2=-1) / z,
        "w_recv": (u / z[..., None]).sum(-2) / _seen_by(t, window),
    }
    out["w_recent"] = torch.stack([(u * ((lag >= 0) & (lag < W))).sum(-1) / z for W in WINDOWS], -1)
    out["w_distant"] = torch.stack([(u * ((lag >= W) & (j >= SINKS))).sum(-1) / z for W in WINDOWS], -1)
    return out


def _seen_by(t: int, window: int | None) -> torch.Tensor:
    """[T] the number of query rows the mask lets see key j: i >= j, and i - j < W."""
    return torch.arange(t, 0, -1, dtype=torch.float64).clamp(max=window or t)


def _output_norms(lm, layer: int, v: torch.Tensor) -> torch.Tensor:
    """[head, T] ||W_O^h v_j|| from the o_proj weight [d_model, head * d_head], float64."""
    weight = lm.adapter.attention(lm, layer).o_proj.weight.detach().double()
    d = lm.arch.d_head
    return torch.stack(
        [
            (v[0, lm.arch.kv_map[h]].double() @ weight[:, h * d : (h + 1) * d].T).norm(dim=-1)
            for h in range(lm.arch.n_heads)
        ]
    )


def _compare(lm, ids, layers) -> dict[str, float]:
    with capture(lm, layers=layers, keep=("q", "k", "v")) as cap:
        lm.forward(ids)
    eager = _eager_attentions(lm, ids)
    errors = {}
    for layer in layers:
        window = lm.attention_kwargs(layer)["sliding_window"]
        want = _expected(eager[layer][0], _output_norms(lm, layer, cap["v", layer]), window)
        st = attention_stats(
            cap["q", layer], cap["k", layer], **lm.attention_kwargs(layer), sink_tokens=SINKS,
            recent_windows=WINDOWS, key_weight=cap.value_norms(layer).output,
        )  # fmt: skip
        for name, expected in want.items():
            got = getattr(st, name)[0].double()
            if name == "w_recv":
                got = got / _seen_by(got.shape[-1], window)
            err = float((got - expected).abs().max())
            errors[f"{layer}.{name}"] = err
            assert err < TOL, (layer, name, err)
    return errors


def _long_ids(lm, n: int) -> torch.Tensor:
    from interp.datasets.texts import default_texts

    return torch.tensor([lm.with_bos(lm.tokens("\n\n".join(default_texts()))[: n - int(lm.prepends_bos)])])


def test_weighted_statistics_equal_eager_float64_on_the_embedded_model(embedded):
    _compare(embedded, _long_ids(embedded, 200), [0, 14, 29])


def test_weighted_statistics_equal_eager_float64_on_gemma_past_the_window(gemma3):
    lm = gemma3
    ids = _long_ids(lm, 600)
    assert lm.attention_kwargs(0)["sliding_window"] == 512 and lm.attention_kwargs(5)["sliding_window"] is None
    _compare(lm, ids, [0, 5])
    # Past the window, a local layer's rows cannot see BOS: no share of their output comes from it.
    with capture(lm, layers=[0], keep=("q", "k", "v")) as cap:
        lm.forward(ids)
    st = attention_stats(cap["q", 0], cap["k", 0], **lm.attention_kwargs(0), key_weight=cap.value_norms(0).output)
    assert (st.w_first[0, :, 512:] == 0).all() and (st.w_first[0, :, 1:512] > 0).all()


@pytest.mark.parametrize("model", ["embedded", "gemma3"])
def test_sinks_classify_every_first_token_sink(model, request):
    """`interp score sinks` at the report's quick size: each sink is active or no-op by the rule of
    docs/METRICS.md#value-weighted-sinks, and the weighted mass is never the attention mass itself."""
    from interp.analyses.sinks import SinkConfig
    from interp.experiments import Store, registry

    lm = request.getfixturevalue(model)
    result = registry()["sinks"].run(lm, SinkConfig(length=128, max_texts=2), Store())
    heads = result.to_dataframe()
    sink = heads["alpha0"] > result.config.eps
    assert sink.any()
    assert set(heads.loc[sink, "sink_kind"]) <= {"active", "no-op"} and (heads.loc[~sink, "sink_kind"] == "none").all()
    ratio = heads["weighted_first_token_mass"] / heads["first_token_mass"]
    noop = heads["sink_kind"] == "no-op"
    assert (ratio[noop] < result.config.noop_ratio).all() and (ratio[sink & ~noop] >= result.config.noop_ratio).all()
    assert not np.allclose(heads["weighted_first_token_mass"], heads["first_token_mass"], atol=1e-3)
    share = result.summary()["noop_share_pct"]
    assert 0.0 <= share <= 100.0
