"""Path patching (Wang et al. 2022, section 3.1), batched over sender heads.

A sender head's clean-minus-corrupt contribution goes only along the path into chosen receivers'
q, k or v: run 1 is the corrupted run with every head's z frozen at its corrupted value except
the senders' (set to clean); it captures the receivers' inputs, which run 2 (a plain corrupted
run) then receives. MLPs are recomputed in run 1 by default, as in Wang et al. (paths through
MLPs count as part of the path); ``freeze_mlps=True`` freezes them too, leaving only the direct
path. Receivers' q/k/v are post-RoPE, exactly what attention reads, so patching them is exact.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from jaxtyping import Int
from torch import Tensor

from interp.analyses.patching.metrics import Metric, evaluate_metric
from interp.analyses.patching.plan import default_rows, patch_mask
from interp.analyses.patching.results import PatchResult, dense_scores
from interp.analyses.patching.table import PatchTable
from interp.datasets.tasks import TaskBatch
from interp.errors import InterpError
from interp.experiments._base import Store
from interp.experiments.patching.runner import resolve_metric
from interp.experiments.patching.sweeps import answer_logits, check_pair, task_baseline
from interp.hooks import Edit, capture, intervene
from interp.models import Model

__all__ = ["path_patching", "path_patch_task"]


def path_patching(
    lm: Model,
    clean: Int[Tensor, "batch pos"],
    corrupt: Int[Tensor, "batch pos"],
    senders: Int[Tensor, "sender 2"],
    receivers: Sequence[tuple[int, int]],
    receiver_input: str,
    metric: Metric,
    *,
    freeze_mlps: bool = False,
    batch_rows: Optional[int] = None,
    progress: bool = True,
    store: Optional[Store] = None,
) -> PatchTable:
    """Path patching sender head -> receivers' q, k or v (Wang et al. 2022), batched over senders.

    Run 1 (corrupted input): every head's z is frozen at its corrupted value except the sender's,
    which takes its clean value; MLPs are recomputed (or frozen with ``freeze_mlps``); the
    receivers' ``receiver_input`` is captured. Run 2 (corrupted input): only the receivers'
    inputs are replaced by the captured ones; the metric is measured. So the sender's
    clean-minus-corrupt contribution reaches the output only through the receivers' chosen input.

    Args:
        lm: the model.
        clean: LongTensor [batch, pos] clean prompts.
        corrupt: LongTensor [batch, pos] corrupted prompts.
        senders: LongTensor [n_senders, 2] of (layer, head) query heads.
        receivers: (layer, head) pairs; head is a query head for "q" and a kv head for "k"/"v".
        receiver_input: "q", "k" or "v".
        metric: ``logits -> [batch]``.
        freeze_mlps: freeze MLP outputs at their corrupted values in run 1 (direct path only).
        batch_rows: rows per forward (see `activation_patching`).
        progress: show a progress bar (the ``store``'s: `Store.bar`).
        store: the run's `Store` (default: one that keeps nothing).

    Returns:
        A `PatchTable` as `activation_patching` returns (site ``"path:q"``, ``"path:k"`` or
        ``"path:v"``; one patch (layer, head, -1) per sender): ``.values`` [n_senders] the metric
        after each sender's path patch, averaged over prompts, beside the clean and corrupted
        runs' metric, so ``.normalised``, ``.to_dataframe()`` and ``.to_grid()`` [layer, head]
        (NaN for heads not sent from) read as for any sweep. A sender at or above every
        receiver's layer has no path: its value is the unpatched corrupted metric.

    Raises:
        InterpError: bad receiver input, heads or layers out of range, no receivers, or a
            metric that does not return one scalar per prompt.
    """
    check_pair(clean, corrupt)
    if receiver_input not in ("q", "k", "v"):
        raise InterpError(f"receiver input '{receiver_input}' is not one of q, k, v")
    if not receivers:
        raise InterpError("no receivers given: pass (layer, head) pairs of the receiving heads")
    n_recv_heads = lm.arch.n_heads if receiver_input == "q" else lm.arch.n_kv_heads
    recv: dict[int, list[int]] = {}
    for layer, head in receivers:
        lm.arch.check_layer(int(layer))
        if not 0 <= int(head) < n_recv_heads:
            kind = "query" if receiver_input == "q" else "kv"
            raise InterpError(
                f"receiver head {head} out of range: {receiver_input} has {n_recv_heads} {kind} heads (0-{n_recv_heads - 1})"
            )
        recv.setdefault(int(layer), []).append(int(head))
    senders = torch.as_tensor(senders, dtype=torch.long).reshape(-1, 2).cpu()
    for layer, head in senders.tolist():
        lm.arch.check_layer(layer)
        lm.arch.check_head(head)
    n, n_pos = clean.shape
    clean, corrupt = clean.to(lm.device), corrupt.to(lm.device)
    top = max(recv)
    frozen_layers = list(range(top))  # layers that can write into some receiver's input
    if not frozen_layers:
        raise InterpError("receivers in layer 0 read only the embeddings: no head can send to them")
    keep = ("z", "mlp_out") if freeze_mlps else ("z",)
    with capture(lm, layers=frozen_layers, keep=keep) as cap:
        corrupt_value = float(evaluate_metric(metric, answer_logits(lm, corrupt), n).double().mean())
    corrupt_z = {layer: cap["z", layer] for layer in frozen_layers}
    corrupt_mlp = {layer: cap["mlp_out", layer] for layer in frozen_layers} if freeze_mlps else {}
    sender_layers = sorted({s for s in senders[:, 0].tolist() if s < top})
    with capture(lm, layers=sender_layers or [0], keep=("z",)) as cap:
        clean_value = float(evaluate_metric(metric, answer_logits(lm, clean), n).double().mean())
    clean_z = {layer: cap["z", layer] for layer in sender_layers}
    per_pass = max(1, (batch_rows or default_rows(lm.vocab_size, lm.arch.d_model, n, n_pos)) // n)
    out = torch.empty(len(senders), dtype=torch.float64)
    bar = (store or Store()).bar(
        total=len(senders), desc=f"path patching -> {receiver_input}", unit="patch", show=progress
    )
    try:
        for start in range(0, len(senders), per_pass):
            chunk = senders[start : start + per_pass].tolist()
            c = len(chunk)
            edits = []
            for layer in frozen_layers:
                base = corrupt_z[layer].repeat(c, 1, 1, 1)
                rows = [(j, layer, head, -1) for j, (sl, head) in enumerate(chunk) if sl == layer]
                if rows:
                    mask = patch_mask(rows, tuple(base.shape), n, True).to(base.device)
                    base = torch.where(mask.unsqueeze(-1), clean_z[layer].repeat(c, 1, 1, 1), base)
                edits.append(Edit("z", layer, _constant(base)))
                if freeze_mlps:
                    edits.append(Edit("mlp_out", layer, _constant(corrupt_mlp[layer].repeat(c, 1, 1))))
            with intervene(lm, edits), capture(lm, layers=sorted(recv), keep=(receiver_input,)) as cap:
                answer_logits(lm, corrupt.repeat(c, 1))
            edits = [
                Edit(receiver_input, layer, _heads_from(cap[receiver_input, layer], heads))
                for layer, heads in recv.items()
            ]
            with intervene(lm, edits):
                logits = answer_logits(lm, corrupt.repeat(c, 1))
            for j in range(c):
                out[start + j] = evaluate_metric(metric, logits[j * n : (j + 1) * n], n).double().mean()
            del logits
            bar.update(c)
    finally:
        bar.close()
    index = torch.cat([senders, torch.full((len(senders), 1), -1, dtype=torch.long)], dim=1)
    shape = (lm.arch.n_layers, lm.arch.n_heads, n_pos)
    return PatchTable(f"path:{receiver_input}", index, out, clean_value, corrupt_value, shape)


def _constant(value: Tensor) -> Callable[[Tensor], Tensor]:
    return lambda x: value.to(x.dtype)


def _heads_from(value: Tensor, heads: list[int]) -> Callable[[Tensor], Tensor]:
    """Edit function: the given heads [:, heads] come from ``value`` (same batched shape)."""

    def fn(x: Tensor) -> Tensor:
        x = x.clone()
        x[:, heads] = value[:, heads].to(x.dtype)
        return x

    return fn


# --------------------------------------------------------------------------------------------
def path_patch_task(
    lm: Model,
    batch: TaskBatch,
    receivers: Sequence[tuple[int, int]],
    receiver_input: str = "q",
    *,
    senders: Optional[Sequence[tuple[int, int]]] = None,
    metric: Union[str, Metric] = "score",
    freeze_mlps: bool = False,
    batch_rows: Optional[int] = None,
    progress: bool = True,
    store: Optional[Store] = None,
) -> PatchResult:
    """Path patching of a task: every sender head (default: all heads below the deepest
    receiver) -> the receivers' ``receiver_input``. Returns a layer x head `PatchResult`
    (target "path:q" etc.; NaN for heads not used as senders)."""
    base, clean_logits, corrupt_logits = task_baseline(lm, batch)
    fn, metric_name = resolve_metric(metric, batch, clean_logits, corrupt_logits)
    evaluate_metric(fn, clean_logits, batch.n)
    del clean_logits, corrupt_logits
    if senders is None:
        top = max(int(layer) for layer, _ in receivers) if receivers else 0
        senders = [(layer, h) for layer in range(top) for h in range(lm.arch.n_heads)]
    index = torch.tensor([(int(a), int(b)) for a, b in senders], dtype=torch.long).reshape(-1, 2)
    table = path_patching(
        lm,
        batch.clean,
        batch.corrupt,
        index,
        receivers,
        receiver_input,
        fn,
        freeze_mlps=freeze_mlps,
        batch_rows=batch_rows,
        progress=progress,
        store=store,
    )
    shape = (lm.arch.n_layers, lm.arch.n_heads)
    return PatchResult(
        task=batch.task,
        target=f"path:{receiver_input}",
        method="path",
        metric=metric_name,
        axes=("layer", "head"),
        scores=dense_scores(table.index, table.values, ("layer", "head"), shape),
        baseline=base,
        model=lm.name,
        head_axis="head",
    )
