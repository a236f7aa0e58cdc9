"""BOS handling: every entry point tokenises as the model's tokenizer does (issue 20, task A1).

A tokenizer that adds BOS is the embedded SmolLM2 tokenizer with a ``tokenizers``
TemplateProcessing post-processor putting ``<|endoftext|>`` (id 0) first, as Llama/Gemma
tokenizers do with their ``<s>``/``<bos>``; built offline, paired with tiny random Llamas. The
plain SmolLM2 tokenizer (no BOS) must keep its ids. Checked: ids equal ``tokenizer(text)``,
``prepend_bos`` overrides, left padding, one BOS in chat prompts, the TL bridge's ids and logits,
every dataset's positions with BOS on, the loss against transformers' own, and the bad-input
error of ``--prepend-bos`` on a tokenizer without BOS.
"""

from __future__ import annotations

import sys

import pytest
import torch

from interp.errors import InterpError
from interp.models import load_model, wrap_model

BOS_TEXT, BOS = "<|endoftext|>", 0
TEXTS = ["The capital of France is Paris.", "hi", "One two three four five six seven eight nine ten."]
# a Gemma/Llama-3-style template: the template itself writes the BOS text
BOS_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _smol_tokenizer():
    from transformers import AutoTokenizer

    from interp.models import _embedded_weights_dir

    return AutoTokenizer.from_pretrained(_embedded_weights_dir())


def _bos_tokenizer():
    """The SmolLM2 tokenizer made to add ``<|endoftext|>`` first (a Llama-style BOS post-processor)."""
    from tokenizers import processors

    tok = _smol_tokenizer()
    tok.bos_token = BOS_TEXT
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TEXT} $A", pair=f"{BOS_TEXT} $A {BOS_TEXT} $B", special_tokens=[(BOS_TEXT, BOS)]
    )
    return tok


