"""Preplan and anchor tokens: the reasoning rhythm read off local and global attention heads.

Li et al. 2025, "Attention Illuminates LLM Reasoning: The Preplan-and-Anchor Rhythm Enables
Fine-Grained Policy Optimization" (arXiv 2510.13554); definitions in
docs/METRICS.md#preplan-and-anchor-tokens. Over the response positions R of a prompt + response:

- every head (l, h) of the chosen layers gets a span d(l, h) = mean over t in R of dist_t; the
  heads in the lowest `local_quantile` of d are *local*, those in the highest
  `global_quantile` are *global*;
- WAAD_t = mean over local heads of waad_t(W) (windowed attention distance: how far back the
  token that is being written reaches, clipped at W);
- FAI_s = mean over global heads of band_s(lo, hi) (how much attention token s receives from
  the tokens lo..hi after it);
- preplan tokens: Delta_t = |WAAD_t - WAAD_{t+1}| in its top `preplan_quantile` (a jump in
  the local rhythm: a phrase ends and the next one reaches further back);
- anchor tokens: FAI_s in its top `anchor_quantile` (tokens later reasoning keeps returning to);
- coupling: an anchor t is *locally dominated* when WAAD_t <= tau_waad and a preplan token lies
  in the k tokens before it.

Every attention number comes from `interp.kernels.attention_stats` (row statistics dist and
waad on the response rows, column statistic band), computed layer by layer inside the forward
pass (`interp.hooks.capture(on_layer=...)`): only [layer, head, response] statistics are kept,
so memory is linear in T. No [T, T] attention is built here.

This module is pure: functions over statistics (`default_layers`, `bottom_quantile`,
`top_quantile`, `head_groups`, `waad_jumps`, `couple_anchors`, `layer_statistics` (the kernel
on captured q, k), `analyse`), the frozen `PreplanConfig`, `PreplanResult` (one prompt) and
`PreplanRun` (every prompt of a run). The runner that drives the model (greedy answer, one
forward pass per prompt with ``interp.hooks.capture(on_layer=...)``) is
`interp.experiments.preplan`; the prompts come from `interp.datasets.prompts`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Optional

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from interp.analyses._config import Config
from interp.datasets.prompts import Prompt
from interp.errors import InterpError

__all__ = [
    "PreplanConfig",
    "PreplanResult",
    "PreplanRun",
    "PreplanStats",
    "default_layers",
    "bottom_quantile",
    "top_quantile",
    "head_groups",
    "waad_jumps",
    "couple_anchors",
    "layer_statistics",
    "analyse",
]

_BACKENDS = ("auto", "reference", "torch", "triton")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreplanConfig(Config):
    """Settings of the preplan-and-anchor analysis (defaults: Li et al. 2025).

    Attributes:
        prompts: the prompts to score (`interp.datasets.prompts.Prompt`: a question and
            optionally the response to score); None = every shipped math word problem.
        layers: layers whose heads are grouped; None = `n_default_layers` layers evenly spaced in
            [floor(L/3), floor(2L/3)] (the paper's choice, see `default_layers`).
        n_default_layers: how many layers the default picks.
        window: W of waad_t(W), the WAAD clip in tokens.
        band: (lo, hi) of band_s: FAI_s averages A_is over queries s+lo <= i <= min(T-1, s+hi).
        local_quantile: share of heads with the lowest span called local.
        global_quantile: share of heads with the highest span called global.
        preplan_quantile: share of response tokens, by Delta_t = |WAAD_t - WAAD_{t+1}|, marked
            preplan. docs/METRICS.md says only "top quantile"; 0.4 is the share the paper uses for
            its token selections (the same 40% as for anchors). The paper text was not at hand
            when this was written: check it and set this explicitly when reproducing its
            numbers.
        anchor_quantile: share of response tokens, by FAI, marked anchor (top 40%, docs/METRICS.md).
        tau_waad: an anchor with WAAD_t <= tau_waad counts as locally dominated. None (default)
            = the median WAAD over the response, a scale-free cut (docs/METRICS.md gives no number).
        coupling_k: a preplan token must lie in the k tokens before a locally dominated anchor.
        max_new_tokens: greedy generation length when no response is given.
        chat: wrap the prompt in the model's chat template (with the assistant turn opened).
        backend: `interp.kernels` backend ("auto", "reference" = float64 materialised, "torch",
            "triton").
        chunk_size: query rows per kernel chunk (None = the kernel's choice).
    """

    prompts: Optional[tuple[Prompt, ...]] = None  # None: every shipped math word problem
    layers: Optional[tuple[int, ...]] = None  # None: 5 evenly spaced in [L/3, 2L/3]
    n_default_layers: int = 5  # layers in the default choice (paper: 5)
    window: int = 10  # W of WAAD (paper: 10)
    band: tuple[int, int] = (10, 100)  # (lo, hi) of FAI (paper: 10, 100)
    local_quantile: float = 0.3  # lowest 30% of spans = local heads (paper)
    global_quantile: float = 0.3  # highest 30% of spans = global heads (paper)
    preplan_quantile: float = 0.4  # top 40% of WAAD jumps = preplan tokens
    anchor_quantile: float = 0.4  # top 40% of FAI = anchor tokens (paper)
    tau_waad: Optional[float] = None  # None: median WAAD of the response
    coupling_k: int = 3  # preplan within k tokens before the anchor (paper: k <= 3)
    max_new_tokens: int = 128  # greedy tokens when no response is given
    chat: bool = True  # wrap the prompt in the chat template
    backend: str = "auto"  # interp.kernels backend
    chunk_size: Optional[int] = None  # kernel query chunk (None: kernel default)

    def validate(self) -> None:
        """Raise `InterpError` on settings outside their range; normalise band, layers, prompts."""
        for name in ("local_quantile", "global_quantile", "preplan_quantile", "anchor_quantile"):
            q = getattr(self, name)
            if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 < float(q) < 1.0:
                raise InterpError(f"{name} must be a share strictly between 0 and 1 (e.g. 0.3), got {q!r}")
        if self.local_quantile + self.global_quantile > 1.0:
            raise InterpError(
                f"local_quantile + global_quantile = {self.local_quantile + self.global_quantile:g} > 1: "
                "a head would be both local and global; keep the sum at most 1 (paper: 0.3 + 0.3)"
            )
        band = self.band
        if not (isinstance(band, (tuple, list)) and len(band) == 2 and all(_is_int(x) for x in band)):
            raise InterpError(f"band must be a pair of ints (lo, hi), e.g. (10, 100); got {band!r}")
        lo, hi = int(band[0]), int(band[1])
        if lo > hi:
            raise InterpError(f"band lo={lo} > hi={hi}: FAI averages queries s+lo..s+hi, pass lo <= hi (e.g. 10, 100)")
        if lo < 0:
            raise InterpError(f"band lo={lo} < 0: queries before a key cannot attend to it; pass lo >= 0 (e.g. 10)")
        object.__setattr__(self, "band", (lo, hi))
        for name, least in (("window", 1), ("n_default_layers", 1), ("coupling_k", 1), ("max_new_tokens", 1)):
            v = getattr(self, name)
            if not _is_int(v) or v < least:
                raise InterpError(f"{name} must be an int >= {least}, got {v!r}")
        if self.tau_waad is not None and (
            isinstance(self.tau_waad, bool) or not isinstance(self.tau_waad, (int, float)) or not math.isfinite(self.tau_waad)
        ):
            raise InterpError(f"tau_waad must be a finite number or None (median WAAD), got {self.tau_waad!r}")
        if self.layers is not None:
            layers = tuple(self.layers)
            if not layers or not all(_is_int(x) for x in layers):
                raise InterpError(f"layers must be a non-empty list of ints (or None for the default), got {self.layers!r}")
            object.__setattr__(self, "layers", tuple(sorted(set(int(x) for x in layers))))
        if self.backend not in _BACKENDS:
            raise InterpError(f"unknown kernel backend '{self.backend}': use one of {', '.join(_BACKENDS)}")
        if self.prompts is not None:
            prompts = tuple(self.prompts)
            if not prompts or not all(isinstance(p, Prompt) for p in prompts):
                raise InterpError("prompts must be a non-empty sequence of interp.datasets.prompts.Prompt (or None)")
            for p in prompts:
                if not p.prompt.strip():
                    raise InterpError(f"prompt {p.id!r} is empty: give the question text")
                if p.response is not None and not p.response.strip():
                    raise InterpError(f"the response of prompt {p.id!r} is empty: give response text (or omit it to generate one)")
            if len({p.id for p in prompts}) != len(prompts):
                raise InterpError("two prompts share an id: give every prompt a distinct id")
            object.__setattr__(self, "prompts", prompts)

    def settings(self) -> dict:
        """JSON-friendly settings without the prompts (a run stores their digest beside them)."""
        out = super().settings()
        out.pop("prompts")
        return out


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


# --------------------------------------------------------------------------------------------
# Pure functions over statistics
# --------------------------------------------------------------------------------------------


def default_layers(n_layers: int, count: int = 5) -> list[int]:
    """``count`` layers evenly spaced in [floor(L/3), floor(2L/3)] (Li et al. 2025).

    Fractional positions round half up (L = 30: 10, 13, 15, 18, 20); duplicates (small L) are
    dropped.
    """
    if n_layers < 1:
        raise InterpError(f"the model has {n_layers} layers: need at least one")
    lo, hi = n_layers // 3, (2 * n_layers) // 3
    points = np.floor(np.linspace(lo, hi, count) + 0.5).astype(int)
    return sorted(set(int(p) for p in points))


def bottom_quantile(values: np.ndarray, q: float) -> np.ndarray:
    """Mask of the finite entries at or below the q-quantile of the finite entries (NaN: False)."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=bool)
    return finite & (values <= np.quantile(values[finite], q))


def top_quantile(values: np.ndarray, q: float) -> np.ndarray:
    """Mask of the finite entries at or above the (1-q)-quantile: the top share q (NaN: False)."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=bool)
    return finite & (values >= np.quantile(values[finite], 1.0 - q))


def head_groups(span: np.ndarray, local_quantile: float = 0.3, global_quantile: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Local and global heads from their spans.

    Args:
        span: [layer, head] mean attention distance over the response (any shape works).
        local_quantile: share of heads with the lowest span that are local.
        global_quantile: share with the highest span that are global.

    Returns:
        (local, global_) boolean masks of span's shape.
    """
    local = bottom_quantile(span, local_quantile)
    global_ = top_quantile(span, global_quantile)
    if (local & global_).any():
        raise InterpError(
            "some heads are both local and global (all spans equal?): the head spans do not separate; "
            "use more layers or a longer response"
        )
    return local, global_


def waad_jumps(waad: np.ndarray) -> np.ndarray:
    """Delta_t = |WAAD_t - WAAD_{t+1}| per response token, [resp]; NaN for the last token."""
    waad = np.asarray(waad, dtype=float)
    delta = np.full(waad.shape, np.nan)
    delta[:-1] = np.abs(waad[:-1] - waad[1:])
    return delta


def couple_anchors(
    anchor: np.ndarray, preplan: np.ndarray, waad: np.ndarray, tau_waad: float, k: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Anchors that are locally dominated and the preplan token that sets them up.

    An anchor t is locally dominated when WAAD_t <= tau_waad and a preplan token lies among
    t-k .. t-1 (within the response).

    Args:
        anchor, preplan: [resp] bool masks.
        waad: [resp] WAAD per token.
        tau_waad: WAAD cut.
        k: how many tokens before the anchor to search.

    Returns:
        (dominated [resp] bool, link [resp] int: response index of the nearest preplan token
        before a dominated anchor, -1 elsewhere).
    """
    anchor, preplan = np.asarray(anchor, bool), np.asarray(preplan, bool)
    waad = np.asarray(waad, dtype=float)
    dominated = np.zeros(anchor.shape, dtype=bool)
    link = np.full(anchor.shape, -1, dtype=np.int64)
    for t in np.flatnonzero(anchor & (waad <= tau_waad)):
        before = np.flatnonzero(preplan[max(0, t - k) : t])
        if before.size:
            dominated[t] = True
            link[t] = max(0, t - k) + int(before[-1])
    return dominated, link


@dataclass(frozen=True, eq=False)
class PreplanStats:
    """Kernel statistics kept from the forward pass (all float64 numpy).

    Attributes:
        layers: the chosen layers.
        dist: [layer, head, resp] dist_t of each response row.
        waad: [layer, head, resp] waad_t(W) of each response row.
        band: [layer, head, resp] band_s(lo, hi) of each response key (NaN without band queries).
    """

    layers: tuple[int, ...]
    dist: np.ndarray
    waad: np.ndarray
    band: np.ndarray


def layer_statistics(
    q: Float[Tensor, "1 head pos d_head"],
    k: Float[Tensor, "1 kv_head pos d_head"],
    *,
    attention: dict,
    n_prompt: int,
    config: PreplanConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dist, waad and band of one layer from its q and k, via `interp.kernels.attention_stats`.

    Args:
        q: [1, head, pos, d_head] post-RoPE queries of prompt + response.
        k: [1, kv_head, pos, d_head] post-RoPE keys (not repeated).
        attention: the layer's softmax settings, ``lm.attention_kwargs(layer)`` (scale, causal,
            sliding window, soft-cap, sink logits).
        n_prompt: prompt length P; the response is positions P .. pos-1.
        config: window, band, backend.

    Returns:
        (dist, waad, band), each [head, resp] float64: row statistics of the response rows and
        the band column statistic of the response keys.
    """
    from interp.kernels import attention_stats

    pos = q.shape[2]
    rows = torch.arange(n_prompt, pos, device=q.device)
    st = attention_stats(
        q,
        k,
        **attention,
        window=config.window,
        band=config.band,
        query_rows=rows,
        columns=True,
        backend=config.backend,
        chunk_size=config.chunk_size,
    )
    as_np = lambda t: t[0].detach().to(torch.float64).cpu().numpy()  # noqa: E731
    return as_np(st.dist), as_np(st.waad), as_np(st.band[:, :, n_prompt:])


def analyse(stats: PreplanStats, config: PreplanConfig) -> dict:
    """Everything the analysis finds from the kept statistics (pure; no model).

    Returns:
        dict with span [layer, head], local / global_ [layer, head] masks, waad, fai, delta
        [resp], preplan / anchor / dominated [resp] masks, link [resp], tau_waad and the
        thresholds used.
    """
    span = np.nanmean(stats.dist, axis=-1)  # d(l, h) = mean over response rows of dist_t
    local, global_ = head_groups(span, config.local_quantile, config.global_quantile)
    waad = stats.waad[local].mean(axis=0)  # [resp]: mean over local heads
    with np.errstate(invalid="ignore"):
        fai = stats.band[global_].mean(axis=0)  # [resp]: NaN where no query lies in the band
    delta = waad_jumps(waad)
    preplan = top_quantile(delta, config.preplan_quantile)
    anchor = top_quantile(fai, config.anchor_quantile)
    tau = float(np.median(waad)) if config.tau_waad is None else float(config.tau_waad)
    dominated, link = couple_anchors(anchor, preplan, waad, tau, config.coupling_k)
    return {
        "span": span,
        "local": local,
        "global_": global_,
        "waad": waad,
        "fai": fai,
        "delta": delta,
        "preplan": preplan,
        "anchor": anchor,
        "dominated": dominated,
        "link": link,
        "tau_waad": tau,
    }


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PreplanResult:
    """Preplan and anchor tokens of one prompt + response.

    Arrays over the response are [resp] (response index r sits at absolute position
    ``n_prompt + r``); head arrays are [layer, head] over ``layers``.
    """

    config: PreplanConfig
    model: str
    prompt: str
    response: str
    generated: bool
    n_prompt: int
    tokens: tuple[str, ...]
    token_ids: np.ndarray
    layers: tuple[int, ...]
    span: np.ndarray
    local: np.ndarray
    global_: np.ndarray
    waad: np.ndarray
    fai: np.ndarray
    delta: np.ndarray
    preplan: np.ndarray
    anchor: np.ndarray
    dominated: np.ndarray
    link: np.ndarray
    tau_waad: float
    prompt_tokens: tuple[str, ...] = field(default=(), repr=False)

    @property
    def positions(self) -> np.ndarray:
        """[resp] absolute position of each response token."""
        return self.n_prompt + np.arange(len(self.tokens))

    @property
    def n_local(self) -> int:
        return int(self.local.sum())

    @property
    def n_global(self) -> int:
        return int(self.global_.sum())

    def to_dataframe(self) -> pd.DataFrame:
        """One row per response token: pos, index, token, token_id, waad, delta, fai, preplan,
        anchor, dominated, preplan_link (absolute position of the coupled preplan token, -1)."""
        pos = self.positions
        return pd.DataFrame(
            {
                "pos": pos,
                "index": np.arange(len(self.tokens)),
                "token": list(self.tokens),
                "token_id": self.token_ids,
                "waad": self.waad,
                "delta": self.delta,
                "fai": self.fai,
                "preplan": self.preplan,
                "anchor": self.anchor,
                "dominated": self.dominated,
                "preplan_link": np.where(self.link >= 0, self.n_prompt + self.link, -1),
            }
        )

    def heads_dataframe(self) -> pd.DataFrame:
        """One row per head of the chosen layers: layer, head, span, group (local/global/other)."""
        rows = []
        for i, layer in enumerate(self.layers):
            for h in range(self.span.shape[1]):
                group = "local" if self.local[i, h] else "global" if self.global_[i, h] else "other"
                rows.append({"layer": layer, "head": h, "span": float(self.span[i, h]), "group": group})
        return pd.DataFrame(rows)

    def summary(self) -> dict:
        """Counts and cut-offs for run.json."""
        heads = lambda m: [[self.layers[i], int(h)] for i, h in zip(*np.nonzero(m))]  # noqa: E731
        return {
            "model": self.model,
            "prompt": self.prompt,
            "response": self.response,
            "generated": self.generated,
            "n_prompt_tokens": self.n_prompt,
            "n_response_tokens": len(self.tokens),
            "layers": list(self.layers),
            "local_heads": heads(self.local),
            "global_heads": heads(self.global_),
            "tau_waad": self.tau_waad,
            "n_preplan": int(self.preplan.sum()),
            "n_anchor": int(self.anchor.sum()),
            "n_dominated_anchors": int(self.dominated.sum()),
        }

    def to_record(self) -> dict:
        """JSON-able form for a resumable log (`interp.runs.SampleLog`); arrays keep their dtype
        and shape, so `from_record` gives back an equal result (floats round-trip exactly)."""
        out: dict = {}
        for f in fields(self):
            if f.name == "config":
                continue
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value = {"array": value.tolist(), "dtype": str(value.dtype), "shape": list(value.shape)}
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_record(cls, record: dict, config: PreplanConfig) -> "PreplanResult":
        """Inverse of `to_record` (``record`` may carry a log's extra "id" key)."""
        values: dict = {"config": config}
        for f in fields(cls):
            if f.name == "config":
                continue
            value = record[f.name]
            if isinstance(value, dict) and "array" in value:
                value = np.asarray(value["array"], dtype=value["dtype"]).reshape(value["shape"])
            elif isinstance(value, list):
                value = tuple(value)
            values[f.name] = value
        return cls(**values)


@dataclass(frozen=True, eq=False)
class PreplanRun:
    """Preplan and anchor tokens of every prompt of a run (what `interp score preplan` writes).

    Attributes:
        config: the settings used.
        model: model name.
        ids: the prompt ids, in order.
        results: one `PreplanResult` per prompt.
    """

    config: PreplanConfig
    model: str
    ids: tuple[str, ...]
    results: tuple[PreplanResult, ...]

    def _joined(self, frames: list[pd.DataFrame]) -> pd.DataFrame:
        df = pd.concat([f.assign(sample=i) for f, i in zip(frames, self.ids)], ignore_index=True)
        return df[["sample"] + [c for c in df.columns if c != "sample"]]

    def to_dataframe(self) -> pd.DataFrame:
        """One row per response token of every prompt (tokens.csv): sample, then the columns of
        `PreplanResult.to_dataframe`."""
        return self._joined([r.to_dataframe() for r in self.results])

    def heads_dataframe(self) -> pd.DataFrame:
        """One row per (prompt, head) (heads.csv): sample, layer, head, span, group."""
        return self._joined([r.heads_dataframe() for r in self.results])

    def summary(self) -> dict:
        """``{"samples": [{"id", ...PreplanResult.summary()}]}`` for run.json."""
        return {"samples": [{"id": i, **r.summary()} for i, r in zip(self.ids, self.results)]}
