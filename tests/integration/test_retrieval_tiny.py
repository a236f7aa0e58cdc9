"""Retrieval scoring end to end on tiny random Llamas (MHA and GQA) with the embedded tokenizer.

Checks: files written and complete, a re-run resumes without recomputing, an interrupted run
loses no finished sample, decode-mode events equal the paper's eager loop, shared-prefix reuse
gives the traces of one full pass per sample (also with a sliding window and under masking
edits) while computing fewer positions, and the CLI turns bad input into exit code 2 without
touching what an earlier run wrote.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import interp.experiments.retrieval.runner as retrieval  # the runner's names, patched below
from interp.analyses.retrieval import RetrievalConfig, score_trace
from interp.experiments import Store
from interp.experiments.retrieval import (
    EXPERIMENT,
    decode_answers,
    decode_trace,
    decode_traces,
    needle_recall,
    prepare_samples,
    teacher_answers,
    teacher_trace,
    teacher_traces,
)
from interp.hooks.prefix import prefix_tree, tree_cost


def _load_paper_loop():
    """Wu et al.'s eager loop, the reference beside the benchmark (benchmarks/retrieval_paper_loop.py), loaded by path."""
    path = Path(__file__).parents[2] / "benchmarks" / "retrieval_paper_loop.py"
    spec = importlib.util.spec_from_file_location("retrieval_paper_loop", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.paper_decode_trace


paper_decode_trace = _load_paper_loop()


def score_retrieval(lm, config, out, *, progress=False):
    """What `interp score retrieval` does with a loaded model: run into the folder ``out``, then write it."""
    store = Store(out, progress=progress)
    result = EXPERIMENT.run(lm, config, store)
    store.save(EXPERIMENT, result, lm, config, time.time())
    return result


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from interp.models import _embedded_weights_dir

    return AutoTokenizer.from_pretrained(_embedded_weights_dir())


def _config(tokenizer, n_heads, n_kv, attn="sdpa", init=1.0):
    from transformers import LlamaConfig

    # initializer_range 1.0 makes attention peaked, so top-1 is well separated (no near-ties)
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=8 * n_heads,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        head_dim=8,
        max_position_embeddings=1024,
        initializer_range=init,
        attn_implementation=attn,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _tiny_pair(tokenizer, n_heads=6, n_kv=2):
    """(wrapped SDPA model, eager copy with the same weights)."""
    from transformers import LlamaForCausalLM

    from interp.models import wrap_model

    torch.manual_seed(0)
    sdpa = LlamaForCausalLM(_config(tokenizer, n_heads, n_kv)).eval()
    eager = LlamaForCausalLM(_config(tokenizer, n_heads, n_kv, attn="eager")).eval()
    eager.load_state_dict(sdpa.state_dict())
    return wrap_model(sdpa, tokenizer, name=f"tiny-{n_heads}-{n_kv}"), eager


SMALL = RetrievalConfig(lengths=(160,), depths=(0.0, 1.0), min_recall=0.0, mask_top=2, seeds=(0, 1))


def test_end_to_end_files_and_resume(tokenizer, tmp_path, monkeypatch):
    lm, _ = _tiny_pair(tokenizer)
    out = tmp_path / "run"
    first = score_retrieval(lm, SMALL, out, progress=False)
    n = 1 * 2 * 3  # lengths x depths x needles
    heads = pd.read_csv(out / "heads.csv")
    samples = pd.read_csv(out / "samples.csv")
    info = json.loads((out / "run.json").read_text())
    assert len(heads) == 2 * 6 and {"layer", "head", "score", "n_samples"} <= set(heads.columns)
    assert (heads["n_samples"] == n).all()  # min_recall 0: every sample counts
    assert len(samples) == n and {"length", "depth", "needle_id", "recall", "counted"} <= set(samples.columns)
    assert info["model"] == "tiny-6-2" and info["summary"]["n_samples_total"] == n
    assert (
        info["summary"]["masking"]["k_top"] == 2
        and len(info["summary"]["masking"]["recall_random_masked_per_seed"]) == 2
    )
    assert [m["condition"] for m in info["masking"]] == ["unmasked", "top", "random", "random"]
    assert (
        info["timings"]["samples_computed"] == n
        and info["settings"]["haystack"] == "Python standard-library docstrings"
    )
    assert first.timings["samples_computed"] == n and first.masking is not None
    assert set(first.masking.top).isdisjoint(h for draw in first.masking.random for h in draw)
    # the per-head score is the mean of the per-sample scores
    assert heads["score"].to_numpy() == pytest.approx(first.sample_scores.mean(axis=0).ravel())

    # re-run: nothing is recomputed (scoring and masking both come from the logs)
    def boom(*a, **k):
        raise AssertionError("a finished sample was recomputed")

    for name in (
        "teacher_trace",
        "teacher_traces",
        "decode_trace",
        "decode_traces",
        "teacher_answers",
        "decode_answers",
        "needle_recall",
    ):
        monkeypatch.setattr(retrieval, name, boom)
    again = score_retrieval(lm, SMALL, out, progress=False)
    assert again.timings["samples_resumed"] == n
    assert (again.scores == first.scores).all()
    assert again.masking.recall_top == first.masking.recall_top


def test_interrupt_loses_no_finished_sample(tokenizer, tmp_path, monkeypatch):
    lm, _ = _tiny_pair(tokenizer, 4, 4)
    config = RetrievalConfig(lengths=(160,), depths=(0.2, 0.8), min_recall=0.0, mask=False)
    reference = score_retrieval(lm, config, tmp_path / "ref", progress=False)
    real = retrieval.sample_record  # called as each sample's trace completes, before it is logged
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(retrieval, "sample_record", flaky)
    with pytest.raises(KeyboardInterrupt):
        score_retrieval(lm, config, tmp_path / "cut", progress=False)
    lines = (tmp_path / "cut" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 2  # settings line + the two finished samples
    assert not (tmp_path / "cut" / "heads.csv").exists()  # never a partial table
    monkeypatch.setattr(retrieval, "sample_record", real)
    resumed = score_retrieval(lm, config, tmp_path / "cut", progress=False)
    assert resumed.timings["samples_resumed"] == 2 and resumed.timings["samples_computed"] == 4
    assert (resumed.scores == reference.scores).all()


def test_decode_mode_events_equal_the_papers_eager_loop(tokenizer):
    lm, eager = _tiny_pair(tokenizer)
    samples, _ = prepare_samples(lm, RetrievalConfig(lengths=(200,), depths=(0.5,)))
    for sample in samples[:2]:
        ours = decode_trace(lm, sample, max_new_tokens=12)
        paper = paper_decode_trace(eager, tokenizer, sample, max_new_tokens=12)
        assert torch.equal(ours.emitted, paper.emitted)
        assert torch.equal(ours.top1, paper.top1)
        assert torch.equal(ours.positions, paper.positions)
        assert torch.equal(score_trace(ours, sample)[0], score_trace(paper, sample)[0])
    # the float64 reference backend agrees with the streaming one on the teacher rows
    t_ref = teacher_trace(lm, samples[0], backend="reference")
    t_torch = teacher_trace(lm, samples[0], backend="torch")
    assert torch.equal(t_ref.top1, t_torch.top1) and torch.equal(t_ref.emitted, t_torch.emitted)


def _mistral(tokenizer, window):
    from transformers import MistralConfig, MistralForCausalLM

    from interp.models import wrap_model

    torch.manual_seed(1)
    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=1024,
        initializer_range=1.0,
        sliding_window=window,
        attn_implementation="sdpa",
    )
    return wrap_model(MistralForCausalLM(config).eval(), tokenizer, name="tiny-mistral")


def _fed_tokens(lm):
    """Counter of real token positions fed to the model (embedding inputs), for checking reuse."""
    fed = {"n": 0}
    handle = lm.hf_model.get_input_embeddings().register_forward_pre_hook(
        lambda mod, args: fed.__setitem__("n", fed["n"] + args[0].numel())
    )
    return fed, handle


@pytest.fixture(scope="module", params=["gqa", "mha", "sliding"])
def grid(request, tokenizer):
    """(model name, lm, samples, one full-pass trace per sample) on a small grid."""
    if request.param == "sliding":
        lm = _mistral(tokenizer, window=24)  # far shorter than the prompts: the window is active
        assert {lm.arch.layer_attention(layer).sliding_window for layer in range(2)} == {24}
    else:
        lm, _ = _tiny_pair(tokenizer, *((6, 2) if request.param == "gqa" else (4, 4)))
    samples, _ = prepare_samples(lm, RetrievalConfig(lengths=(160, 240), depths=(0.0, 0.5, 1.0)))
    return request.param, lm, samples, [teacher_trace(lm, s) for s in samples]


@pytest.mark.parametrize("batch_size,chunk_size", [(1, 2048), (3, 2048), (1, 37), (3, 37)])
def test_shared_prefix_traces_equal_one_full_pass_per_sample(grid, batch_size, chunk_size):
    name, lm, samples, alone = grid
    fed, handle = _fed_tokens(lm)
    try:
        shared = teacher_traces(lm, samples, batch_size=batch_size, chunk_size=chunk_size)
    finally:
        handle.remove()
    cost = tree_cost(prefix_tree([s.input_ids for s in samples]))
    total = sum(len(s.input_ids) for s in samples)
    assert cost < 0.8 * total  # the grid shares a good part of its positions ...
    if batch_size == 1:
        assert fed["n"] == cost  # ... and the walk feeds each shared position once
    else:
        assert cost <= fed["n"] < total  # padding of batched leaves adds some, reuse still saves
    for sample, got, one in zip(samples, shared, alone):
        assert torch.equal(got.positions, one.positions)
        assert torch.equal(got.tokens, one.tokens) and torch.equal(got.reference, one.reference)
        assert torch.equal(got.emitted, one.emitted), (name, sample.key)
        assert torch.equal(got.top1, one.top1), (
            f"{name} {sample.key}: {(got.top1 != one.top1).sum()} top-1 cells differ"
        )
        assert torch.equal(score_trace(got, sample)[1], score_trace(one, sample)[1])


def test_shared_prefix_under_masking_edits_and_end_to_end(tokenizer, tmp_path):
    from interp.hooks import uniform_attention

    lm, _ = _tiny_pair(tokenizer)
    config = RetrievalConfig(lengths=(160, 200), depths=(0.1, 0.9), min_recall=0.0, mask_top=2, seeds=(0,))
    samples, _ = prepare_samples(lm, config)
    edits = [uniform_attention(1, 0), uniform_attention(0, 3)]
    answers = teacher_answers(lm, samples, edits=edits, batch_size=2)
    unmasked = teacher_answers(lm, samples)
    for sample, got in zip(samples, answers):
        recall, text = needle_recall(lm, sample, config, edits)
        assert lm.tokenizer.decode(got) == text
    assert answers != unmasked  # the edits reached the shared prefix and changed the answers
    shared = score_retrieval(lm, config, tmp_path / "shared", progress=False)
    alone = score_retrieval(lm, replace(config, share_prefix=False), tmp_path / "alone", progress=False)
    assert np.array_equal(shared.sample_scores, alone.sample_scores)
    assert [s.recall for s in shared.samples] == [s.recall for s in alone.samples]
    assert shared.masking.per_sample == alone.masking.per_sample


def test_shared_prefill_decode_equals_the_loop_per_sample(tokenizer):
    from interp.hooks import uniform_attention

    lm, eager = _tiny_pair(tokenizer)
    samples, _ = prepare_samples(lm, RetrievalConfig(lengths=(160, 200), depths=(0.0, 0.5)))
    fed, handle = _fed_tokens(lm)
    try:
        shared = decode_traces(lm, samples, max_new_tokens=6)
    finally:
        handle.remove()
    steps = sum(len(t.emitted) for t in shared)
    assert fed["n"] < sum(s.n_prompt - 1 for s in samples)  # the prefills were shared
    assert fed["n"] == tree_cost(prefix_tree([s.prompt_ids[:-1] for s in samples])) + steps
    for sample, got in zip(samples, shared):
        alone = decode_trace(lm, sample, max_new_tokens=6)
        paper = paper_decode_trace(eager, tokenizer, sample, max_new_tokens=6)
        for other in (alone, paper):
            assert torch.equal(got.emitted, other.emitted) and torch.equal(got.top1, other.top1), sample.key
            assert torch.equal(got.positions, other.positions) and got.stopped == other.stopped
    config = RetrievalConfig(mode="decode", max_new_tokens=6)
    edits = [uniform_attention(1, 2)]
    answers = decode_answers(lm, samples, max_new_tokens=6, edits=edits)
    for sample, got in zip(samples, answers):
        assert lm.tokenizer.decode(got) == needle_recall(lm, sample, config, edits)[1]


def test_decode_mode_runs_end_to_end(tokenizer, tmp_path):
    lm, _ = _tiny_pair(tokenizer, 4, 2)
    config = RetrievalConfig(
        lengths=(160,), depths=(0.5,), mode="decode", max_new_tokens=6, min_recall=0.0, mask_top=1, seeds=(3,)
    )
    result = score_retrieval(lm, config, tmp_path, progress=False)
    assert len(result.samples) == 3 and result.n_samples == 3
    assert result.masking is not None and result.masking.seeds == (3,)
    samples, _ = prepare_samples(lm, config)
    by_key = {s.key: s for s in samples}
    for record in result.samples:  # the recorded answer is a plain greedy decode (no kernel), scored by ROUGE-1
        recall, answer = needle_recall(lm, by_key[record.key], config)
        assert record.answer == answer and record.recall == pytest.approx(recall)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tokenizer, tmp_path_factory):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-model")
    LlamaForCausalLM(_config(tokenizer, 4, 2)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _cli(monkeypatch, *args) -> int:
    from interp.cli import main

    monkeypatch.setattr(sys, "argv", ["interp", "score", "retrieval", *map(str, args)])
    try:
        main()
    except SystemExit as exit:
        return int(exit.code or 0)
    return 0


def test_cli_writes_everything_and_rejects_bad_input(tiny_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    base = [
        "--model",
        tiny_dir,
        "--lengths",
        "160",
        "--depths",
        "0.5",
        "--min-recall",
        "0",
        "--mask-top",
        "1",
        "--seed",
        "0",
        "--seed",
        "1",
        "--out",
        out,
        "--no-progress",
    ]
    assert _cli(monkeypatch, *base) == 0
    for name in ("heads.csv", "samples.csv", "run.json", "retrieval_heads.html", "samples.jsonl"):
        assert (out / name).is_file(), name
    html = (out / "retrieval_heads.html").read_text()
    assert "layer 1 head 3" in html  # hover text of the heatmap
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()

    bad_needles = tmp_path / "bad.jsonl"
    bad_needles.write_text(json.dumps({"needle": "Bob owns a kite.", "question": "What?", "answer": "a dog"}) + "\n")
    short_hay = tmp_path / "short.txt"
    short_hay.write_text("Only one short sentence here.")
    cases = [
        (["--needles", bad_needles], "does not occur verbatim"),
        (["--needles", tmp_path / "missing.jsonl"], "cannot read needles file"),
        (["--haystack", tmp_path / "missing.txt"], "cannot read haystack file"),
        (["--haystack", short_hay], "haystack"),
        (["--lengths", "5000"], "context of 1024"),
        (["--mask-top", "1000"], "larger than the model's 8 heads"),
        (["--depths", "0.5,2"], "depths must lie in"),
    ]
    for extra, message in cases:
        args = list(base)
        for flag in extra[::2]:
            if flag in args:  # replace the base value of the flag
                i = args.index(flag)
                del args[i : i + 2]
        code = _cli(monkeypatch, *args, *extra)
        err = capsys.readouterr().err
        assert code == 2, (extra, err)
        assert message in " ".join(err.split()), (extra, err)
        after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
        assert after == before, f"{extra} changed the output folder"
