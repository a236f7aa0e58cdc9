"""The model-driving half of activation and attribution patching: one generic sweep each.

`activation_patching` patches clean activations into the corrupted run, many patches per forward
pass, through one `interp.hooks.Edit` per layer that swaps the masked entries of the site's
canonical tensor (`interp.analyses.patching.plan`). Three savings, all exact: the unembedding runs
at the answer position only (`Model.logits_tail`); a patch whose clean and corrupted values are
equal in every prompt is not run (its value is the unpatched metric); and, where the model
reuses prefixes (`Model.reuses_prefixes`), a pass whose earliest patch is at position p starts
from the corrupted run's keys and values of positions < p (which no patch can change, attention
being causal) and from its residual stream entering the pass's lowest patched layer
(`interp.hooks.start_at_layer`). See ``benchmarks/patching.py`` for the speed against
transformer-lens.

`attribution_patching` reads the metric's gradient at every site from one forward and one
backward pass on the corrupted prompts, by adding a zero tensor that requires grad to each site
(an Edit returning ``x + delta``), so no hook needs ``retain_grad``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping, Optional

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.analyses.patching.metrics import Metric, evaluate_metric
from interp.analyses.patching.plan import (
    HEAD_SITES,
    attribution_estimates,
    default_rows,
    first_difference,
    kv_fits,
    patch_mask,
    plan_passes,
    swap,
)
from interp.analyses.patching.results import Baseline, baseline_of
from interp.analyses.patching.table import PatchTable
from interp.datasets.tasks import TaskBatch
from interp.errors import InterpError
from interp.experiments._base import Store
from interp.hooks import KV_SITES, Edit, capture, intervene, start_at_layer
from interp.models import Model

__all__ = [
    "Patch",
    "OnPass",
    "task_baseline",
    "activation_patching",
    "attribution_patching",
    "answer_logits",
    "check_pair",
]

Patch = tuple[int, int, int]  # (layer, head, pos), -1 = all / not applicable
OnPass = Callable[[list[Patch], list[float]], None]  # called after each forward pass with its patches' values


def answer_logits(
    lm: Model, ids: Int[Tensor, "batch pos"], *, grad: bool = False, past: Any = None
) -> Float[Tensor, "batch 1 vocab"]:
    """Logits [batch, 1, vocab] at the last (answer) position: every metric here reads only
    that position (`Model.logits_tail`; ``past``: a prefix KV cache, see `_prefix_cache`)."""
    return lm.logits_tail(ids, 1, past=past, grad=grad)


def check_pair(clean: Tensor, corrupt: Tensor) -> None:
    """Raise unless clean and corrupted token batches are both [batch, pos] of one shape."""
    if clean.dim() != 2 or clean.shape != corrupt.shape:
        raise InterpError(
            f"clean {tuple(clean.shape)} and corrupted {tuple(corrupt.shape)} token batches must both be [batch, pos] of "
            "the same shape: patching copies activations position by position, so each corrupted prompt must "
            "tokenize to the same length as its clean prompt (change only single-token words)"
        )


def task_baseline(lm: Model, batch: TaskBatch) -> tuple[Baseline, Tensor, Tensor]:
    """Clean and corrupted forward passes: the task's accuracy and logit differences.

    Returns:
        (Baseline, clean logits [batch, 1, vocab], corrupted logits [batch, 1, vocab]) at the
        answer position.
    """
    clean_logits = answer_logits(lm, batch.clean.to(lm.device))
    corrupt_logits = answer_logits(lm, batch.corrupt.to(lm.device))
    return baseline_of(clean_logits, corrupt_logits, batch.correct, batch.wrong), clean_logits, corrupt_logits


def _prefix_cache(lm: Model, kv: dict[int, tuple[Tensor, Tensor]], start: int, copies: int) -> Any:
    """A KV cache (`Model.new_cache`) with the corrupted run's keys/values of positions ``< start``,
    tiled ``copies`` times.

    Positions before the earliest patched position are identical in every patched run (attention
    is causal), so a by-position patch at position p needs only positions >= p recomputed; the
    cache holds the rest. Keys are post-RoPE as captured, which is what the cache stores.
    """
    cache = lm.new_cache()  # keeps every key: exact also on sliding-window layers, under any capture
    for layer in range(lm.arch.n_layers):
        k, v = kv[layer]
        reps = (copies,) + (1,) * (k.dim() - 1)
        cache.update(k[..., :start, :].repeat(*reps), v[..., :start, :].repeat(*reps), layer)
    return cache


def _check_index(lm: Model, site: str, index: Tensor, n_pos: int) -> None:
    """Refuse a head or position outside the model or the prompts (layers: `capture` checks them)."""
    heads, pos = index[:, 1], index[:, 2]
    n_heads, kind = (lm.arch.n_kv_heads, "kv heads") if site in KV_SITES else (lm.arch.n_heads, "heads")
    bad = heads[(heads < -1) | (heads >= n_heads)]
    if len(bad):
        raise InterpError(f"head {int(bad[0])} out of range for site '{site}' ({kind} 0-{n_heads - 1}, or -1 for all)")
    bad = pos[(pos < -1) | (pos >= n_pos)]
    if len(bad):
        raise InterpError(
            f"position {int(bad[0])} out of range (the prompts have {n_pos} positions: 0-{n_pos - 1}, or -1 for all)"
        )


def activation_patching(
    lm: Model,
    clean: Int[Tensor, "batch pos"],
    corrupt: Int[Tensor, "batch pos"],
    site: str,
    index: Int[Tensor, "patch 3"],
    metric: Metric,
    *,
    batch_rows: Optional[int] = None,
    progress: bool = True,
    done: Optional[Mapping[Patch, float]] = None,
    on_pass: Optional[OnPass] = None,
    store: Optional[Store] = None,
) -> PatchTable:
    """Patch clean activations into the corrupted run, many patches per forward pass.

    Args:
        lm: the model (HF or TL backend).
        clean: LongTensor [batch, pos] clean prompts.
        corrupt: LongTensor [batch, pos] corrupted prompts, same shape.
        site: canonical site: z, q, k, v (head sites; k/v index kv heads), resid_pre,
            attn_out or mlp_out.
        index: LongTensor [n_patches, 3] of (layer, head, pos); head -1 = all heads (and must
            be -1 for residual sites), pos -1 = all positions.
        metric: ``logits -> [batch]``, one scalar per prompt; it receives the logits at the
            answer (last) position, ``[batch, 1, vocab]``, so ``logits[:, -1]`` works as in
            transformer-lens metrics.
        batch_rows: rows (copies x prompts) per forward; default keeps one pass near 256 MiB.
        progress: show a progress bar.
        done: values of patches (layer, head, pos) finished by an earlier, interrupted run of
            the same sweep: they are not run again (resume; see `interp.experiments.patching.run`).
        on_pass: called after each forward pass with its patches and their values (to store
            them as they finish).
        store: the run's `Store`: its progress bar and its map of the passes over the ranks
            (default: a store that keeps nothing).

    Returns:
        A `PatchTable`: per patch the metric averaged over prompts (``.values`` [n_patches]) and
        its normalised score, labelled by layer, head and position (``.to_dataframe()``,
        ``.to_grid()`` [layer, head] or [layer, head, position], ``.top(k)``). Launched on
        several ranks, each runs its share of the passes (those of a one-process run) and every
        rank returns every value.

    Raises:
        InterpError: mismatched clean/corrupted shapes, a head given for a residual site, or a
            metric that does not return one scalar per prompt.
    """
    store = store if store is not None else Store()
    check_pair(clean, corrupt)
    index = torch.as_tensor(index, dtype=torch.long).reshape(-1, 3).cpu()
    has_head = site in HEAD_SITES
    if not has_head and bool((index[:, 1] >= 0).any()):
        raise InterpError(f"site '{site}' has no head axis: give head -1 for every patch")
    n, n_pos = clean.shape
    _check_index(lm, site, index, n_pos)
    clean, corrupt = clean.to(lm.device), corrupt.to(lm.device)
    layers = sorted(set(index[:, 0].tolist()))
    with capture(lm, layers=layers, keep=(site,)) as cap:
        clean_logits = answer_logits(lm, clean)
    clean_act = {layer: cap[site, layer] for layer in layers}
    clean_value = float(evaluate_metric(metric, clean_logits, n).double().mean())
    del clean_logits
    # One corrupted pass gives (a) the site's corrupted values, hence each patch's first position
    # where the values it copies differ from the corrupted ones in some prompt (a patch with none
    # is a no-op); (b) where the model reuses prefixes, every layer's keys and values, so a pass
    # whose earliest patch is at p recomputes only positions >= p; and (c) the residual stream
    # entering each patched layer, so a pass whose patches all sit at layer L or above starts there.
    first_token = int((clean != corrupt).any(0).float().argmax()) if bool((clean != corrupt).any()) else n_pos
    fits = kv_fits(lm.arch, n, n_pos)
    reuse = lm.reuses_prefixes and (int(index[:, 2].max()) > 0 or first_token > 0) and fits
    skip = lm.reuses_prefixes and max(layers) > 0 and fits
    keep = (site,) + (("k", "v") if reuse else ()) + (("resid_pre",) if skip else ())
    with capture(lm, layers=None if reuse else layers, keep=tuple(dict.fromkeys(keep))) as cap:
        base_logits = answer_logits(lm, corrupt)
    corrupt_act = {layer: cap[site, layer] for layer in layers}
    kv = {layer: (cap["k", layer], cap["v", layer]) for layer in range(lm.arch.n_layers)} if reuse else None
    resid = {layer: cap["resid_pre", layer] for layer in layers} if skip else None
    unpatched = evaluate_metric(metric, base_logits, n).double().mean()
    first = torch.tensor(
        [first_difference(clean_act[la], corrupt_act[la], h, p, has_head) for la, h, p in index.tolist()],
        dtype=torch.long,
    )
    noop = first >= n_pos
    per_pass = max(1, (batch_rows or default_rows(lm.vocab_size, lm.arch.d_model, n, n_pos)) // n)
    out = torch.full((len(index),), float(unpatched), dtype=torch.float64)
    if done:
        noop = noop | _resume(out, index, noop, done)
    todo = torch.nonzero(~noop).flatten()
    bar = store.bar(total=len(index), desc=f"patching {site}", unit="patch", show=progress)
    bar.update(len(index) - len(todo))
    passes = plan_passes(
        first[todo], per_pass, n, n_pos, reuse=reuse, layer=index[todo, 0] if resid is not None else None
    )

    def run_passes(keys: list, finished: Callable[[str, Any], None]) -> None:  # this rank's share of the passes
        for key in keys:
            which = todo[passes[int(key.removeprefix("pass-"))]]
            chunk = index[which].tolist()
            c = len(chunk)
            start = int(first[which].min()) if kv is not None else 0
            # k and v span every key position (cached ones included); other sites only the new ones
            offset = 0 if site in ("k", "v") else start
            edits = _patch_edits(site, chunk, clean_act, offset, n, has_head)
            past = _prefix_cache(lm, kv, start, c) if start > 0 else None
            low = min(row[0] for row in chunk)
            with contextlib.ExitStack() as stack:
                if resid is not None and low > 0:
                    stack.enter_context(start_at_layer(lm, low, resid[low][:, start:].repeat(c, 1, 1)))
                stack.enter_context(intervene(lm, edits))
                logits = answer_logits(lm, corrupt[:, start:].repeat(c, 1), past=past)
            for j in range(c):
                out[which[j]] = evaluate_metric(metric, logits[j * n : (j + 1) * n], n).double().mean()
            del logits, past
            if on_pass is not None:
                on_pass([tuple(row) for row in chunk], out[which].tolist())
            finished(key, out[which].tolist())
            bar.update(c)

    try:  # the passes (and so every value) are those of a one-process run, shared over the ranks
        keys = [f"pass-{i}" for i in range(len(passes))]
        got = store.map(keys, compute_many=run_passes, log=None, what="patch passes", progress=False, idle_ok=True)
    finally:
        bar.close()
    for key, values in got.items():
        out[todo[passes[int(key.removeprefix("pass-"))]]] = torch.tensor(values, dtype=torch.float64)
    return PatchTable(site, index, out, clean_value, float(unpatched), _grid_shape(lm, site, n_pos))


def _resume(out: Tensor, index: Tensor, noop: Tensor, done: Mapping[Patch, float]) -> Tensor:
    """Fill ``out`` with the values an earlier run finished; returns which patches those are."""
    finished = torch.tensor([tuple(row) in done for row in index.tolist()], dtype=torch.bool)
    for i in torch.nonzero(finished & ~noop).flatten().tolist():
        out[i] = float(done[tuple(index[i].tolist())])
    return finished


def _patch_edits(
    site: str, chunk: list, clean_act: Mapping[int, Tensor], offset: int, n: int, has_head: bool
) -> list[Edit]:
    """The edits of one pass: copy i of the ``n`` prompts gets patch ``chunk[i]`` (layer, head, pos),
    the clean activations from position ``offset`` on (the positions the pass recomputes)."""
    edits = []
    for layer in sorted({row[0] for row in chunk}):
        rows = [(j, la, h, p - offset if p >= 0 else p) for j, (la, h, p) in enumerate(chunk) if la == layer]
        act = clean_act[layer][..., offset:, :] if has_head else clean_act[layer][:, offset:]
        source = act.repeat(len(chunk), *([1] * (act.dim() - 1)))
        mask = patch_mask(rows, tuple(source.shape), n, has_head).to(act.device)
        edits.append(Edit(site, layer, swap(mask, source)))
    return edits


def _grid_shape(lm: Model, site: str, n_pos: int) -> tuple[int, int, int]:
    """(layers, heads, positions) of a sweep's table: kv heads for k and v, no heads for residual sites."""
    heads = {"q": lm.arch.n_heads, "z": lm.arch.n_heads, "k": lm.arch.n_kv_heads, "v": lm.arch.n_kv_heads}
    return (lm.arch.n_layers, heads.get(site, 0), n_pos)


