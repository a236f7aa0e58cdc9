"""Repeated random tokens: the standard induction probe (Olsson et al. 2022).

A sequence is one fixed first token (the tokenizer's BOS where it has one, so sink heads keep
their usual sink), then ``length`` distinct random tokens, then the same ``length`` tokens
again. On the second copy every token has exactly one earlier occurrence, so the expected keys
of the previous-token, duplicate-token and induction detectors (`interp.analyses.heads`) are
known exactly. The head detectors read their random sequences from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from jaxtyping import Int
from torch import Tensor

from interp.errors import InterpError

__all__ = ["repeated_random_tokens"]


def repeated_random_tokens(
    n_seqs: int, length: int, vocab: int, seed: int = 0, first: Optional[int] = None, avoid: Sequence[int] = ()
) -> Int[Tensor, "seq pos"]:
    """[n_seqs, 1 + 2 * length] sequences: a fixed first token, then ``length`` distinct random tokens twice.

    Args:
        n_seqs: sequences drawn.
        length: random tokens per copy.
        vocab: tokens are drawn from 0..vocab-1, except ``avoid`` (special tokens).
        seed: seed of the draw (the same seed gives the same sequences).
        first: the first token (BOS where the tokenizer has one); None = a random token.
        avoid: token ids never drawn.

    Raises:
        InterpError: ``length`` needs more distinct tokens than the vocabulary offers.
    """
    allowed = torch.ones(vocab, dtype=torch.bool)
    allowed[[a for a in avoid if 0 <= a < vocab]] = False
    pool = allowed.nonzero()[:, 0]
    if pool.numel() < length + 1:
        raise InterpError(f"length={length} needs more distinct tokens than the vocabulary's {pool.numel()}: lower it")
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n_seqs):
        pick = pool[torch.randperm(pool.numel(), generator=gen)[: length + 1]]
        head = pick[:1] if first is None else torch.tensor([first])
        rows.append(torch.cat([head, pick[1:], pick[1:]]))
    return torch.stack(rows)
