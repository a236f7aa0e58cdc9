"""Gemma 3 270M base (``interp[gemma3]``), the second embedded model: a windowed family with BOS.

Expectations come from outside interp: the architecture from the Gemma 3 report / model card (18
layers, local:global 5:1 with a 512-token window, 4 query heads on 1 KV head of 256, 32k
context, BOS id 2); token ids and the loss from transformers' own tokenizer and model; the
window from its definition (a key more than 511 positions back is invisible to a local layer);
the BOS sink from the attention-sink literature (Gemma puts its sink on BOS: mass on the first
token is high with BOS and vanishes when the text starts with an ordinary word).

One session-scoped model (tests/conftest.py:gemma3); the conversion (~80 s) happens once per
cache. Measured values quoted in comments are regression guards read off one run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

TEXT = (
    "The committee met on Tuesday to review the budget. After a long discussion, the members agreed to "
    "fund the new library, the park renovation and two additional bus routes for the northern districts."
)
GLOBAL_LAYERS = (5, 11, 17)


def test_loading_facts(gemma3):
    from interp._embedded import _GEMMA3_270M, embedded_weights_dir

    lm = gemma3
    arch = lm.arch
    assert (arch.model_type, arch.n_layers, arch.n_heads, arch.n_kv_heads, arch.d_head, arch.n_ctx) == (
        "gemma3_text",
        18,
        4,
        1,
        256,
        32768,
    )
    assert arch.kv_map == [0, 0, 0, 0]
    windows = [arch.layer_attention(layer).sliding_window for layer in range(arch.n_layers)]
    assert windows == [None if layer in GLOBAL_LAYERS else 512 for layer in range(18)]
    assert all(lm.attention_kwargs(layer)["sliding_window"] == windows[layer] for layer in range(18))
    assert lm.prepends_bos and lm.bos_id == 2
    from interp.runs import run_info

    assert run_info(lm)["arch"]["sliding_window"] == windows  # run.json says which layers are windowed
    # The Gemma terms of use travel with the converted weights.
    assert (embedded_weights_dir(_GEMMA3_270M) / "GEMMA_TERMS.html").is_file()


def test_ids_are_the_tokenizers_own(gemma3):
    lm = gemma3
    expected = lm.tokenizer(TEXT).input_ids  # transformers' call, special tokens as the tokenizer adds them
    assert expected[0] == 2
    assert lm.encode(TEXT)[0].tolist() == expected
    ids, mask = lm.encode_batch([TEXT, "A short one."])
    assert ids[0].tolist() == expected and mask[0].all()
    assert ids[1, mask[1].bool()].tolist() == lm.tokenizer("A short one.").input_ids


def test_loss_equals_transformers(gemma3):
    from interp.analyses.influence import text_loss

    lm = gemma3
    ids = lm.encode(TEXT)
    with torch.no_grad():
        ours = text_loss(lm.forward(ids), ids)
        theirs = float(lm.hf_model(input_ids=ids, labels=ids).loss)
    assert ours == pytest.approx(theirs, abs=1e-4)  # 3.26090 vs 3.26088 measured
    assert 1.0 < ours < 6.0  # a trained model on plain English, not a random one (ln 262144 = 12.5)


def _first_token_mass(lm, ids) -> np.ndarray:
    """[layer] head-mean first-token mass of the sinks experiment's per-window reduction."""
    from interp.analyses.sinks import SinkConfig
    from interp.experiments.sinks import scan_window

    record = scan_window(lm, ids, SinkConfig(length=ids.shape[1]), list(range(lm.arch.n_layers)))
    return np.asarray(record["first_token_mass"]).mean(axis=1)


@pytest.fixture(scope="module")
def sink_text_ids(gemma3):
    from interp.datasets.texts import default_texts

    return gemma3.tokens("\n\n".join(default_texts()))[:160]


def test_bos_is_the_sink_of_the_global_layers(gemma3, sink_text_ids):
    lm = gemma3
    with_bos = _first_token_mass(lm, torch.tensor([[lm.bos_id, *sink_text_ids[:159]]]))
    without = _first_token_mass(lm, torch.tensor([sink_text_ids]))
    # Regression guards (one run, 256 tokens; 160 here): global layers 0.64 / 0.53 / 0.54 with BOS; every layer <= 0.011 without.
    assert all(with_bos[layer] > 0.4 for layer in GLOBAL_LAYERS), with_bos.round(3)
    assert (without < 0.05).all(), without.round(3)


