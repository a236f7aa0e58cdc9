"""Select-and-copy option scores on tiny random Llamas equal float64 materialised q . k and A."""

from __future__ import annotations

import torch

from interp.experiments.select_copy import option_scores
from interp.hooks import capture


def test_option_scores_match_float64(tiny_lm):
    lm = tiny_lm
    ids = torch.randint(0, 97, (1, 30), generator=torch.Generator().manual_seed(2))
    pos = [4, 11, 19, 25]
    layers = list(range(lm.arch.n_layers))
    qk, at, logits = option_scores(lm, ids, pos, layers, backend="torch")
    with capture(lm, keep=("q", "k")) as cap:
        full = lm.forward(ids)
    assert torch.allclose(logits, full[0, -1].float(), atol=1e-5)
    group = lm.arch.n_heads // lm.arch.n_kv_heads
    for layer in layers:
        q, k = cap["q", layer][0].double(), cap["k", layer][0].double().repeat_interleave(group, 0)
        raw = torch.einsum("hd,htd->ht", q[:, -1], k)  # [head, T] unscaled q_N . k_j
        a = torch.softmax(raw * lm.arch.scale, -1)  # the last row sees every key
        assert torch.allclose(qk[layer], raw[:, pos], atol=1e-5)
        assert torch.allclose(at[layer], a[:, pos], atol=1e-6)
    assert (at.sum(-1) < 1).all() and (at > 0).all()
