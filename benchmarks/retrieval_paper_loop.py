"""REFERENCE PATH, for tests and benchmarks only: Wu et al.'s own way of reading j*.

It runs a separately loaded eager HF model with ``output_attentions=True`` and materialises
attention, which the library never does; it lives beside ``benchmarks/retrieval.py``, which
times it against `interp.experiments.retrieval` and checks that the kernel rows give the same
events as the paper's loop (tests/integration/test_retrieval_tiny.py checks the same, loading
this file by path).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from interp.analyses.retrieval.scores import RowTrace
from interp.datasets.needles import NeedleSample

__all__ = ["paper_decode_trace"]


def paper_decode_trace(
    eager_model: Any,
    tokenizer: Any,
    sample: NeedleSample,
    *,
    max_new_tokens: int = 50,
    prefill_model: Optional[Any] = None,
) -> RowTrace:
    """Wu et al.'s loop on a separately loaded eager HF model (reference for tests/benchmarks).

    Prefill ``prompt[:-1]`` with a KV cache, feed the last prompt token, then greedy steps with
    ``output_attentions=True``; j* is the argmax of each head's materialised attention row
    (the paper's ``topk(1)``). Stops after a newline or end-of-sequence token, or the limit.

    Args:
        eager_model: an HF causal LM loaded with ``attn_implementation="eager"``.
        tokenizer: its tokenizer (for the newline stop rule).
        prefill_model: the model that prefills (default: ``eager_model``). Wu et al.'s code
            prefills with flash attention and materialises attention only in the decode
            steps; pass the same weights loaded with SDPA to reproduce that.
    """
    stops: set[int] = set()
    for source in (
        getattr(tokenizer, "eos_token_id", None),
        getattr(getattr(eager_model, "generation_config", None), "eos_token_id", None),
    ):
        if isinstance(source, int):
            stops.add(source)
        elif isinstance(source, (list, tuple)):
            stops.update(int(x) for x in source)
    ids = torch.tensor([list(sample.prompt_ids)], dtype=torch.long)
    emitted: list[int] = []
    rows: list[Tensor] = []
    stopped = False
    with torch.no_grad():
        past = (prefill_model or eager_model)(input_ids=ids[:, :-1], use_cache=True).past_key_values
        token = ids[:, -1:]
        for _ in range(max_new_tokens):
            out = eager_model(input_ids=token, past_key_values=past, use_cache=True, output_attentions=True)
            past = out.past_key_values
            nxt = int(out.logits[0, -1].argmax())
            emitted.append(nxt)
            rows.append(torch.stack([att[0, :, -1].argmax(-1) for att in out.attentions]))  # [layer, head]
            if nxt in stops or "\n" in tokenizer.decode([nxt]):
                stopped = True
                break
            token = torch.tensor([[nxt]], dtype=torch.long)
    n_prompt = sample.n_prompt
    return RowTrace(
        positions=torch.arange(n_prompt - 1, n_prompt - 1 + len(emitted)),
        top1=torch.stack(rows, dim=-1),
        emitted=torch.tensor(emitted, dtype=torch.long),
        reference=None,
        tokens=torch.tensor(list(sample.prompt_ids) + emitted, dtype=torch.long),
        stopped=stopped,
    )
