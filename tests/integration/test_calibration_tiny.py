"""ACT and ZeroTuning interventions on tiny random Llamas (MHA and GQA) equal a float64
materialised computation of their definitions (docs/METRICS.md), also under left padding."""

from __future__ import annotations

import math

import pytest
import torch
from typecheck import unchecked

from interp.analyses.sinks import sink_members
from interp.errors import InterpError
from interp.experiments.calibration import act_edits, zerotune_edits
from interp.hooks import capture, intervene

T = 16
PAD = 4  # left padding of batch row 0


def _batch():
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, 97, (2, T), generator=g)
    mask = torch.ones(2, T, dtype=torch.long)
    mask[0, :PAD] = 0
    return ids, mask


def _run(lm, ids, mask, layer, edits=()):
    with intervene(lm, list(edits)):
        with capture(lm, layers=[layer], keep=("q", "k", "v", "z")) as cap:
            lm.forward(ids, mask)
    return (cap[s, layer].double() for s in ("q", "k", "v", "z"))


def _attention64(lm, q, k, mask):
    """Dense float64 attention (test reference): A [batch, head, T, T] and the visibility mask."""
    group = q.shape[1] // k.shape[1]
    s = q @ k.repeat_interleave(group, 1).transpose(-1, -2) * lm.arch.scale
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    visible = causal[None, None] & mask.bool()[:, None, None, :]
    s = s.masked_fill(~visible, float("-inf"))
    return torch.softmax(s, -1).nan_to_num(0.0), visible


def _recv_mean64(a, visible, mask):
    real_q = mask.bool()[:, None, :, None]
    sees = (visible & real_q).sum(-2).double()  # queries that may see key j
    recv = (a * real_q).sum(-2)
    return torch.where(sees > 0, recv / sees.clamp_min(1), torch.full_like(recv, float("nan")))


def _real_rows(mask):
    return mask.bool()  # [batch, T]


