"""What the head atlas measures (`AtlasConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from interp.config import Config
from interp.errors import InterpError

__all__ = ["AtlasConfig", "LONGPPL_CONTEXT", "LONGPPL_STEP"]

_PREV_WINDOW = 2  # recent mass within 2 positions = a_ii + a_{i,i-1}: previous-token mass = recent_2 - self_mass
LONGPPL_CONTEXT = 4096  # LongPPL (Fang et al. 2025): the short context of the long-short difference (trunc_len)
LONGPPL_STEP = 1024  # LongPPL: tokens scored per short window (sliding_window), K / 4


@dataclass(frozen=True)
class AtlasConfig(Config):
    """What the atlas measures.

    Attributes:
        texts: texts to analyse (None: the shipped corpus, stdlib docstring prose and the sink
            texts, about 36k tokens on SmolLM2's tokenizer). They are joined and cut into
            windows of ``length`` tokens; the last ``causal_texts`` windows are held out for
            the causal check.
        length: tokens per window (every head is profiled up to this position).
        max_texts: profile at most this many windows (None: all but the held-out ones).
        sinks: S, the first tokens every windowed KV head keeps (StreamingLLM keeps 4).
        windows: the W of the recent and distant masses.
        window: the W of the policy (one of ``windows``; default the largest).
        n_bins: log-spaced query-position bins of the profiles.
        sink_min: a head whose mass on the first S tokens is at least this is a sink head.
        prev_min: a head whose mass on the previous token is at least this is a previous-token head.
        distant_max: a KV head whose query heads all have at most this distant mass at the
            policy window is windowed by the policy; a query head above it is ``global``.
        causal_texts: held-out windows for the causal check (0: no causal check).
        selectors: how the causal check ranks KV heads (`interp.analyses.atlas.SELECTORS`).
        budgets: shares of the KV heads the model does not already window, windowed per selector.
        seeds: random KV-head sets per budget (the ``random`` selector).
        loss_tolerance: the key-token loss change (nats/token) the summary calls harmless.
        recall_min: and the needle recall it needs, as a share of the unedited model's.
        loss_tokens: the causal check's loss is over the last this many tokens of each held-out window.
        key_context: K of the key tokens: a loss token is key when its loss with only the last
            K to 5K/4 - 1 tokens (LongPPL scores K/4 = 1024 tokens per short window of K = 4096)
            exceeds its full-context loss by more than ``key_margin`` (None: LongPPL's 4096, at
            most half of ``length``).
        key_margin: LongPPL's alpha (2 nats); a key token also has full-context loss below
            ``key_max_loss`` (LongPPL's -beta, 2 nats).
        key_max_loss: see ``key_margin``.
        needles: needles for recall, each at three depths (0.25, 0.5, 0.75) of ``length`` tokens
            (the retrieval machinery's default file; 0: none).
        ablation_tokens: the ``ablation`` selector windows each KV head alone on the first
            profiled window and scores the loss change of its last this many tokens.
        policy_file: a policy.json, or DuoAttention's full_attention_heads.tsv with its
            config.json beside it, whose windowed KV heads the causal check adds as ``policy-file``.
        layers: layers to profile (None: all; the policy and the causal check need all).
        backend: kernel backend.
    """

    texts: Optional[tuple[str, ...]] = None
    length: int = 8192
    max_texts: Optional[int] = None
    sinks: int = 4  # StreamingLLM (Xiao et al. 2024) keeps 4 initial tokens
    windows: tuple[int, ...] = (64, 256, 1024)
    window: Optional[int] = None
    n_bins: int = 16
    sink_min: float = 0.5  # half of the row's mass on the first S tokens
    prev_min: float = (
        0.5  # half of the row's mass on i - 1 (TransformerLens's previous-token score reads the same mass)
    )
    distant_max: float = 0.05  # at most 5% of the mass beyond the sinks and the window: streaming-compatible
    causal_texts: int = 1
    selectors: tuple[str, ...] = ("profile", "razor", "random")  # issue 28's default comparison
    budgets: tuple[float, ...] = (0.25, 0.5, 0.75)
    seeds: int = 3
    loss_tolerance: float = 0.05  # nats/token (issue 22)
    recall_min: float = 0.95  # share of the unedited model's needle recall (issue 28)
    loss_tokens: int = 1024  # the loss is over the last this many positions of each held-out window
    key_context: Optional[int] = None  # None: min(LONGPPL_CONTEXT, length // 2)
    key_margin: float = 2.0  # LongPPL's alpha (nats)
    key_max_loss: float = 2.0  # LongPPL's -beta (nats)
    needles: int = 1
    ablation_tokens: int = 512
    layers: Optional[tuple[int, ...]] = None
    backend: str = "auto"
    policy_file: Optional[str] = None  # a policy.json or full_attention_heads.tsv the causal check adds

    def validate(self) -> None:
        from interp.analyses.atlas.policy import SELECTORS

        if self.texts is not None and not any(t.strip() for t in self.texts):
            raise InterpError(
                "no texts to analyse: pass at least one non-empty text (or omit texts for the shipped corpus)"
            )
        if self.length < 2:
            raise InterpError(f"length must be at least 2 tokens, got {self.length}")
        if self.sinks < 0:
            raise InterpError(f"--sinks must be >= 0, got {self.sinks}")
        if self.sinks >= self.length:
            raise InterpError(f"--sinks {self.sinks} must be below --length {self.length}")
        if not self.windows or len(set(self.windows)) != len(self.windows):
            raise InterpError(f"--windows must be distinct integers, got {list(self.windows)}")
        for w in self.windows:
            if not 1 <= w < self.length:
                raise InterpError(
                    f"window {w} must lie in 1..{self.length - 1} (below --length {self.length}): lower it or raise --length"
                )
        if self.window is not None and self.window not in self.windows:
            raise InterpError(f"the policy window {self.window} must be one of --windows {list(self.windows)}")
        if self.n_bins < 1:
            raise InterpError(f"--bins must be >= 1, got {self.n_bins}")
        for name in ("sink_min", "prev_min", "distant_max", "recall_min"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InterpError(f"{name} must lie in [0, 1], got {value}")
        for name in ("loss_tokens", "ablation_tokens"):
            if getattr(self, name) < 1:
                raise InterpError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.key_context is not None and not 1 <= self.key_context < self.length:
            raise InterpError(f"--key-context must lie in 1..{self.length - 1}, got {self.key_context}")
        if self.causal_texts < 0 or self.seeds < 0 or self.needles < 0:
            raise InterpError("causal_texts, seeds and needles must be >= 0")
        if self.max_texts is not None and self.max_texts < 1:
            raise InterpError(f"--max-texts must be >= 1, got {self.max_texts}")
        unknown = [s for s in self.selectors if s not in SELECTORS]
        if unknown or not self.selectors or len(set(self.selectors)) != len(self.selectors):
            raise InterpError(
                f"unknown or repeated selector(s) {unknown or list(self.selectors)}: choose from {', '.join(SELECTORS)}"
            )
        if "random" in self.selectors and self.seeds < 1:
            raise InterpError("the random selector needs --seeds 1 or more (3 give an interval)")
        for b in self.budgets:
            if not 0.0 < b <= 1.0:
                raise InterpError(
                    f"budget {b} is beyond the KV heads: budgets are shares in (0, 1] of the KV heads the model does not window"
                )

    @property
    def policy_window(self) -> int:
        """The W of the policy: ``window``, else the largest of ``windows``."""
        return self.window if self.window is not None else max(self.windows)

    @property
    def key_window(self) -> int:
        """K of the key tokens (``key_context``, else LongPPL's 4096, at most half of ``length``)."""
        return self.key_context if self.key_context is not None else min(LONGPPL_CONTEXT, self.length // 2)

    @property
    def kernel_windows(self) -> tuple[int, ...]:
        """The ``recent_windows`` passed to the kernel: ``windows`` plus 2 (for the previous-token mass)."""
        return tuple(sorted(set(self.windows) | {_PREV_WINDOW}))
