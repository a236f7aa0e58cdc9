"""The model side of retrieval scoring: the scored rows of needle samples, and answers under edits.

Every function here drives the model through `interp.models.Model` operations and
`interp.hooks` only (`streaming`, `intervene`, `tree_rows`), and returns a `RowTrace` (or answer token ids)
that `interp.analyses.retrieval.scores` scores:

The paper decodes greedily with eager attention and ``output_attentions`` (the full [T, T]
matrices) to read j*; here j* is the kernel's ``top1`` (`interp.kernels.attention_stats`) of
the needed query rows only, and the attention matrix is never built:

- teacher mode: one forward pass on prompt + response (`teacher_trace`), or every sample of a
  grid over a shared-prefix walk (`teacher_traces`, `interp.hooks.prefix`); the
  kernel computes top-1 of the response rows only. The rows are the positions that predict
  each response token; a row is scored when the model's own greedy token equals the forced
  one, so while the model copies correctly the rows, their prefixes and hence their events
  are exactly those of greedy decoding.
- decode mode: Wu et al.'s loop (prefill ``prompt[:-1]``, feed the last prompt token as the
  first step, greedy steps until a newline or end-of-sequence token); each step's query row is
  kept per layer and one kernel call per layer after the loop computes every decode row
  (`decode_trace`; `decode_traces` shares the prefills over the grid).
- the causal check: the model's answer with some heads' attention made uniform, no kernel
  (`needle_recall` one sample, `teacher_answers` / `decode_answers` a grid).

Re-exported by `interp.experiments.retrieval`. The paper's own loop on a separately loaded eager
model (materialised attention), against which these traces are checked, is
``benchmarks/retrieval_paper_loop.py``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from interp.analyses.retrieval.scores import RowTrace, response_rows
from interp.datasets.needles import NeedleSample
from interp.errors import InterpError
from interp.experiments._needles import greedy_answer, token_ids
from interp.models import Model

__all__ = [
    "teacher_trace",
    "teacher_traces",
    "decode_trace",
    "decode_traces",
    "decode_answers",
]


def _stats_top1(lm: Model, layer: int, q: Tensor, k: Tensor, rows: Optional[Tensor], backend: str) -> Tensor:
    from interp.kernels import attention_stats

    st = attention_stats(q, k, **lm.attention_kwargs(layer), query_rows=rows, columns=False, backend=backend)
    return st.top1[0]  # [head, n_rows]


def teacher_trace(lm: Model, sample: NeedleSample, *, backend: str = "auto", edits: Sequence = ()) -> RowTrace:
    """One forward pass on prompt + response; top1 of the response rows from the kernel.

    With ``edits`` (e.g. uniform attention on some heads) the same pass runs under
    `interp.hooks.intervene`; the kernel then sees the edited queries.
    """
    from interp.hooks import intervene, streaming

    ids = token_ids(lm, sample.input_ids)
    n_resp = len(sample.response_ids)
    rows = response_rows(sample.n_prompt, n_resp)
    top1: dict[int, Tensor] = {}

    def on_layer(layer: int, q: Tensor, k: Tensor) -> None:
        top1[layer] = _stats_top1(lm, layer, q, k, rows.to(q.device), backend).cpu()

    with intervene(lm, list(edits)), streaming(lm, None, on_layer):  # checks every layer fired
        logits = lm.logits_tail(ids, n_resp + 1)[0, :-1]
    return RowTrace(
        positions=rows,
        top1=torch.stack([top1[layer] for layer in range(lm.arch.n_layers)]),
        emitted=logits.argmax(-1).cpu(),
        reference=torch.tensor(sample.response_ids, dtype=torch.long),
        tokens=ids[0].cpu(),
    )


def teacher_traces(
    lm: Model,
    samples: Sequence[NeedleSample],
    *,
    backend: str = "auto",
    edits: Sequence = (),
    batch_size: int = 1,
    chunk_size: int = 2048,
    on_trace: Optional[Callable[[int, RowTrace], None]] = None,
) -> list[RowTrace]:
    """`teacher_trace` of many samples, each shared token prefix computed once (prefix cache).

    The samples' prompt + response ids go into a prefix tree (`interp.hooks.prefix`):
    the template and the haystack before the earliest needle are computed once for the whole
    grid, the text before each needle once for all needles there, and so on; the kernel
    computes only the response rows, from the edge that holds them. The traces equal those of
    `teacher_trace` on each sample (same rows, same q and k up to rounding).

    Args:
        batch_size: sequences per forward pass (see `interp.hooks.prefix.tree_rows`).
        chunk_size: query rows per kernel chunk (see `interp.hooks.prefix.tree_rows`).
        on_trace: optional ``on_trace(index, trace)`` called as soon as a sample's trace is
            complete (samples finish in tree order, not input order).
    """
    from interp.hooks.prefix import tree_rows

    def top1_rows(layer: int, q: Tensor, k: Tensor, rows: Tensor) -> Tensor:
        return _stats_top1(lm, layer, q, k, rows, backend)  # [head, n_rows]

    traces: dict[int, RowTrace] = {}

    def done(i: int, got) -> None:
        s = samples[i]
        traces[i] = RowTrace(
            positions=got.positions,
            top1=torch.stack([got.stats[layer] for layer in range(lm.arch.n_layers)]),
            emitted=got.greedy,
            reference=torch.tensor(s.response_ids, dtype=torch.long),
            tokens=torch.tensor(s.input_ids, dtype=torch.long),
        )
        if on_trace is not None:
            on_trace(i, traces[i])

    tree_rows(
        lm,
        [s.input_ids for s in samples],
        [response_rows(s.n_prompt, len(s.response_ids)).tolist() for s in samples],
        stats=top1_rows,
        edits=edits,
        batch_size=batch_size,
        chunk_size=chunk_size,
        on_done=done,
    )
    return [traces[i] for i in range(len(samples))]


def decode_trace(
    lm: Model, sample: NeedleSample, *, max_new_tokens: int = 50, backend: str = "auto", edits: Sequence = ()
) -> RowTrace:
    """The paper's greedy loop; the kernel computes the decode rows only.

    Each step's query row (the new token's q) is kept per layer, and the keys seen at the last
    step (the whole cache) too; after the loop one kernel call per layer computes all decode
    rows at once: row r of the stacked queries sits at key index key_pos - n_steps + r, which
    is exactly the step's position, and causality hides the keys that step had not seen yet.
    The same q and k as step by step, with one kernel call per layer instead of one per step.
    """
    from interp.hooks import intervene

    with intervene(lm, list(edits)):
        return _decode_rows(lm, sample, max_new_tokens, backend, None)


def _decode_rows(lm: Model, sample: NeedleSample, max_new_tokens: int, backend: str, past: Any) -> RowTrace:
    """`decode_trace`'s loop and kernel call (edits, if any, are already attached)."""
    from interp.hooks import streaming

    n_layers = lm.arch.n_layers
    q_rows: dict[int, list[Tensor]] = {layer: [] for layer in range(n_layers)}
    last_k: dict[int, Tensor] = {}
    decoding = [past is not None]  # the prefill runs before the first step: no rows are needed there

    def on_prefilled() -> None:
        decoding[0] = True

    def on_layer(layer: int, q: Tensor, k: Tensor) -> None:
        if decoding[0]:
            q_rows[layer].append(q[:, :, -1:])
            last_k[layer] = k

    with streaming(lm, None, on_layer):  # checks every layer fired in every pass
        emitted, stopped = greedy_answer(
            lm, sample.prompt_ids, max_new_tokens=max_new_tokens, past=past, on_prefilled=on_prefilled
        )
    if len(q_rows[0]) != len(emitted):  # one decode pass per emitted token, or the rows are misaligned
        raise InterpError(f"internal error: {len(q_rows[0])} decode passes for {len(emitted)} emitted tokens")
    top1 = torch.stack(
        [
            _stats_top1(lm, layer, torch.cat(q_rows[layer], dim=2), last_k[layer], None, backend).cpu()
            for layer in range(n_layers)
        ]
    )
    n_prompt = sample.n_prompt
    return RowTrace(
        positions=torch.arange(n_prompt - 1, n_prompt - 1 + len(emitted)),
        top1=top1,
        emitted=torch.tensor(emitted, dtype=torch.long),
        reference=None,
        tokens=torch.tensor(list(sample.prompt_ids) + emitted, dtype=torch.long),
        stopped=stopped,
    )