def attribution_patching(
    lm: Model,
    clean: Int[Tensor, "batch pos"],
    corrupt: Int[Tensor, "batch pos"],
    site: str,
    index: Int[Tensor, "patch 3"],
    metric: Metric,
) -> PatchTable:
    """First-order estimate of every patch in ``index`` from one forward and one backward pass.

    For a patch of entries a (a head, a position, or both) the estimate of
    M(patched) - M(corrupt) is sum over those entries of (a_clean - a_corrupt) * dM/da,
    with M the metric averaged over prompts, the gradient taken on the corrupted run
    (Nanda 2023, "Attribution patching").

    Args: as `activation_patching`.

    Returns:
        A `PatchTable` of the estimates (``.values`` [n_patches], ``effect=True``: differences
        from the corrupted run, so ``normalised`` divides them by metric(clean) - metric(corrupted)).
    """
    check_pair(clean, corrupt)
    index = torch.as_tensor(index, dtype=torch.long).reshape(-1, 3).cpu()
    n = clean.shape[0]
    clean, corrupt = clean.to(lm.device), corrupt.to(lm.device)
    layers = sorted(set(index[:, 0].tolist()))
    with capture(lm, layers=layers, keep=(site,)) as cap:
        clean_logits = answer_logits(lm, clean)
    clean_act = {layer: cap[site, layer] for layer in layers}
    clean_value = float(evaluate_metric(metric, clean_logits, n).double().mean())
    del clean_logits
    corrupt_act: dict[int, Tensor] = {}
    deltas: dict[int, Tensor] = {}

    def probe(layer: int) -> Callable[[Tensor], Tensor]:
        def fn(x: Tensor) -> Tensor:
            corrupt_act[layer] = x.detach()
            deltas[layer] = torch.zeros_like(x, requires_grad=True)
            return x + deltas[layer]

        return fn

    with intervene(lm, [Edit(site, layer, probe(layer)) for layer in layers]):
        logits = answer_logits(lm, corrupt, grad=True)
    value = evaluate_metric(metric, logits, n).mean()
    grads = torch.autograd.grad(value, [deltas[layer] for layer in layers], allow_unused=True)
    estimates = attribution_estimates(index, clean_act, corrupt_act, dict(zip(layers, grads)), site in HEAD_SITES)
    shape = _grid_shape(lm, site, clean.shape[1])
    return PatchTable(site, index, estimates.double(), clean_value, float(value.detach()), shape, effect=True)