def _tiny(vocab: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def bos_tok():
    return _bos_tokenizer()


@pytest.fixture(scope="module")
def lm(bos_tok):
    return wrap_model(_tiny(len(bos_tok)), bos_tok, name="tiny-bos")


@pytest.fixture(scope="module")
def saved(tmp_path_factory, bos_tok):
    """The tiny model and its BOS tokenizer saved as a HF folder (what --model and the TL bridge load)."""
    path = tmp_path_factory.mktemp("tiny-bos")
    _tiny(len(bos_tok), seed=1).save_pretrained(path)
    bos_tok.save_pretrained(path)
    return path


# --------------------------------------------------------------------------------------------
# encode / encode_batch / the switch
# --------------------------------------------------------------------------------------------


def test_encode_follows_the_tokenizer_and_the_switch_overrides_it(lm, bos_tok):
    assert lm.prepends_bos and lm.bos_id == BOS and lm.prepend_bos is None
    off = wrap_model(lm.hf_model, bos_tok, prepend_bos=False)
    assert not off.prepends_bos and off.bos_id is None
    flip = wrap_model(lm.hf_model, bos_tok)
    flip.prepend_bos = False  # the setting changed after loading takes effect
    assert not flip.prepends_bos and flip.encode("hi")[0].tolist() == bos_tok("hi").input_ids[1:]
    for text in TEXTS:
        want = bos_tok(text).input_ids
        assert want[0] == BOS  # the tokenizer itself adds it
        assert lm.encode(text)[0].tolist() == want
        assert lm.starts_with_bos(lm.encode(text))
        assert off.encode(text)[0].tolist() == want[1:] == bos_tok(text, add_special_tokens=False).input_ids
        assert not off.starts_with_bos(off.encode(text))
        # continuations (a response, an answer token) carry no BOS
        assert lm.encode(text, bos=False)[0].tolist() == want[1:] == lm.tokens(text)


def test_smollm2_ids_do_not_change():
    """The embedded tokenizer adds no BOS (read off it, not assumed): its ids stay as they were."""
    tok = _smol_tokenizer()
    smol = wrap_model(_tiny(len(tok)), tok)
    assert not smol.prepends_bos and smol.bos_id is None
    for text in TEXTS:
        assert tok(text).input_ids == tok(text, add_special_tokens=False).input_ids  # the tokenizer's own behaviour
        assert smol.encode(text)[0].tolist() == tok(text).input_ids
    # forcing BOS puts the tokenizer's (SmolLM2 names <|im_start|> so) first
    forced = wrap_model(smol.hf_model, tok, prepend_bos=True)
    assert forced.encode("hi")[0].tolist() == [tok.bos_token_id, *tok("hi").input_ids]


def test_encode_batch_left_pads_behind_bos(lm, bos_tok):
    ids, mask = lm.encode_batch(TEXTS)
    width = max(len(bos_tok(t).input_ids) for t in TEXTS)
    assert ids.shape == mask.shape == (len(TEXTS), width)
    for b, text in enumerate(TEXTS):
        row = bos_tok(text).input_ids
        n = len(row)
        assert ids[b, width - n :].tolist() == row and mask[b].tolist() == [0] * (width - n) + [1] * n
        # the padded row's last logits equal the text's own (padding is masked, BOS is attended)
        alone = lm.forward(lm.encode(text))[0, -1]
        torch.testing.assert_close(lm.forward(ids, mask)[b, -1], alone, atol=1e-5, rtol=1e-5)


def test_loss_equals_transformers_own(lm, bos_tok):
    """The loss our forward gives (AttentionInfluence's base loss) equals ``model(ids, labels=ids).loss``
    of transformers on the tokenizer's own ids, BOS included."""
    from interp.experiments.influence import losses

    for text in TEXTS[::2]:
        ref_ids = bos_tok(text, return_tensors="pt").input_ids
        with torch.no_grad():
            want = float(lm.hf_model(ref_ids, labels=ref_ids).loss)
        (base,), _ = losses(lm, [lm.encode(text)], [])
        assert base == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_bad_setting_is_one_clear_error(bos_tok):
    tok = _smol_tokenizer()
    tok.bos_token = None
    with pytest.raises(InterpError, match="has no BOS token"):
        wrap_model(_tiny(len(bos_tok)), tok, prepend_bos=True)
    with pytest.raises(InterpError, match="has no BOS token"):
        wrap_model(_tiny(8), None, prepend_bos=True)
    plain = wrap_model(_tiny(len(bos_tok)), tok)
    with pytest.raises(InterpError, match="has no BOS token"):
        plain.prepend_bos = True
    assert plain.prepend_bos is None and not plain.prepends_bos  # refused: nothing changed
    assert not wrap_model(_tiny(len(bos_tok)), tok).prepends_bos  # follow: no BOS to add


# --------------------------------------------------------------------------------------------
# chat prompts: exactly one BOS
# --------------------------------------------------------------------------------------------


def test_chat_prompt_has_exactly_one_bos(bos_tok):
    from copy import deepcopy

    messages = [{"role": "user", "content": "What is 2+2?"}]
    # 1) the template writes BOS itself (Gemma, Llama 3): encode keeps it and adds none
    tok = deepcopy(bos_tok)
    tok.chat_template = BOS_TEMPLATE
    m = wrap_model(_tiny(len(tok)), tok)
    ids = m.encode(m.chat_prompt("What is 2+2?"))[0].tolist()
    assert ids[0] == BOS and ids.count(BOS) == 1
    assert (
        bos_tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)).input_ids.count(BOS) == 2
    )  # what naive tokenising would give
    want = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids == list(want)
    # 2) the template has no BOS text (SmolLM2's): encode adds the one BOS
    plain = wrap_model(_tiny(len(bos_tok)), bos_tok)
    ids = plain.encode(plain.chat_prompt("What is 2+2?"))[0].tolist()
    assert ids[0] == BOS and ids.count(BOS) == 1 and ids[1:] == plain.tokens(plain.chat_prompt("What is 2+2?"))


# --------------------------------------------------------------------------------------------
# the TL backend gets the same ids
# --------------------------------------------------------------------------------------------


def test_tl_backend_gets_the_same_ids_and_logits(saved):
    hf = load_model(str(saved))
    tl = load_model(str(saved), backend="tl")
    assert tl.prepends_bos and hf.prepends_bos
    for text in TEXTS[:2]:
        ids = hf.encode(text)
        assert tl.encode(text).tolist() == ids.tolist() and ids[0, 0] == BOS and int((ids == BOS).sum()) == 1
        assert tl.model.to_tokens(text).tolist() == ids.tolist()  # the bridge's own string route agrees
        torch.testing.assert_close(tl.forward(ids), hf.forward(ids), atol=1e-4, rtol=1e-4)
    off = load_model(str(saved), backend="tl", prepend_bos=False)
    assert (
        off.encode(TEXTS[0])[0].tolist()
        == hf.encode(TEXTS[0])[0, 1:].tolist()
        == off.model.to_tokens(TEXTS[0])[0].tolist()
    )


