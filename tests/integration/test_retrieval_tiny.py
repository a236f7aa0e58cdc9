"""Retrieval scoring end to end on tiny random Llamas (MHA and GQA) with the embedded tokenizer.

Checks: files written and complete, a re-run resumes without recomputing, an interrupted run
loses no finished sample, decode-mode events equal the paper's eager loop, and the CLI turns
bad input into exit code 2 without touching what an earlier run wrote.
"""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
import torch

import interp.analyses.retrieval as retrieval
from interp.analyses.retrieval import (
    RetrievalConfig,
    decode_trace,
    paper_decode_trace,
    prepare_samples,
    score_retrieval,
    score_trace,
    teacher_trace,
)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from interp.models import _embedded_weights_dir

    return AutoTokenizer.from_pretrained(_embedded_weights_dir())


def _config(tokenizer, n_heads, n_kv, attn="sdpa", init=1.0):
    from transformers import LlamaConfig

    # initializer_range 1.0 makes attention peaked, so top-1 is well separated (no near-ties)
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=8 * n_heads, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=n_heads, num_key_value_heads=n_kv, head_dim=8, max_position_embeddings=1024,
        initializer_range=init, attn_implementation=attn, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
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
    assert info["summary"]["masking"]["k_top"] == 2 and len(info["summary"]["masking"]["recall_random_masked_per_seed"]) == 2
    assert first.timings["samples_computed"] == n and first.masking is not None
    assert set(first.masking.top).isdisjoint(h for draw in first.masking.random for h in draw)
    # the per-head score is the mean of the per-sample scores
    assert heads["score"].to_numpy() == pytest.approx(first.sample_scores.mean(axis=0).ravel())

    # re-run: nothing is recomputed (scoring and masking both come from the logs)
    def boom(*a, **k):
        raise AssertionError("a finished sample was recomputed")

    monkeypatch.setattr(retrieval, "_score_one", boom)
    monkeypatch.setattr(retrieval, "needle_recall", boom)
    again = score_retrieval(lm, SMALL, out, progress=False)
    assert again.timings["samples_resumed"] == n
    assert (again.scores == first.scores).all()
    assert again.masking.recall_top == first.masking.recall_top


def test_interrupt_loses_no_finished_sample(tokenizer, tmp_path, monkeypatch):
    lm, _ = _tiny_pair(tokenizer, 4, 4)
    config = RetrievalConfig(lengths=(160,), depths=(0.2, 0.8), min_recall=0.0, mask=False)
    reference = score_retrieval(lm, config, tmp_path / "ref", progress=False)
    real = retrieval._score_one
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(retrieval, "_score_one", flaky)
    with pytest.raises(KeyboardInterrupt):
        score_retrieval(lm, config, tmp_path / "cut", progress=False)
    lines = (tmp_path / "cut" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 2  # settings line + the two finished samples
    assert not (tmp_path / "cut" / "heads.csv").exists()  # never a partial table
    monkeypatch.setattr(retrieval, "_score_one", real)
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


def test_decode_mode_runs_end_to_end(tokenizer, tmp_path):
    lm, _ = _tiny_pair(tokenizer, 4, 2)
    config = RetrievalConfig(lengths=(160,), depths=(0.5,), mode="decode", max_new_tokens=6, min_recall=0.0, mask_top=1, seeds=(3,))
    result = score_retrieval(lm, config, tmp_path, progress=False)
    assert len(result.samples) == 3 and result.n_samples == 3
    assert result.masking is not None and result.masking.seeds == (3,)
    assert all(0.0 <= s.recall <= 1.0 for s in result.samples)


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
    base = ["--model", tiny_dir, "--lengths", "160", "--depths", "0.5", "--min-recall", "0", "--mask-top", "1",
            "--seed", "0", "--seed", "1", "--out", out, "--no-progress"]
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
                del args[i:i + 2]
        code = _cli(monkeypatch, *args, *extra)
        err = capsys.readouterr().err
        assert code == 2, (extra, err)
        assert message in " ".join(err.split()), (extra, err)
        after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
        assert after == before, f"{extra} changed the output folder"
