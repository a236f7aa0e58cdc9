"""Patching metrics (docs/METRICS.md#circuit-patching): functions of the answer-position logits.

The logit difference LD = logit(correct) - logit(wrong) at the last position; the normalised
score (LD_patched - LD_corrupt) / (LD_clean - LD_corrupt) is 1 when a patch restores the clean
behaviour and 0 when it does nothing; KL(p_clean || p_patched) of the next-token distribution.
A metric maps logits ``[batch, 1, vocab]`` to one value per prompt ``[batch]``.
"""

from __future__ import annotations

from typing import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.analyses.patching.config import METRICS
from interp.datasets.tasks import TaskBatch
from interp.errors import InterpError

__all__ = ["Metric", "logit_diff", "make_metric", "evaluate_metric"]

Metric = Callable[[torch.Tensor], torch.Tensor]  # answer-position logits [batch, 1, vocab] -> [batch]


def logit_diff(
    logits: Float[Tensor, "batch *pos vocab"], correct: Int[Tensor, " batch"], wrong: Int[Tensor, " batch"]
) -> Float[Tensor, " batch"]:
    """LD per prompt at the last position.

    Args:
        logits: [batch, pos, vocab] (or [batch, vocab] at the answer position).
        correct: LongTensor [batch] correct answer tokens.
        wrong: LongTensor [batch] wrong answer tokens.

    Returns:
        [batch] logit(correct) - logit(wrong).
    """
    last = logits[:, -1] if logits.dim() == 3 else logits
    rows = torch.arange(last.shape[0], device=last.device)
    return last[rows, correct.to(last.device)] - last[rows, wrong.to(last.device)]


def make_metric(
    name: str,
    batch: TaskBatch,
    clean_logits: Float[Tensor, "batch pos vocab"],
    corrupt_logits: Float[Tensor, "batch pos vocab"],
) -> Metric:
    """A metric ``logits [batch, pos, vocab] -> [batch]`` for ``batch`` (one value per prompt).

    Metrics read the last position only (the sweeps pass ``[batch, 1, vocab]``).

    - "logit_diff": LD per prompt.
    - "score": (LD_i - mean LD_corrupt) / (mean LD_clean - mean LD_corrupt); its mean over
      prompts is the normalised score of the mean LD (linear, so averaging commutes).
    - "kl": KL(p_clean || p_patched) of the next-token distribution at the last position.

    Raises:
        InterpError: unknown name, or a "score" whose clean and corrupted means coincide.
    """
    correct, wrong = batch.correct, batch.wrong
    if name == "logit_diff":
        return lambda logits: logit_diff(logits, correct, wrong)
    if name == "score":
        ld_clean = float(logit_diff(clean_logits, correct, wrong).mean())
        ld_corrupt = float(logit_diff(corrupt_logits, correct, wrong).mean())
        gap = ld_clean - ld_corrupt
        if abs(gap) < 1e-6:
            raise InterpError(
                f"clean and corrupted prompts have the same mean logit difference ({ld_clean:.4g}): the normalised "
                "score is undefined; use metric 'logit_diff' or 'kl', or a corruption that changes the answer"
            )
        return lambda logits: (logit_diff(logits, correct, wrong) - ld_corrupt) / gap
    if name == "kl":
        # next-token distributions [batch, vocab] at the answer position only; no attention is involved
        log_p_clean = torch.log_softmax(clean_logits[:, -1].double(), -1)

        def kl(logits: torch.Tensor) -> torch.Tensor:
            log_q = torch.log_softmax(logits[:, -1].double(), -1)
            return (log_p_clean.exp() * (log_p_clean - log_q.to(log_p_clean.device))).sum(-1).to(logits.dtype)

        return kl
    raise InterpError(f"unknown metric '{name}': use one of {', '.join(METRICS)} or pass a callable")


def evaluate_metric(metric: Metric, logits: Float[Tensor, "batch pos vocab"], n: int) -> Float[Tensor, " n"]:
    """Per-prompt metric values [n], checked to be one scalar per prompt.

    Raises:
        InterpError: the metric returned another shape (it reduced over prompts, or did not
            reduce over positions and vocabulary).
    """
    out = torch.as_tensor(metric(logits))
    if out.shape != (n,):
        raise InterpError(
            f"the patching metric returned shape {tuple(out.shape)} for {n} prompts: it must return one scalar per "
            f"prompt (a tensor of shape [{n}]); reduce over positions and vocabulary inside the metric, not over prompts"
        )
    return out
