"""`SinkConfig`: what `interp score sinks` measures, on which texts, with which thresholds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from interp.config import Config
from interp.errors import InterpError

__all__ = ["SinkConfig"]


@dataclass(frozen=True)
class SinkConfig(Config):
    """What the sinks experiment measures, on which texts.

    Attributes:
        texts: the texts to analyse; None = the shipped `interp/data/sink_texts.txt`.
        length: tokens of each text analysed (the sink window). Longer texts are cut to their
            first ``length`` tokens; a shorter text raises (lower it, or use ``pack``).
        pack: join all texts (blank line between) and cut the token stream into consecutive
            windows of ``length`` tokens (how Gu et al. sample fixed-length sequences).
        max_texts: analyse only the first this many texts (windows); None = all.
        eps: Gu et al. 2024 sink threshold on alpha_j.
        tau: Yu et al. 2024 (ACT) hidden-sink threshold on recv_mean_j.
        min_queries: a key is a candidate sink only when at least this many queries see it
            (see module docstring); 1 reproduces docs/METRICS.md / Yu et al. exactly.
        sink_tokens: n of the first-token mass sink_i(n).
        noop_ratio: a first-token sink is a *no-op* when its value-weighted first-token mass
            (attention weighted by ||W_O^h v_j||) is below ``noop_ratio`` times its first-token
            attention mass (docs/METRICS.md#value-weighted-sinks).
        layers: layers to analyse; None = all.
        backend: `interp.kernels.attention_stats` backend ("auto", "torch", "triton", "reference").
    """

    texts: Optional[tuple[str, ...]] = None  # None: the shipped sink_texts.txt
    length: int = 256  # tokens per text (window)
    pack: bool = False  # join texts and cut into windows of `length`
    max_texts: Optional[int] = None  # None: every text
    eps: float = 0.3  # Gu et al. 2024
    tau: float = 0.1  # Yu et al. 2024
    min_queries: int = 16  # 1 = docs/METRICS.md exactly
    sink_tokens: int = 1  # first-token mass over the first n tokens
    noop_ratio: float = 0.5  # no-op sink: value-weighted / attention first-token mass below this (METRICS.md)
    layers: Optional[tuple[int, ...]] = None  # None: all layers
    backend: str = "auto"  # kernel backend

    def validate(self) -> None:
        """Raise `InterpError` on settings outside their range."""
        if self.layers is not None:
            self.normalise(layers=tuple(self.layers))
        if self.texts is not None and not isinstance(self.texts, str):
            self.normalise(texts=tuple(self.texts))
        if isinstance(self.texts, str):
            raise InterpError("texts must be a sequence of strings: wrap a single text as (text,)")
        if not 0.0 < self.eps < 1.0:
            raise InterpError(f"eps must lie in (0, 1), got {self.eps} (Gu et al. use 0.3)")
        if not 0.0 < self.tau < 1.0:
            raise InterpError(f"tau must lie in (0, 1), got {self.tau} (Yu et al. use 0.1)")
        if not 0.0 < self.noop_ratio < 1.0:
            raise InterpError(f"noop_ratio must lie in (0, 1), got {self.noop_ratio}")
        if not (isinstance(self.sink_tokens, int) and self.sink_tokens >= 1):
            raise InterpError(f"sink_tokens must be an int >= 1, got {self.sink_tokens!r}")
        if not (isinstance(self.min_queries, int) and self.min_queries >= 1):
            raise InterpError(f"min_queries must be an int >= 1, got {self.min_queries!r} (1 = no tail guard)")
        if not (isinstance(self.length, int) and self.length > self.sink_tokens):
            raise InterpError(
                f"length must be an int larger than sink_tokens ({self.sink_tokens}), got {self.length!r}: "
                "the window needs tokens after the sink"
            )
        if self.max_texts is not None and not (isinstance(self.max_texts, int) and self.max_texts >= 1):
            raise InterpError(f"max_texts must be None or an int >= 1, got {self.max_texts!r}")

    def settings(self) -> dict:
        """JSON-friendly settings (texts summarised by count and total characters)."""
        out = super().settings()
        texts = out.pop("texts")
        out["texts"] = (
            "shipped sink_texts.txt" if texts is None else f"{len(texts)} texts, {sum(map(len, texts))} chars"
        )
        return out