@pytest.mark.parametrize("beta", [0.4, 0.1])
def test_act_equals_materialised_definition(tiny_lm, beta):
    lm = tiny_lm
    layer, head = 1, 3
    ids, mask = _batch()
    q, k, v, z0 = _run(lm, ids, mask, layer)
    a, visible = _attention64(lm, q, k, mask)
    rm = _recv_mean64(a, visible, mask)[:, head]  # [batch, T]
    tau = 0.1
    _, hidden = sink_members(rm, tau=tau, min_queries=1)
    assert hidden.any(dim=-1).all(), "test needs hidden sinks in every row of the batch"
    gap = (rm[~rm.isnan()] - tau).abs().min()
    assert gap > 1e-4, "a recv_mean too close to tau would make S depend on float32 rounding"
    ah = a[:, head]
    s_mask = hidden[:, None, :] & visible[:, 0]
    m = (ah * s_mask).sum(-1, keepdim=True)
    other = ah * ~s_mask
    expected_a = torch.where(s_mask, beta * ah, other + other / (1 - m) * (1 - beta) * m)
    group = lm.arch.n_heads // lm.arch.n_kv_heads
    expected_z = expected_a @ v[:, head // group]

    edits = act_edits(lm, [(layer, head)], beta=beta, tau=tau, min_queries=1, attention_mask=mask, backend="torch")
    _, _, _, z1 = _run(lm, ids, mask, layer, edits)
    real = _real_rows(mask)
    assert torch.allclose(z1[:, head][real], expected_z[real], atol=2e-5)
    assert (z1[:, head][real] - z0[:, head][real]).abs().max() > 1e-3  # the calibration did something
    others = [h for h in range(lm.arch.n_heads) if h != head]
    assert torch.allclose(
        z1[:, others][real[:, None].expand(-1, len(others), -1)],
        z0[:, others][real[:, None].expand(-1, len(others), -1)],
        atol=1e-6,
    )


def test_act_include_first_also_scales_the_first_sink(tiny_lm):
    lm = tiny_lm
    layer, head, beta = 2, 0, 0.4
    ids, mask = _batch()
    q, k, v, _ = _run(lm, ids, mask, layer)
    a, visible = _attention64(lm, q, k, mask)
    rm = _recv_mean64(a, visible, mask)[:, head]
    member, _ = sink_members(rm, tau=0.1, min_queries=1)
    ah = a[:, head]
    s_mask = member[:, None, :] & visible[:, 0]
    m = (ah * s_mask).sum(-1, keepdim=True)
    other = ah * ~s_mask
    full = other.sum(-1, keepdim=True) == 0  # rows that see only S keys are left unchanged
    expected_a = torch.where(
        full, ah, torch.where(s_mask, beta * ah, other + other / (1 - m).clamp_min(1e-30) * (1 - beta) * m)
    )
    group = lm.arch.n_heads // lm.arch.n_kv_heads
    expected_z = expected_a @ v[:, head // group]
    edits = act_edits(lm, [(layer, head)], beta=beta, min_queries=1, include_first=True, attention_mask=mask)
    _, _, _, z1 = _run(lm, ids, mask, layer, edits)
    real = _real_rows(mask)
    assert torch.allclose(z1[:, head][real], expected_z[real], atol=2e-5)


def test_act_on_two_layers_uses_the_live_calibrated_inputs(tiny_lm):
    """With an earlier calibrated head, the later head's S and m come from the same forward pass."""
    lm = tiny_lm
    ids, mask = _batch()
    edits = act_edits(lm, [(0, 1), (1, 2)], min_queries=1, attention_mask=mask)
    q, k, v, z = _run(lm, ids, mask, 1, edits)  # q, k, v of layer 1 under the layer-0 calibration
    a, visible = _attention64(lm, q, k, mask)
    rm = _recv_mean64(a, visible, mask)[:, 2]
    _, hidden = sink_members(rm, tau=0.1, min_queries=1)
    ah = a[:, 2]
    s_mask = hidden[:, None, :] & visible[:, 0]
    m = (ah * s_mask).sum(-1, keepdim=True)
    other = ah * ~s_mask
    expected_a = torch.where(s_mask, 0.4 * ah, other + other / (1 - m) * 0.6 * m)
    group = lm.arch.n_heads // lm.arch.n_kv_heads
    real = _real_rows(mask)
    assert torch.allclose(z[:, 2][real], (expected_a @ v[:, 2 // group])[real], atol=2e-5)


@pytest.mark.parametrize("gamma", [0.3, 2.5])
def test_zerotune_equals_materialised_definition(tiny_lm, gamma):
    lm = tiny_lm
    layer, heads = 2, [0, lm.arch.n_heads - 1]
    ids, mask = _batch()
    q, k, v, z0 = _run(lm, ids, mask, layer)
    a, _ = _attention64(lm, q, k, mask)
    first = mask.int().argmax(-1)  # first real token of each row
    edits = zerotune_edits(lm, [(layer, h) for h in heads], gamma, attention_mask=mask)
    _, _, _, z1 = _run(lm, ids, mask, layer, edits)
    group = lm.arch.n_heads // lm.arch.n_kv_heads
    real = _real_rows(mask)
    for h in heads:
        ah = a[:, h].clone()
        a0 = ah[torch.arange(2), :, first]  # [batch, T]: A_i0 per row
        d = (gamma - 1) * a0 + 1
        expected = ah / d[..., None]
        expected[torch.arange(2), :, first] = gamma * a0 / d
        expected_z = expected @ v[:, h // group]
        assert torch.allclose(z1[:, h][real], expected_z[real], atol=2e-5)
        assert (z1[:, h][real] - z0[:, h][real]).abs().max() > 1e-4
    untouched = [h for h in range(lm.arch.n_heads) if h not in heads]
    assert torch.allclose(z1[:, untouched][:, :, PAD:], z0[:, untouched][:, :, PAD:], atol=1e-6)


def test_zerotune_per_head_gamma_and_identity(tiny_lm):
    lm = tiny_lm
    ids, mask = _batch()
    _, _, _, z0 = _run(lm, ids, mask, 0)
    _, _, _, z1 = _run(lm, ids, mask, 0, zerotune_edits(lm, [(0, 0), (0, 1)], [1.0, 1.0], attention_mask=mask))
    assert torch.allclose(z0[:, :, PAD:], z1[:, :, PAD:], atol=1e-6)
    edits = zerotune_edits(lm, [(0, 0), (0, 1)], [0.5, 3.0], attention_mask=mask)
    assert [e.bias for e in edits] == pytest.approx([math.log(0.5), math.log(3.0)])


def test_bad_specs_raise(tiny_lm):
    lm = tiny_lm
    with pytest.raises(InterpError, match="out of range"):
        act_edits(lm, [(lm.arch.n_layers, 0)])
    with pytest.raises(InterpError, match="out of range"):
        zerotune_edits(lm, [(0, lm.arch.n_heads)], 2.0)
    with pytest.raises(InterpError, match="gamma"):
        zerotune_edits(lm, [(0, 0)], 0.0)
    with pytest.raises(InterpError, match="one per head"):
        zerotune_edits(lm, [(0, 0), (0, 1)], [2.0])
    with pytest.raises(InterpError, match="beta"):
        act_edits(lm, [(0, 0)], beta=1.5)
    with pytest.raises(InterpError, match="LAYER.HEAD"):  # a user's process: no test-time type checker
        unchecked(act_edits)(lm, [(0,)])


def test_computed_key_bias_sees_the_heads_live_q_and_k(tiny_lm):
    """`ComputedKeyBias`, the generic edit ACT is built on: the rule gets the head's q and its kv
    head's k (float32, post-RoPE, as captured) and its keys and bias act like a fixed `KeyBias`."""
    from interp.hooks import ComputedKeyBias, key_bias

    lm = tiny_lm
    layer, head = 1, lm.arch.n_heads - 1  # the last query head reads the last kv head
    ids, mask = _batch()
    q, k, _, _ = _run(lm, ids, mask, layer)
    seen, keys = [], torch.zeros(2, T, dtype=torch.bool)
    keys[:, PAD + 1] = True

    def rule(qh, kh):
        seen.append((qh, kh))
        return keys, torch.full((2, T), 1.5)

    _, _, _, z1 = _run(lm, ids, mask, layer, [ComputedKeyBias(layer, head, rule)])
    _, _, _, z2 = _run(lm, ids, mask, layer, [key_bias(layer, head, keys, 1.5)])
    (qh, kh), group = seen[0], lm.arch.n_heads // lm.arch.n_kv_heads
    assert qh.dtype == kh.dtype == torch.float32 and qh.shape[1] == kh.shape[1] == 1
    assert torch.allclose(qh[:, 0].double(), q[:, head], atol=1e-6)
    assert torch.allclose(kh[:, 0].double(), k[:, head // group], atol=1e-6)
    real = _real_rows(mask)
    assert torch.allclose(z1[:, head][real], z2[:, head][real], atol=1e-6)
    assert torch.allclose(z1[:, :, PAD:], z2[:, :, PAD:], atol=1e-6)
