"""Scoring a choice set: each prompt's answer from its answer-choice logits, and the search criterion."""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float, Integer
from torch import Tensor

__all__ = ["choice_scores", "better"]


def choice_scores(
    logits: Float[Tensor, "batch n_choices"], answers: Integer[Tensor, " batch"]
) -> tuple[np.ndarray, np.ndarray]:
    """Prediction and correct-answer log-probability of each prompt from its answer-choice logits.

    A softmax over the answer-label logits (vocabulary, not attention), in float64.

    Args:
        logits: [batch, n_choices] next-token logits of each choice's first token.
        answers: [batch] index of the correct choice.

    Returns:
        (pred [batch] int: argmax choice, logp [batch] float: log-softmax of the correct choice).
    """
    # a softmax over the [batch, choice] answer logits, not over attention (that comes from interp.kernels)
    scores = torch.log_softmax(logits.double(), dim=-1).cpu()
    answers = answers.cpu().long()
    return scores.argmax(-1).numpy(), scores[torch.arange(len(answers)), answers].numpy()


def better(rec: dict, best: dict) -> bool:
    """Search criterion: higher calibration accuracy, or the same accuracy and a higher mean
    log-prob of the correct answer (so a search can still move when accuracy is at 100%)."""
    return (rec["accuracy"], rec["mean_logp"]) > (best["accuracy"], best["mean_logp"])
