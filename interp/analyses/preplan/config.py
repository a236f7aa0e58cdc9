"""The preplan-and-anchor analysis's settings (defaults: Li et al. 2025) and its default layers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from interp.config import Config
from interp.datasets.prompts import Prompt
from interp.errors import InterpError
from interp.kernels import BACKENDS

__all__ = ["PreplanConfig", "default_layers"]


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
        self.normalise(band=(lo, hi))
        for name, least in (("window", 1), ("n_default_layers", 1), ("coupling_k", 1), ("max_new_tokens", 1)):
            v = getattr(self, name)
            if not _is_int(v) or v < least:
                raise InterpError(f"{name} must be an int >= {least}, got {v!r}")
        if self.tau_waad is not None and (
            isinstance(self.tau_waad, bool)
            or not isinstance(self.tau_waad, (int, float))
            or not math.isfinite(self.tau_waad)
        ):
            raise InterpError(f"tau_waad must be a finite number or None (median WAAD), got {self.tau_waad!r}")
        if self.layers is not None:
            layers = tuple(self.layers)
            if not layers or not all(_is_int(x) for x in layers):
                raise InterpError(
                    f"layers must be a non-empty list of ints (or None for the default), got {self.layers!r}"
                )
            self.normalise(layers=tuple(sorted(set(int(x) for x in layers))))
        if self.backend not in BACKENDS:
            raise InterpError(f"unknown kernel backend '{self.backend}': use one of {', '.join(BACKENDS)}")
        if self.prompts is not None:
            prompts = tuple(self.prompts)
            if not prompts or not all(isinstance(p, Prompt) for p in prompts):
                raise InterpError("prompts must be a non-empty sequence of interp.datasets.prompts.Prompt (or None)")
            for p in prompts:
                if not p.prompt.strip():
                    raise InterpError(f"prompt {p.id!r} is empty: give the question text")
                if p.response is not None and not p.response.strip():
                    raise InterpError(
                        f"the response of prompt {p.id!r} is empty: give response text (or omit it to generate one)"
                    )
            if len({p.id for p in prompts}) != len(prompts):
                raise InterpError("two prompts share an id: give every prompt a distinct id")
            self.normalise(prompts=prompts)

    def settings(self) -> dict:
        """JSON-friendly settings without the prompts (a run stores their digest beside them)."""
        out = super().settings()
        out.pop("prompts")
        return out


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


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
