"""The model answering needle prompts, shared by the retrieval experiment and the head atlas.

- `prepare_samples`: the needle-in-a-haystack grid built with the model's tokenizer.
- `greedy_answer`: Wu et al.'s decoding loop; `teacher_answers`: the greedy tokens at each
  sample's response rows (teacher forcing, shared prefixes once).
- `answer_recall`, `needle_recall`: ROUGE-1 recall of an answer against the needle's.

No kernel runs here: the retrieval scores (`interp.experiments.retrieval.traces`) read the
attention; these read only the model's answers.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable, Optional, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from interp.analyses.retrieval import RetrievalConfig
from interp.analyses.retrieval.scores import response_rows, rouge1_recall
from interp.datasets.haystack import Haystack, load_haystack
from interp.datasets.needles import NeedleSample, PromptTemplate, build_samples, load_needles
from interp.digest import digest
from interp.errors import InterpError
from interp.models import Model

__all__ = [
    "token_ids",
    "prepare_samples",
    "teacher_answers",
    "greedy_answer",
    "answer_recall",
    "needle_recall",
]


def token_ids(lm: Model, tokens: Sequence[int]) -> Int[Tensor, "1 pos"]:
    return torch.tensor([list(tokens)], dtype=torch.long, device=lm.device)


def prepare_samples(lm: Model, config: RetrievalConfig) -> tuple[list[NeedleSample], dict]:
    """Build every sample of the grid with the model's tokenizer (no forward pass yet).

    Returns:
        (samples, provenance): provenance names the needles, haystack and template used and
        hashes them (these decide whether finished samples of an earlier run can be reused).

    Raises:
        InterpError: any bad input (see `interp.datasets.needles.build_sample`), before any
            model work or file write happens.
    """
    if lm.tokenizer is None:
        raise InterpError("the model has no tokenizer: retrieval scoring builds text prompts, so it needs one")
    needles = load_needles(config.needles)
    sentences, hay_name = load_haystack(config.haystack)

    def encode_many(texts: list[str]) -> list[list[int]]:
        return lm.tokenizer(texts, add_special_tokens=False).input_ids

    haystack = Haystack.tokenize(sentences, encode_many, hay_name)
    template = PromptTemplate.from_chat(lm.chat_prompt)  # plain prompt when there is no chat template
    samples = build_samples(
        lambda text: encode_many([text])[0],
        template,
        haystack,
        needles,
        config.lengths,
        config.depths,
        n_ctx=lm.arch.n_ctx,
        response=config.response,
        bos=lm.bos_id,  # BOS once, at position 0 (the haystack and needle pieces carry none)
    )
    provenance = {
        "model": lm.name,
        "mode": config.mode,
        "response": config.response if config.mode == "teacher" else None,
        "max_new_tokens": config.max_new_tokens if config.mode == "decode" else None,
        "needles": config.needles or "interp/data/needles.jsonl",
        "needles_sha256": digest([asdict(n) for n in needles]),
        "haystack": hay_name,
        "haystack_sha256": haystack.digest(),
        "haystack_tokens": haystack.n_tokens,
        "chat_template": template.chat,
    }
    return samples, provenance


def teacher_answers(
    lm: Model,
    samples: Sequence[NeedleSample],
    *,
    edits: Sequence = (),
    batch_size: int = 1,
    on_answer: Optional[Callable[[int, list[int]], None]] = None,
) -> list[list[int]]:
    """The model's greedy tokens at each sample's response rows, shared prefixes once (no kernel).

    What `needle_recall` reads in teacher mode, for many samples (the masking check).

    Args:
        on_answer: optional ``on_answer(index, token_ids)`` called as each sample completes.
    """
    from interp.hooks.prefix import tree_rows

    answers: dict[int, list[int]] = {}

    def done(i: int, got) -> None:
        answers[i] = got.greedy.tolist()
        if on_answer is not None:
            on_answer(i, answers[i])

    tree_rows(
        lm,
        [s.input_ids for s in samples],
        [response_rows(s.n_prompt, len(s.response_ids)).tolist() for s in samples],
        edits=edits,
        batch_size=batch_size,
        on_done=done,
    )
    return [answers[i] for i in range(len(samples))]


def greedy_answer(
    lm: Model,
    prompt_ids: Sequence[int],
    *,
    max_new_tokens: int = 50,
    past: Any = None,
    on_prefilled: Optional[Callable[[], None]] = None,
) -> tuple[list[int], bool]:
    """Wu et al.'s loop: prefill prompt[:-1] with a KV cache, feed the last prompt token, then
    greedy steps until a newline or end-of-sequence token (kept as the last token) or the limit
    (which the context may shorten).

    Args:
        past: optional KV cache already holding ``prompt_ids[:-1]`` (the prefill is then
            skipped; the steps append to it).
        on_prefilled: optional callback run after the prefill, before the first step.

    Returns:
        (emitted token ids, whether it stopped on a stop token).
    """
    ids = token_ids(lm, prompt_ids)
    n = int(ids.shape[1])
    lm.check_length(n)
    stop = lm.stop_rule(newline=True)
    steps = min(max_new_tokens, lm.arch.n_ctx - n + 1)
    if not lm.reuses_prefixes:  # no cache to prefill: every step runs the whole sequence
        if past is not None:
            raise InterpError("a prefix KV cache needs a model that takes one (the HF backend)")
        if on_prefilled is not None:
            on_prefilled()
        emitted = lm.greedy(ids, steps, stop=stop)[0].tolist()
        return emitted, stop(emitted[-1])
    cache = past
    if past is not None and lm.cache_length(past) != n - 1:
        raise InterpError(f"the cache holds {lm.cache_length(past)} positions, not the {n - 1} of prompt[:-1]")
    if past is None:
        cache = lm.new_cache()  # keeps every key: windowed layers' keys stay aligned with positions
        if n > 1:
            lm.logits_tail(ids[:, :-1], 1, past=cache)
    if on_prefilled is not None:
        on_prefilled()
    emitted = lm.greedy(ids[:, -1:], steps, stop=stop, past=cache)[0].tolist()
    return emitted, stop(emitted[-1])


def answer_recall(lm: Model, answer_ids: Sequence[int], sample: NeedleSample) -> tuple[float, str]:
    """(ROUGE-1 recall of the answer against the needle's, the answer's text)."""
    text = lm.decode(list(answer_ids)) if lm.tokenizer is not None else " ".join(map(str, answer_ids))
    return rouge1_recall(text, sample.answer), text


def needle_recall(lm: Model, sample: NeedleSample, config: RetrievalConfig, edits: Sequence = ()) -> tuple[float, str]:
    """Recall of the model's answer with ``edits`` applied (no kernel: for the masking check)."""
    from interp.hooks import intervene

    if config.mode == "decode":
        with intervene(lm, list(edits)):
            emitted, stopped = greedy_answer(lm, sample.prompt_ids, max_new_tokens=config.max_new_tokens)
        return answer_recall(lm, emitted[:-1] if stopped else emitted, sample)
    ids = token_ids(lm, sample.input_ids)
    n = len(sample.response_ids)
    with intervene(lm, list(edits)):
        greedy = lm.logits_tail(ids, n + 1)[0, :-1].argmax(-1).tolist()
    return answer_recall(lm, greedy, sample)