# --------------------------------------------------------------------------------------------
# datasets and experiments: positions count the BOS
# --------------------------------------------------------------------------------------------


def test_needle_spans_with_bos(lm, bos_tok):
    from interp.analyses.retrieval import RetrievalConfig
    from interp.experiments.retrieval import prepare_samples

    samples, _ = prepare_samples(lm, RetrievalConfig(lengths=(200,), depths=(0.0, 0.5, 1.0), min_recall=0.0))
    off, _ = prepare_samples(
        wrap_model(lm.hf_model, bos_tok, prepend_bos=False),
        RetrievalConfig(lengths=(200,), depths=(0.0,), min_recall=0.0),
    )
    by_needle = {s.needle_id: s for s in off}
    for s in samples:
        ids = list(s.prompt_ids)
        assert ids[0] == BOS and ids.count(BOS) == 1 and BOS not in s.response_ids  # once, at the start only
        a0, a1 = s.answer_span
        n0, n1 = s.needle_span
        assert n0 <= a0 < a1 <= n1 and ids[a0:a1] == lm.tokens(" " + s.answer)[-(a1 - a0) :]
        assert s.answer.strip() in lm.decode(ids[n0:n1])
        if s.depth == 0.0:  # the needle right after the intro: one later than without BOS
            assert (n0, a0) == (by_needle[s.needle_id].needle_span[0] + 1, by_needle[s.needle_id].answer_span[0] + 1)


def test_needle_spans_with_a_bos_chat_template(bos_tok):
    from copy import deepcopy

    from interp.analyses.retrieval import RetrievalConfig
    from interp.experiments.retrieval import prepare_samples

    tok = deepcopy(bos_tok)
    tok.chat_template = BOS_TEMPLATE
    m = wrap_model(_tiny(len(tok)), tok)
    samples, prov = prepare_samples(m, RetrievalConfig(lengths=(220,), depths=(0.0,), min_recall=0.0))
    assert prov["chat_template"]
    for s in samples:
        assert s.prompt_ids[0] == BOS and s.prompt_ids.count(BOS) == 1
        a0, a1 = s.answer_span
        assert s.answer.strip() in m.decode(list(s.prompt_ids[a0:a1]))


def test_patching_task_roles_with_bos(lm):
    from interp.analyses.patching.config import PatchConfig
    from interp.experiments.patching.runner import task_for

    for task in ("ioi", "colored-objects"):
        b = task_for(lm, PatchConfig(task=task, n=4, seed=1))
        assert (b.clean[:, 0] == BOS).all() and (b.corrupt[:, 0] == BOS).all()
        assert int((b.clean == BOS).sum()) == b.n  # one BOS per prompt
        rows = torch.arange(b.n)
        if task == "ioi":
            assert (b.clean[rows, b.roles["IO"]] == b.correct).all()
            assert (b.clean[rows, b.roles["S1"]] == b.wrong).all() and (b.clean[rows, b.roles["S2"]] == b.wrong).all()
        else:
            assert (b.clean[rows, b.roles["colour"]] == b.correct).all()
            assert (b.clean[rows, b.roles["distractor"]] == b.wrong).all()
        assert (b.roles["end"] == b.clean.shape[1] - 1).all()