def test_retrieval_heads_only_in_global_layers_past_the_window(gemma3):
    """A needle more than 512 tokens before every response token is out of reach of the 15
    local layers: their retrieval scores are exactly 0; a global layer retrieves it."""
    from interp.analyses.retrieval import RetrievalConfig, score_trace
    from interp.experiments.retrieval import prepare_samples, teacher_trace

    lm = gemma3
    samples, _ = prepare_samples(lm, RetrievalConfig(lengths=(720,), depths=(0.0,)))
    sample = next(s for s in samples if s.needle_id == "soup")
    assert len(sample.prompt_ids) - sample.needle_span[1] > 512  # the window cannot reach back to the needle
    _, scores = score_trace(teacher_trace(lm, sample), sample)
    scores = np.asarray(scores)
    local = [layer for layer in range(lm.arch.n_layers) if layer not in GLOBAL_LAYERS]
    assert (scores[local] == 0).all()
    assert (scores[list(GLOBAL_LAYERS)] > 0.1).any()  # the paper's threshold; 1.0 at layer 11 measured (1024 tokens)


# --------------------------------------------------------------------------------------------
# One lean run per analysis (the report's quick sizes unless the window needs more), each
# checked against what the architecture and the papers say, not against the code's own numbers.
# --------------------------------------------------------------------------------------------

WINDOW = 512
LONG = 640  # past the window: rows 512.. of a local layer no longer see BOS


def _run(lm, name, config):
    from interp.experiments import Store, registry

    return registry()[name].run(lm, config, Store())


def _check(result, name):
    from interp.analyses.checks import check_all

    found = {c.name: c for c in check_all(result)}
    assert name in found, sorted(found)
    return found[name]


@pytest.fixture(scope="module")
def long_sinks(gemma3):
    from interp.analyses.sinks import SinkConfig

    return _run(gemma3, "sinks", SinkConfig(length=LONG, pack=True, max_texts=1))


def test_sinks_per_layer_kind_past_the_window(long_sinks):
    """Past 512 tokens the 15 local layers are windowed, the 3 global ones global; position 0 is BOS;
    every windowed layer is judged over the 511 rows that see it (not 0% for rows that cannot)."""
    r = long_sinks
    kinds = r.layer_kinds()
    assert kinds == tuple("global" if layer in GLOBAL_LAYERS else f"windowed W={WINDOW}" for layer in range(18))
    assert _check(r, "position_0_is_bos").passed
    rows = _check(r, "rows_seeing_position_0")
    assert rows.passed and rows.value == WINDOW - 1
    rates = r.kind_sink_rates()
    # Gemma sinks on BOS in its global layers (attention-sink literature; test_bos_is_the_sink... above);
    # the windowed layers see BOS from their first 511 rows, where a rate of 0 would mean rows out of sight counted.
    assert rates["global"] > 50.0, rates
    assert rates[f"windowed W={WINDOW}"] > 0.0, rates
    table = r.layer_sink_rates()
    assert table["window"].isna().tolist() == [layer in GLOBAL_LAYERS for layer in range(18)]


@pytest.fixture(scope="module")
def ioi(gemma3):
    from interp.analyses.patching import PatchConfig

    return _run(gemma3, "patching", PatchConfig(task="ioi", n=4, method="attribution"))


def test_patching_ioi_baseline_is_the_models_own(gemma3, ioi):
    """The clean accuracy the checks rest on equals transformers' own logits on the same prompts."""
    from interp.datasets import make_task

    lm = gemma3
    task = make_task(lm.tokenizer, "ioi", n=4, seed=0, bos=lm.bos_id)
    assert (task.clean[:, 0] == lm.bos_id).all()
    with torch.no_grad():
        logits = lm.hf_model(input_ids=task.clean).logits[:, -1].double()
    rows = torch.arange(len(task.correct))
    accuracy = float((logits[rows, task.correct] > logits[rows, task.wrong]).double().mean())
    check = _check(ioi, "clean_accuracy")
    assert check.value == pytest.approx(accuracy)
    assert check.passed == (accuracy >= 0.8)
    assert _check(ioi, "clean_minus_corrupt_logit_diff") is not None


@pytest.fixture(scope="module")
def preplan(gemma3):
    from interp.experiments import registry

    return _run(gemma3, "preplan", registry()["preplan"].report.config(True, {}))


def test_preplan_layers_see_the_whole_text(preplan):
    """Head spans (dist) compare heads only when each layer sees the whole text: every chosen
    layer is global or its 512 window covers prompt + response; the check says so."""
    run = preplan
    longest = max(r.n_prompt + len(r.tokens) for r in run.results)
    layers = run.results[0].layers
    assert len(run.windows) == len(layers)
    for layer, w in zip(layers, run.windows):
        assert w == (None if layer in GLOBAL_LAYERS else WINDOW)
    check = _check(run, "windowed_layers_shorter_than_text")
    assert check.passed == all(w is None or w >= longest for w in run.windows)


@pytest.fixture(scope="module")
def heads(gemma3):
    from interp.analyses.heads import HeadConfig

    return _run(gemma3, "heads", HeadConfig(n_seqs=2, length=24))


