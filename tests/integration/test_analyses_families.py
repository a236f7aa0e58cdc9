"""The analyses see each layer's own softmax: on windowed, soft-capped and sink-logit families
their statistics equal the ones derived from the model's own eager attention probabilities
(the bug this guards against: analyses passing only `scale`, which silently ignored windows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from families import SEQ, VOCAB, build

from interp.analyses.preplan import PreplanConfig
from interp.analyses.sinks import SinkConfig
from interp.experiments.preplan import collect_statistics
from interp.experiments.sinks import scan_window
from interp.models import wrap_model

WINDOWED = ["mistral", "gemma2", "gpt_oss", "qwen2"]


def _setup(family):
    model = build(family)
    lm = wrap_model(model, None, name=family)
    twin = build(family, "eager")
    twin.load_state_dict(model.state_dict())
    ids = torch.randint(0, VOCAB, (1, SEQ), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        probs = [p[0].double() for p in twin(ids, output_attentions=True).attentions]  # [head, q, k]
    return lm, ids, probs


@pytest.mark.parametrize("family", WINDOWED)
def test_sink_scan_alpha_equals_the_models_own_attention(family):
    lm, ids, probs = _setup(family)
    record = scan_window(lm, ids, SinkConfig(length=SEQ, min_queries=1, backend="torch"), layers=[0, 1, 2])
    alpha0 = np.array(record["alpha0"])  # [layer, head]
    # alpha_0 averages A_i0 over the queries that may see position 0: the first min(SEQ, W) of a windowed layer
    seen = [min(SEQ, lm.attention_kwargs(layer)["sliding_window"] or SEQ) for layer in range(len(probs))]
    expected = np.stack([p[:, :n, 0].mean(-1).numpy() for p, n in zip(probs, seen)])
    assert np.abs(alpha0 - expected).max() < 1e-5
    first = np.array(record["first_token_mass"])
    assert first.shape == alpha0.shape and np.isfinite(first).all()


@pytest.mark.parametrize("family", WINDOWED)
def test_preplan_distances_equal_the_models_own_attention(family):
    lm, ids, probs = _setup(family)
    n_prompt = 6
    stats = collect_statistics(lm, ids, n_prompt, [0, 1, 2], PreplanConfig(layers=(0, 1, 2), backend="torch"))
    i = torch.arange(SEQ, dtype=torch.float64)
    lag = (i[:, None] - i[None, :]).clamp(min=0)
    for n, p in enumerate(probs):
        dist = (p * lag).sum(-1)[:, n_prompt:].numpy()  # [head, resp]
        waad = (p * lag.clamp(max=10)).sum(-1)[:, n_prompt:].numpy()
        assert np.abs(stats.dist[n] - dist).max() < 1e-5, (family, n)
        assert np.abs(stats.waad[n] - waad).max() < 1e-5, (family, n)