def decode_traces(
    lm: Model,
    samples: Sequence[NeedleSample],
    *,
    max_new_tokens: int = 50,
    backend: str = "auto",
    edits: Sequence = (),
    on_trace: Optional[Callable[[int, RowTrace], None]] = None,
) -> list[RowTrace]:
    """`decode_trace` of many samples, the prefill of each shared token prefix computed once.

    The samples' ``prompt[:-1]`` go into a prefix tree (`interp.hooks.prefix`); where
    a sample's prompt ends, its greedy loop starts from the cache the walk holds there, and
    its steps are cropped off again afterwards. Same traces as `decode_trace` on each sample.

    Args:
        on_trace: optional ``on_trace(index, trace)`` called as each sample's loop ends.
    """
    from interp.hooks.prefix import tree_rows

    traces: dict[int, RowTrace] = {}

    def at_end(i: int, cache: Any) -> None:
        traces[i] = _decode_rows(lm, samples[i], max_new_tokens, backend, cache)
        if on_trace is not None:
            on_trace(i, traces[i])

    tree_rows(lm, [s.prompt_ids[:-1] for s in samples], None, edits=edits, at_end=at_end)
    return [traces[i] for i in range(len(samples))]


def decode_answers(
    lm: Model,
    samples: Sequence[NeedleSample],
    *,
    max_new_tokens: int = 50,
    edits: Sequence = (),
    on_answer: Optional[Callable[[int, list[int]], None]] = None,
) -> list[list[int]]:
    """The greedy loop's answer ids (stop token dropped) of many samples, shared prefills once (no kernel).

    Args:
        on_answer: optional ``on_answer(index, token_ids)`` called as each sample's loop ends.
    """
    from interp.hooks.prefix import tree_rows

    answers: dict[int, list[int]] = {}

    def at_end(i: int, cache: Any) -> None:
        emitted, stopped = greedy_answer(lm, samples[i].prompt_ids, max_new_tokens=max_new_tokens, past=cache)
        answers[i] = emitted[:-1] if stopped else emitted
        if on_answer is not None:
            on_answer(i, answers[i])

    tree_rows(lm, [s.prompt_ids[:-1] for s in samples], None, edits=edits, at_end=at_end)
    return [answers[i] for i in range(len(samples))]
