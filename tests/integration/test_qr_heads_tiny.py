"""QRHead document masses on tiny random Llamas equal a float64 materialised computation."""

from __future__ import annotations

import torch

from interp.experiments.qr_heads import document_mass
from interp.hooks import capture


def test_doc_mass_matches_float64(tiny_lm):
    lm = tiny_lm
    gen = torch.Generator().manual_seed(7)
    t = 40
    ids = torch.randint(0, 97, (t,), generator=gen).tolist()
    seg = [-1] * 3 + [0] * 8 + [-1] * 2 + [1] * 6 + [-1] + [2] * 9 + [-1] * 11
    rows = list(range(31, 38))
    layers = list(range(lm.arch.n_layers))
    got = document_mass(lm, ids, seg, rows, 3, layers, backend="torch")
    with capture(lm, keep=("q", "k")) as cap:
        lm.forward(torch.tensor([ids]))
    group = lm.arch.n_heads // lm.arch.n_kv_heads
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    labels = torch.tensor(seg)
    for layer in layers:
        q, k = cap["q", layer][0].double(), cap["k", layer][0].double().repeat_interleave(group, 0)
        a = torch.softmax((q @ k.transpose(-1, -2) * lm.arch.scale).masked_fill(~causal, float("-inf")), -1)
        want = torch.stack([a[:, rows][:, :, labels == c].sum(-1).mean(-1) for c in range(3)], -1)  # [head, doc]
        assert torch.allclose(got[layer], want, atol=1e-6)
    assert (got > 0.01).any()
