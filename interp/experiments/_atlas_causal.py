"""The atlas's causal check: each selector's KV heads windowed on held-out text and needle prompts.

Per condition (a selector, a seed, a budget) the chosen KV heads' query heads are windowed with
`interp.hooks.window_attention` (their first S keys and last W keys). Measured: the per-token
loss of the last ``loss_tokens`` tokens of each held-out window, and greedy needle recall on
prompts of ``length`` tokens with the needle at depths 0.25, 0.5 and 0.75. The unedited model's
pass also gives each loss token's short-context loss (LongPPL's last K..5K/4 - 1 tokens), hence
the key tokens.

What does not change between conditions is computed once: the needle prompts of one needle share
their haystack prefix (`interp.experiments._needles.teacher_answers` walks the prefix
tree with a reused KV cache), and the held-out windows' residual stream entering the first edited
layer comes from the unedited pass (`interp.hooks.start_at_layer`: the layers below it are
skipped). Conditions that window the same KV heads are measured once. Every condition is a unit
of work, resumed from ``causal.jsonl``, with its wall and CPU seconds (the benchmark's breakdown).
"""

from __future__ import annotations

import math
import time
from contextlib import ExitStack
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from interp.analyses.atlas import SELECTORS, AtlasResult, condition_row, key_tokens, select_units, with_causal
from interp.errors import InterpError
from interp.experiments._base import Store
from interp.models import Model

__all__ = ["DEPTHS", "n_windowed", "token_nll", "short_nll", "unit_edits", "conditions", "causal_check"]

DEPTHS = (0.25, 0.5, 0.75)  # needle depths of the recall check (shallow, middle, deep)


def n_windowed(budget: float, n_units: int) -> int:
    """KV heads windowed at ``budget`` (a share of ``n_units``, rounded half up)."""
    return int(math.floor(budget * n_units + 0.5))


def unit_edits(result: AtlasResult, units: Sequence[tuple[int, int]]) -> list:
    """`window_attention` edits for every query head of the KV heads ``units`` (layer index, kv head)."""
    from interp.analyses.atlas import query_heads
    from interp.hooks import window_attention

    cfg = result.config
    return [
        window_attention(result.layers[i], h, cfg.policy_window, cfg.sinks)
        for i, g in units
        for h in query_heads(result.kv_map, g)
    ]


def token_nll(
    lm: Model,
    ids: Tensor,
    n: int,
    edits: Sequence = (),
    *,
    capture_at: Sequence[int] = (),
    start: Optional[tuple[int, Optional[Tensor]]] = None,
) -> tuple[list[float], dict[int, Tensor]]:
    """Per-token next-token loss (nats) of the last ``n`` tokens of ``ids`` [1, pos] with ``edits``.

    Args:
        capture_at: layers whose entering residual stream is returned (for later ``start``).
        start: (layer, resid): run from ``layer`` on with ``resid`` entering it (`start_at_layer`);
            ignored when resid is None, layer is 0 or the model cannot skip layers.

    Returns:
        (losses, {layer: resid [1, pos, d_model]}).
    """
    from interp.hooks import capture, intervene, start_at_layer

    n = min(n, int(ids.shape[1]) - 1)
    keep = [layer for layer in capture_at if layer > 0]
    with ExitStack() as stack, torch.no_grad():
        stack.enter_context(intervene(lm, list(edits)))
        if start is not None and start[0] > 0 and start[1] is not None and lm.reuses_prefixes:
            stack.enter_context(start_at_layer(lm, start[0], start[1]))
        cap = stack.enter_context(capture(lm, layers=keep, keep=("resid_pre",))) if keep else None
        logits = lm.logits_tail(ids, n + 1)[0, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits, ids[0, -n:].to(logits.device), reduction="none")
    resid = {layer: cap["resid_pre", layer] for layer in keep} if cap is not None else {}
    return [round(float(x), 6) for x in nll], resid


def short_nll(lm: Model, ids: Tensor, n: int, context: int, step: int) -> list[float]:
    """The last ``n`` tokens' loss with only a short context: tokens [a, a + step) see the ``context``
    tokens before a (LongPPL's trunc_len and sliding_window), BOS first where the model prepends one."""
    T = int(ids.shape[1])
    n = min(n, T - 1)
    out: list[float] = []
    for a in range(T - n, T, step):
        b = min(a + step, T)
        piece = ids[0, max(0, a - context) : b].tolist()
        if a - context > 0:
            piece = lm.with_bos(piece)
        ctx = torch.tensor([piece], dtype=torch.long, device=ids.device)
        with torch.no_grad():
            logits = lm.logits_tail(ctx, b - a + 1)[0, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits, ids[0, a:b].to(logits.device), reduction="none")
        out += [round(float(x), 6) for x in nll]
    return out


def _needles(lm: Model, result: AtlasResult) -> list:
    """The needle prompts: the first ``needles`` needles of the retrieval machinery's file at `DEPTHS`."""
    cfg = result.config
    if cfg.needles == 0:
        return []
    from interp.analyses.retrieval import RetrievalConfig
    from interp.experiments._needles import prepare_samples

    samples, _ = prepare_samples(lm, RetrievalConfig(lengths=(cfg.length,), depths=DEPTHS, mask=False))
    ids = list(dict.fromkeys(s.needle_id for s in samples))[: cfg.needles]
    return [s for s in samples if s.needle_id in ids]


