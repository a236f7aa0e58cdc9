"""Pure sink measures over kernel statistics: first-token mass, sink rate, sink sets, no-op sinks.

Each function takes the statistics of `interp.kernels.attention_stats` (one layer, one window,
or stacked over texts) and returns numbers or masks; nothing here runs a model.
"""

from __future__ import annotations

import unicodedata
from typing import Optional

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import InterpError

__all__ = [
    "TOKEN_TYPES",
    "first_token_mass",
    "hidden_sinks",
    "noop_sinks",
    "sink_members",
    "sink_rate",
    "token_type",
    "value_ratio",
]


TOKEN_TYPES = ("special", "newline", "whitespace", "punctuation", "number", "stopword", "other")
_STOPWORDS = frozenset(
    """a an the and or but if then else of to in on at by for with from as into onto over under
    is are was were be been being am do does did has have had it its this that these those he she
    they we you i me my our your their his her him them us not no nor so than there here which who
    whom whose what when where why how all any each both some such only own same too very can will
    just should would could may might must shall""".split()
)


def first_token_mass(
    sink: Float[Tensor, "*batch head query_pos"], sink_tokens: int = 1, window: Optional[int] = None
) -> Tensor:
    """Mean of sink_i(n) over the query rows that see more than the sink and see position 0.

    Rows n <= i (a row i < n sees nothing but the sink); in a windowed layer also i < W, the
    rows for which position 0 is in sight (the others put no mass there by construction).

    Args:
        sink: the kernel's row statistic ``sink`` for every query row (padded rows NaN).
        sink_tokens: n, the number of first tokens the statistic counts.
        window: the layer's sliding window W, or None (global attention).

    Returns:
        [*batch, head] float64, NaN-rows ignored.
    """
    rows = sink[..., sink_tokens : window if window is not None else None].double()
    if rows.shape[-1] == 0:
        raise InterpError(f"no query row sees past the first {sink_tokens} token(s) within the window of {window}")
    return torch.nanmean(rows, dim=-1)


def sink_rate(alpha: np.ndarray | Tensor, eps: float = 0.3) -> float:
    """Gu et al. 2024 sink rate: percent of entries (sample, layer, head) with alpha > eps."""
    a = torch.as_tensor(np.asarray(alpha, dtype=float) if not isinstance(alpha, Tensor) else alpha)
    if a.numel() == 0:
        raise InterpError("no alpha values to compute a sink rate from")
    return float(100.0 * (a > eps).double().mean())


def sink_members(
    recv_mean: Float[Tensor, "*batch key_pos"], tau: float = 0.1, min_queries: int = 1, window: Optional[int] = None
) -> tuple[Tensor, Tensor]:
    """Sink set S and its hidden part, per head (Yu et al. 2024).

    S = {j : recv_mean_j > tau and at least ``min_queries`` queries see j}; the hidden sinks
    are S without its first member (the ordinary sink, usually position 0). With causal
    attention the keys seen by fewer than m queries are the last m - 1 key indices (left
    padding does not change that). NaN (padded keys) is never in S.

    Args:
        recv_mean: the kernel's column statistic.
        tau: threshold.
        min_queries: 1 = docs/METRICS.md exactly.

    Returns:
        (member, hidden): bool tensors shaped like ``recv_mean``.
    """
    key_pos = recv_mean.shape[-1]
    needed = min_queries if window is None else min(min_queries, window)
    eligible = torch.arange(key_pos, device=recv_mean.device) <= key_pos - needed
    member = (recv_mean > tau) & eligible
    first = member.int().cumsum(-1) == 1  # true from the first hit until the second
    hidden = member & ~(first & member)
    return member, hidden


def hidden_sinks(
    recv_mean: Float[Tensor, "*batch key_pos"], tau: float = 0.1, min_queries: int = 1, window: Optional[int] = None
) -> Tensor:
    """Bool mask of the hidden sinks: S without its first member (see `sink_members`)."""
    return sink_members(recv_mean, tau, min_queries, window)[1]


def token_type(token: str, special: bool = False) -> str:
    """Coarse type of a token string, one of `TOKEN_TYPES`.

    "special" (tokenizer special tokens, e.g. BOS), "newline" (only whitespace, with a line
    break), "whitespace", "punctuation" (only punctuation or symbol characters), "number"
    (digits), "stopword" (a short English function word, case-insensitive), "other".
    """
    if special:
        return "special"
    stripped = token.strip()
    if not stripped:
        return "newline" if ("\n" in token or "\r" in token) else "whitespace"
    if all(unicodedata.category(c)[0] in "PS" for c in stripped):
        return "punctuation"
    if stripped.isdigit():
        return "number"
    if stripped.lower() in _STOPWORDS:
        return "stopword"
    return "other"


def value_ratio(weighted: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """Value-weighted first-token mass over first-token attention mass (same shape; NaN where mass is 0).

    1 means the first token moves the head's output in proportion to the attention it gets;
    well under 1, its W_O^h v is small next to the other keys' (it takes mass and adds little).
    """
    weighted, mass = np.asarray(weighted, dtype=float), np.asarray(mass, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mass > 0, weighted / np.where(mass > 0, mass, 1.0), np.nan)


def noop_sinks(
    alpha0: np.ndarray, mass: np.ndarray, weighted: np.ndarray, eps: float = 0.3, ratio: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Which first-token sinks are active and which are no-ops (docs/METRICS.md#value-weighted-sinks).

    A sink is alpha_0 > eps (Gu et al. 2024). It is a *no-op* when its value-weighted first-token
    mass is below ``ratio`` times its first-token attention mass (`value_ratio` < ratio): the
    first token then adds less than ``ratio`` of what its attention share would move.

    Args:
        alpha0: alpha_0 per entry (any shape, e.g. [text, layer, head]).
        mass: the first-token mass (`first_token_mass` of ``sink``), same shape.
        weighted: the same mean over the value-weighted row statistic ``w_sink``, same shape.
        eps: Gu et al. sink threshold.
        ratio: the no-op threshold on `value_ratio`.

    Returns:
        (sink, noop): bool arrays; noop implies sink. NaN entries are neither.
    """
    alpha0 = np.asarray(alpha0, dtype=float)
    sink = alpha0 > eps
    noop = sink & (value_ratio(weighted, mass) < ratio)
    return sink, noop
