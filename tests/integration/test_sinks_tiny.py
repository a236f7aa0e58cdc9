"""The streaming sink scan on tiny random Llamas equals a float64 materialised computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.analyses.sinks import SinkConfig
from interp.errors import InterpError
from interp.experiments.sinks import run, scan_window
from interp.hooks import capture


def test_scan_window_matches_float64(tiny_lm):
    lm = tiny_lm
    t = 20
    ids = torch.randint(0, 97, (1, t), generator=torch.Generator().manual_seed(3))
    with capture(lm, keep=("q", "k", "v")) as cap:
        lm.forward(ids)
    config = SinkConfig(length=t, min_queries=3, tau=0.1, eps=0.15)
    layers = list(range(lm.arch.n_layers))
    rec = scan_window(lm, ids, config, layers)
    group = lm.arch.n_heads // lm.arch.n_kv_heads
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    expected_hits, expected_count = [], np.zeros(t, dtype=int)
    for layer in layers:
        q, k = cap["q", layer][0].double(), cap["k", layer][0].double()
        s = q @ k.repeat_interleave(group, 0).transpose(-1, -2) * lm.arch.scale
        a = torch.softmax(s.masked_fill(~causal, float("-inf")), -1)  # [head, T, T]
        ftm = a[:, 1:, 0].mean(-1)
        rm = a.sum(1) / torch.arange(t, 0, -1, dtype=torch.float64)
        assert np.allclose(rec["first_token_mass"][layer], ftm.numpy(), atol=1e-5)
        # Value-weighted: u_ij = a_ij ||W_O^h v_j||, W_O^h = head h's columns of o_proj.weight.
        o_proj = lm.adapter.attention(lm, layer).o_proj.weight.detach().double()
        v = cap["v", layer][0].double().repeat_interleave(group, 0)  # [head, T, d_head]
        d = v.shape[-1]
        w = torch.stack([(v[h] @ o_proj[:, h * d : (h + 1) * d].T).norm(dim=-1) for h in range(lm.arch.n_heads)])
        u = a * w[:, None, :]
        weighted = (u[..., 0] / u.sum(-1))[:, 1:].mean(-1)
        assert np.allclose(rec["weighted_first_token_mass"][layer], weighted.numpy(), atol=1e-5)
        assert not np.allclose(weighted.numpy(), ftm.numpy(), atol=1e-3)  # the weighting matters
        assert np.allclose(rec["alpha0"][layer], rm[:, 0].numpy(), atol=1e-5)
        expected_count += (rm > 0.15).sum(0).numpy()
        # Yu et al.: S = {j : recv_mean_j > tau, seen by >= min_queries (3) queries}; the first
        # member of S per head is the ordinary sink, the others are hidden.
        for h in range(lm.arch.n_heads):
            members = [j for j in range(t) if rm[h, j] > 0.1 and t - j >= 3]
            expected_hits += [(layer, h, j, j != members[0]) for j in members]
    got = [(l, h, j, hid) for l, h, j, _, hid in rec["hits"]]
    assert got == expected_hits
    assert any(hid for *_, hid in got)  # the check covers hidden sinks too
    assert all(j <= t - 3 for _, _, j, _ in got)  # min_queries honoured
    assert rec["position_count"] == expected_count.tolist() and expected_count.sum() > 0


def test_scan_window_subset_of_layers_stops_early(tiny_lm):
    """With only layer 0 analysed, the pass stops after layer 0's attention: later layers and
    the [T, vocab] logits are never computed, and layer 0's numbers are those of a full pass."""
    lm = tiny_lm
    ids = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(4))
    ran = []
    layers = lm.adapter.layers(lm)
    handles = [layers[i].register_forward_pre_hook(lambda m, a, i=i: ran.append(i)) for i in range(len(layers))]
    handles.append(lm.hf_model.lm_head.register_forward_pre_hook(lambda m, a: ran.append("lm_head")))
    try:
        rec = scan_window(lm, ids, SinkConfig(length=12, min_queries=1), [0])
    finally:
        for h in handles:
            h.remove()
    assert ran == [0]
    full = scan_window(lm, ids, SinkConfig(length=12, min_queries=1), list(range(lm.arch.n_layers)))
    assert np.allclose(rec["alpha0"][0], full["alpha0"][0]) and rec["hits"] == [x for x in full["hits"] if x[0] == 0]


def test_layers_out_of_range(tiny_lm):
    with pytest.raises(InterpError, match="out of range"):
        run(tiny_lm, SinkConfig(texts=("x",), length=4, layers=(99,)))