def test_head_detectors_skip_bos_and_find_induction_heads(heads):
    """BOS + 24 random tokens said twice: 47 previous-token rows per sequence (row 1's previous token
    is BOS, the sink, not content), 24 duplicate and 24 induction rows; a trained model has
    induction heads (Olsson et al. 2022) scoring well above the 1/t of uniform attention."""
    r = heads
    assert r.n_rows.tolist() == [[2 * 47, 2 * 24, 2 * 24]]
    assert _check(r, f"expected_keys_in_window_{WINDOW}").passed  # 49 tokens: every key in sight
    (_, _, best), *_ = r.top("induction", 1)
    assert best > 0.3  # 0.81 (L5H1) measured: regression guard with a wide margin


def _chance_best(n_items: int, n_options: int, n_heads: int) -> float:
    """The 95% quantile of the best accuracy of n_heads uniform guessers on n_items items (binomial)."""
    from math import comb

    p = 1.0 / n_options
    cdf = np.cumsum([comb(n_items, k) * p**k * (1 - p) ** (n_items - k) for k in range(n_items + 1)])
    best_cdf = cdf**n_heads  # P(best <= k)
    return next(k for k in range(n_items + 1) if best_cdf[k] >= 0.95) / n_items


@pytest.mark.parametrize("name", ["select_copy", "qr_heads"])
def test_head_rankings_on_few_items_are_flagged(gemma3, name):
    """The quick sizes (4 questions of 4 options; 2 samples of 4 documents) cannot beat 72 guessing
    heads: the best guesser reaches 100% more often than 5% of the time, so the check cannot pass:
    it is "not tested" (too few items to decide, issue 30) and the finding opens with that."""
    from interp.experiments import finding, registry

    exp = registry()[name]
    result = _run(gemma3, name, exp.report.config(True, {}))
    n_items, n_options = (4, 4) if name == "select_copy" else (2, 4)
    assert _chance_best(n_items, n_options, 72) == 1.0
    check = _check(result, "best_head_above_chance")
    assert not check.passed
    assert check.outcome == "not tested"
    assert finding(exp, result).startswith("NOT TESTED: best_head_above_chance")


def test_influence_of_global_heads_raises_the_loss(gemma3):
    """Making attention uniform in heads of the global layers (the retrieval heads above) raises
    the loss of ordinary text: AttentionInfluence > 0 (Hua et al. 2025)."""
    from interp.analyses.influence import InfluenceConfig

    heads = ((11, 2), (5, 1))
    result = _run(gemma3, "influence", InfluenceConfig(heads=heads, max_texts=1, max_tokens=48))
    assert _check(result, "masking_raises_loss").passed


def test_atlas_windowed_layers_have_no_mass_past_their_window(gemma3):
    """At 640 tokens with the policy window at 512, a head of a local layer cannot see past 512
    tokens: its distant mass is 0 and it is never a 'global' head; the global layers reach back."""
    from interp.analyses.atlas import AtlasConfig

    cfg = AtlasConfig(length=LONG, windows=(WINDOW,), max_texts=1, causal_texts=0, needles=0)
    result = _run(gemma3, "atlas", cfg)
    distant = result.full()[f"distant_{WINDOW}"]  # [layer, head]
    kinds = result.kinds
    local = [layer for layer in range(18) if layer not in GLOBAL_LAYERS]
    assert np.abs(distant[local]).max() < 1e-6  # 0 up to float32 rounding (a complement of row sums: +-2e-8 measured)
    assert not (kinds[local] == "global").any()
    assert (distant[list(GLOBAL_LAYERS)] > 0).any()


def test_zerotuning_runs_and_gamma_one_changes_nothing(gemma3, tmp_path):
    """ZeroTuning scales the attention on key 0 (BOS) by gamma: gamma = 1 is the identity, so the
    held-out scores after equal those before; 4 held-out items fail the held-out-size check."""
    import json
    from importlib import resources

    from interp.analyses.calibration import CalibrationConfig

    lines = (resources.files("interp") / "data/tasks/sentiment.jsonl").read_text().splitlines()
    head, rows = lines[0], [json.loads(x) for x in lines[1:]]
    keep = [r for r in rows if r["split"] == "calibration"][:2] + [r for r in rows if r["split"] == "heldout"][:4]
    path = tmp_path / "small.jsonl"
    path.write_text("\n".join([head] + [json.dumps(r) for r in keep]) + "\n", encoding="utf-8")
    result = _run(gemma3, "calibrate-zerotune", CalibrationConfig(method="zerotune", task=str(path), gamma=1.0))
    assert np.allclose(result.logp_after, result.logp_before, atol=1e-5)
    assert (np.asarray(result.after) == np.asarray(result.before)).all()
    assert not _check(result, "heldout_items").passed