def test_pairs_file_with_bos(lm, tmp_path):
    import json

    from interp.datasets.tasks import task_from_jsonl

    path = tmp_path / "pairs.jsonl"
    rows = [
        {
            "clean": "When Mary and John went to the store, John gave a drink to",
            "corrupt": "When Alice and Bob went to the store, Tom gave a drink to",
            "correct": " Mary",
            "wrong": " John",
        }
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    b = task_from_jsonl(lm.tokenizer, path, bos=lm.bos_id)
    assert b.clean[0].tolist() == lm.encode(rows[0]["clean"])[0].tolist()
    assert b.corrupt[0].tolist() == lm.encode(rows[0]["corrupt"])[0].tolist()


def test_select_copy_anchors_with_bos(lm, bos_tok):
    from interp.datasets.questions import shipped_questions
    from interp.experiments.select_copy import prompt_tokens

    off = wrap_model(lm.hf_model, bos_tok, prepend_bos=False)
    q = shipped_questions()[0]
    for anchor, char in (("newline", "\n"), ("label", None)):
        ids, pos = prompt_tokens(lm, q, anchor)
        ids0, pos0 = prompt_tokens(off, q, anchor)
        assert ids == [BOS, *ids0] and pos == [p + 1 for p in pos0]
        for i, p in enumerate(pos):
            piece = lm.decode([ids[p]])
            assert (char in piece) if char else ("ABCDEFGH"[i] in piece)


def test_qr_segments_with_bos(lm):
    from interp.datasets.documents import build_prompt, shipped_samples

    s = shipped_samples()[0]
    ids, seg, rows = build_prompt(lm.tokenizer, s.documents, s.query, bos=lm.bos_id)
    assert ids[0] == BOS and seg[0] == -1 and ids.count(BOS) == 1 and len(seg) == len(ids)
    for c, doc in enumerate(s.documents):
        assert lm.decode([t for t, g in zip(ids, seg) if g == c]) == f"{doc}\n"
    assert lm.decode([ids[r] for r in rows]) == s.query


def test_sink_windows_open_with_bos(lm):
    from interp.analyses.sinks import SinkConfig
    from interp.experiments.sinks import prepare_windows

    text = " ".join(f"word{i}" for i in range(200))
    for pack in (True, False):
        windows = prepare_windows(lm, SinkConfig(texts=(text, text), length=32, pack=pack))
        assert len(windows) >= 2
        for w in windows:
            assert w.shape == (1, 32) and w[0, 0] == BOS and int((w == BOS).sum()) == 1


def test_preplan_response_carries_no_bos(lm, monkeypatch):
    import interp.experiments.preplan as preplan
    from interp.analyses.preplan import PreplanConfig

    seen = {}

    def grab(lm_, cfg, p, r, **kw):
        seen.update(p=p, r=r)
        raise LookupError("seen")  # stop here: only the ids handed on are checked

    monkeypatch.setattr(preplan, "score_ids", grab)
    with pytest.raises(LookupError, match="seen"):
        preplan.score_prompt(lm, PreplanConfig(chat=False), prompt="What is 2+2?", response="It is 4.")
    assert seen["p"][0].tolist() == lm.encode("What is 2+2?")[0].tolist() and seen["p"][0, 0] == BOS
    assert seen["r"][0].tolist() == lm.tokens("It is 4.") and BOS not in seen["r"][0].tolist()


def test_choice_ids_carry_no_bos(lm):
    from interp.experiments.calibration import choice_token_ids

    assert choice_token_ids(lm, [" yes", " no"]) == [lm.tokens(" yes")[0], lm.tokens(" no")[0]]


# --------------------------------------------------------------------------------------------
# CLI: --prepend-bos on a tokenizer without BOS
# --------------------------------------------------------------------------------------------


def _cli(monkeypatch, capsys, *argv):
    from interp import cli

    monkeypatch.setattr(sys, "argv", ["interp", *argv])
    try:
        cli.main()
    except SystemExit as exc:
        return exc.code, capsys.readouterr().err
    return 0, capsys.readouterr().err


def test_cli_prepend_bos_without_a_bos_token_is_one_error_line(tmp_path, monkeypatch, capsys):
    tok = _smol_tokenizer()
    tok.bos_token = None
    folder = tmp_path / "no-bos"
    _tiny(len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    out = tmp_path / "out"
    capsys.readouterr()  # drop the saving's progress bars
    code, err = _cli(
        monkeypatch,
        capsys,
        "--prepend-bos",
        "score",
        "sinks",
        "--model",
        str(folder),
        "--length",
        "16",
        "--out",
        str(out),
    )
    assert code == 2 and not out.exists()
    lines = [ln for ln in err.splitlines() if "error" in ln.lower()]  # (loading progress bars aside)
    assert len(lines) == 1 and lines[0].startswith("error:") and "no BOS token" in lines[0] and "Traceback" not in err


def test_cli_records_the_choice_and_resume_refuses_another(saved, tmp_path, monkeypatch, capsys):
    """run.json records the effective BOS choice; a resume with the other choice is refused, losing nothing."""
    import json

    out = tmp_path / "out"
    args = ("score", "sinks", "--model", str(saved), "--length", "16", "--max-texts", "2", "--out", str(out))
    code, err = _cli(monkeypatch, capsys, *args)
    assert code == 0, err
    info = json.loads((out / "run.json").read_text())
    assert info["launch"]["prepend_bos"] is True
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    code, err = _cli(monkeypatch, capsys, "--no-prepend-bos", *args)
    assert code == 2 and "prepend_bos: True -> False" in " ".join(err.split())
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
