"""ACT's key bias and the rule that computes it inside a forward pass; ZeroTuning's first-token keys.

See `interp.analyses.calibration` for the maths (Yu et al. 2024; Han et al. 2025). `ACTRule` is
what a `interp.hooks.ComputedKeyBias` calls at the head's layer with the live q and k: one kernel
call gives recv_mean (hence the sink set S), a second the mass m_i of each row on S, and
`act_bias` turns m_i into the per-row bias on S.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from jaxtyping import Bool, Float, Shaped
from torch import Tensor

from interp.errors import InterpError
from interp.hooks.families import head_pairs

__all__ = ["ACTRule", "act_bias", "first_token_keys", "head_pairs", "check_beta", "check_gamma", "hidden_sink_mass"]

Head = tuple[int, int]  # (layer, head)


def act_bias(m: Float[Tensor, "*rows"], beta: float = 0.4) -> Float[Tensor, "*rows"]:
    """ACT's per-row key bias b = log(beta (1 - m) / (1 - beta m)) for sink mass m.

    Args:
        m: [...] mass of each query row on the sink set S (NaN for padded rows).
        beta: fraction of the sink mass kept, in (0, 1].

    Returns:
        [...] bias, same dtype; 0 where m is NaN, m <= 0 (nothing to scale) or m >= 1
        (no other key to receive the mass).
    """
    check_beta(beta)
    mm = torch.nan_to_num(m, nan=0.0)
    ok = (mm > 0) & (mm < 1)
    safe = torch.where(ok, mm, torch.full_like(mm, 0.5))
    b = torch.log(beta * (1 - safe) / (1 - beta * safe))
    return torch.where(ok, b, torch.zeros_like(b))


def first_token_keys(
    attention_mask: Optional[Shaped[Tensor, "batch key_pos"]], batch: int = 1, key_pos: Optional[int] = None
) -> Bool[Tensor, "batch key_pos"]:
    """BoolTensor [batch, key_pos] marking each row's first real token (left padding aware)."""
    if attention_mask is None:
        if key_pos is None:
            raise InterpError("first_token_keys needs attention_mask or key_pos")
        keys = torch.zeros(batch, key_pos, dtype=torch.bool)
        keys[:, 0] = True
        return keys
    real = attention_mask.bool()
    first = real.int().argmax(dim=-1)
    keys = torch.zeros_like(real)
    keys[torch.arange(real.shape[0]), first] = True
    return keys & real


@dataclass(frozen=True)
class ACTRule:
    """ACT on one head: its sink set and per-row bias from the head's live q and k (a
    `interp.hooks.ComputedKeyBias` rule).

    Attributes:
        beta: fraction of the sink mass kept (Yu et al. 2024: 0.4).
        tau: sink threshold on recv_mean (0.1).
        min_queries: keys seen by fewer queries are not sinks (see `interp.analyses.sinks`).
        include_first: also scale the first sink (usually position 0); ACT keeps it (False).
        attention: the head's softmax settings: ``lm.attention_kwargs(layer)`` (scale, window,
            soft-cap) with the sink logits of this head only (`for_head`).
        key_padding_mask: [batch, key_pos] HF attention_mask of the batch, or None.
        backend: kernel backend.
    """

    beta: float = 0.4
    tau: float = 0.1
    min_queries: int = 16
    include_first: bool = False
    attention: Optional[dict] = None  # the head's `LoadedModel.attention_kwargs` (scale, window, cap, sinks)
    key_padding_mask: Optional[Tensor] = None
    backend: str = "auto"

    @staticmethod
    def for_head(attention: dict, head: int) -> dict:
        """A layer's attention settings for query head ``head`` alone (its sink logit, if any)."""
        out = dict(attention)
        if out.get("sink_logits") is not None:
            out["sink_logits"] = out["sink_logits"][head : head + 1]
        return out

    def sink_mass(
        self, q: Float[Tensor, "batch 1 query_pos d_head"], k: Float[Tensor, "batch 1 key_pos d_head"]
    ) -> tuple[Bool[Tensor, "batch key_pos"], Float[Tensor, "batch query_pos"]]:
        """(S [batch, key_pos] bool, m [batch, query_pos]) of the head from its q and k (post-RoPE)."""
        from interp.analyses.sinks import sink_members
        from interp.kernels import attention_stats

        attention = dict(self.attention or {"scale": 1.0})
        common = dict(key_padding_mask=self.key_padding_mask, backend=self.backend, **attention)
        cols = attention_stats(q, k, columns=True, **common)
        member, hidden = sink_members(cols.recv_mean[:, 0], self.tau, self.min_queries)
        sinks = member if self.include_first else hidden
        segments = torch.where(sinks, 0, -1).long()
        m = attention_stats(q, k, columns=False, segments=segments, n_segments=1, **common).seg[:, 0, :, 0]
        return sinks, m

    def __call__(
        self, q: Float[Tensor, "batch 1 query_pos d_head"], k: Float[Tensor, "batch 1 key_pos d_head"]
    ) -> tuple[Bool[Tensor, "batch key_pos"], Float[Tensor, "batch query_pos"]]:
        """(keys, bias): the sink set S and ACT's bias `act_bias` of each row's mass on S."""
        sinks, m = self.sink_mass(q, k)
        return sinks, act_bias(m.float(), self.beta)


def check_beta(beta: float) -> None:
    """Raise `InterpError` unless 0 < beta <= 1 (ACT's fraction of sink mass kept)."""
    if not (isinstance(beta, (int, float)) and 0.0 < beta <= 1.0):
        raise InterpError(f"beta must lie in (0, 1], got {beta!r} (ACT uses 0.4; 1 = no change)")


def check_gamma(gamma: float) -> None:
    """Raise `InterpError` unless gamma is a finite number > 0 (ZeroTuning's first-token scale)."""
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma > 0):
        raise InterpError(f"gamma must be a finite number > 0, got {gamma!r} (1 = no change; <1 flattens, >1 sharpens)")


def hidden_sink_mass(
    recv_mean: Float[Tensor, "batch head key_pos"], tau: float = 0.1, min_queries: int = 16, include_first: bool = False
) -> Float[Tensor, " head"]:
    """Per head, the summed recv_mean of its sinks over a batch (ACT's candidate score).

    Args:
        recv_mean: [batch, head, key_pos] column statistic of one layer (NaN at padded keys).
        tau: received-attention threshold of the sink set S (`interp.analyses.sinks.sink_members`).
        min_queries: fewest queries that may see a key for it to join S (same function).
        include_first: count the first member of S too (ACT keeps it out: False).

    Returns:
        [head] float64 sum over batch rows and keys of recv_mean_j, j in S (hidden sinks only
        unless ``include_first``).
    """
    from interp.analyses.sinks import sink_members

    rm = recv_mean.double()
    member, hidden = sink_members(rm, tau, min_queries)
    chosen = member if include_first else hidden
    return torch.where(chosen, rm, 0.0).sum(dim=(0, 2)).cpu()