def _recall(lm: Model, samples: Sequence, edits: Sequence) -> list[float]:
    """Greedy (teacher-forced) needle recall of each sample with ``edits``; shared prefixes once."""
    from interp.experiments._needles import answer_recall, needle_recall, teacher_answers

    if not samples:
        return []
    if lm.reuses_prefixes:
        answers = teacher_answers(lm, samples, edits=list(edits))
        return [answer_recall(lm, a, s)[0] for a, s in zip(answers, samples)]
    from interp.analyses.retrieval import RetrievalConfig

    rconfig = RetrievalConfig(lengths=(samples[0].length,), mask=False)
    return [needle_recall(lm, s, rconfig, edits)[0] for s in samples]


def conditions(result: AtlasResult, scores: dict, policy_units: Optional[Sequence[tuple[int, int]]]) -> list[dict]:
    """Every (selector, seed, budget) with its windowed KV heads; the policy file's heads first when given.

    Args:
        scores: selector -> seed -> [layer, kv_head] scores.
    """
    cfg, units = result.config, result.units
    out = []
    if policy_units is not None:
        out.append({"selector": "policy-file", "seed": 0, "budget": len(policy_units) / len(units),
                    "units": sorted(policy_units)})  # fmt: skip
    for name in cfg.selectors:
        for seed in range(cfg.seeds) if SELECTORS[name].seeded else (0,):
            for b in cfg.budgets:
                picked = select_units(scores[name][seed], units, n_windowed(b, len(units)))
                out.append({"selector": name, "seed": seed, "budget": b, "units": picked})
    return out


def _timed(fn) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out | {"seconds": round(time.perf_counter() - t0, 2), "cpu_seconds": round(time.process_time() - c0, 2)}


def causal_check(
    lm: Model, result: AtlasResult, held: Sequence[Tensor], store: Store, todo: Sequence[dict]
) -> AtlasResult:
    """Measure the unedited model and every condition of ``todo`` (`conditions`); the result with the causal rows."""
    cfg = result.config
    samples = _needles(lm, result)
    firsts = sorted({result.layers[c["units"][0][0]] for c in todo if c["units"]})
    resid: dict[int, dict[int, Tensor]] = {}

    def base() -> dict:
        nll = []
        for t, ids in enumerate(held):
            got, resid[t] = token_nll(lm, ids, cfg.loss_tokens, (), capture_at=firsts)
            nll.append(got)
        short = [short_nll(lm, ids, cfg.loss_tokens, cfg.key_window, max(1, cfg.key_window // 4)) for ids in held]
        return {"nll": nll, "short": short, "recall": _recall(lm, samples, ())}

    memo: dict[tuple, dict] = {}

    def run_condition(units: list[tuple[int, int]]) -> dict:
        key = tuple(map(tuple, units))
        if key not in memo:
            edits, first = unit_edits(result, units), result.layers[units[0][0]] if units else 0
            nll = []
            for t, ids in enumerate(held):
                if t not in resid or (first > 0 and first not in resid[t]):
                    resid[t] = token_nll(lm, ids, 1, (), capture_at=firsts)[1]  # resumed run: the residuals again
                nll.append(token_nll(lm, ids, cfg.loss_tokens, edits, start=(first, resid[t].get(first)))[0])
            memo[key] = {"nll": nll, "recall": _recall(lm, samples, edits)}
        return memo[key]

    keys = {"base": None} | {f"{c['selector']}-{c['budget']:.4f}-{c['seed']}": c for c in todo}
    settings = {**cfg.settings(), **store.notes, "model": lm.name, "conditions": [[k, c["units"]] for k, c in
                                                                                      list(keys.items())[1:]]}  # fmt: skip
    done = store.map(
        list(keys), lambda k: _timed(base if keys[k] is None else lambda: run_condition(keys[k]["units"])),
        settings=settings, what="atlas: causal check", log="causal.jsonl",
    )  # fmt: skip
    return _assemble(result, done["base"], [(c, done[k]) for k, c in list(keys.items())[1:]])


def _assemble(result: AtlasResult, base: dict, measured: Sequence[tuple[dict, dict]]) -> AtlasResult:
    """Causal rows, frontier rows and the unedited numbers from the measured records."""
    cfg = result.config
    masks = [key_tokens(np.asarray(f), np.asarray(s), cfg.key_margin, cfg.key_max_loss) for f, s in
             zip(base["nll"], base["short"])]  # fmt: skip
    if not masks:
        raise InterpError("the causal check needs at least one held-out window (--causal-texts)")

    def key_mean(rec: dict) -> float:
        vals = [x for nll, m in zip(rec["nll"], masks) for x in np.asarray(nll)[m]]
        return float(np.mean(vals)) if vals else float("nan")

    base_recall = float(np.mean(base["recall"])) if base["recall"] else float("nan")
    rows, groups = [], {}
    for c, rec in measured:
        recall = float(np.mean(rec["recall"])) if rec["recall"] else float("nan")
        rows.append({
            "selector": c["selector"], "seed": c["seed"], "budget": round(c["budget"], 4), "n_kv_heads": len(c["units"]),
            "kv_saved": round(result.saved([tuple(u) for u in c["units"]]), 6),
            "delta_loss": float(np.mean([np.mean(a) - np.mean(b) for a, b in zip(rec["nll"], base["nll"])])),
            "delta_key_loss": key_mean(rec) - key_mean(base), "recall": recall,
        })  # fmt: skip
        groups.setdefault((c["selector"], round(c["budget"], 4)), []).append(rec)
    frontier_rows = [condition_row(s, b, runs, base, masks) for (s, b), runs in groups.items()]
    summary = {
        "loss": float(np.mean([np.mean(x) for x in base["nll"]])), "key_loss": key_mean(base), "recall": base_recall,
        "n_key_tokens": int(sum(m.sum() for m in masks)), "n_loss_tokens": int(sum(m.size for m in masks)),
    }  # fmt: skip
    return with_causal(result, rows, frontier_rows, summary)
