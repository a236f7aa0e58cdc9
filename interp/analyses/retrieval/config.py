"""The retrieval experiment's settings: what the needle grid, the scoring and the causal check run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from interp.config import Config
from interp.errors import InterpError

__all__ = ["RetrievalConfig", "default_k", "Head", "Condition"]

Head = tuple[int, int]
Condition = tuple[str, Optional[int], tuple[Head, ...]]  # (name "top"/"random", seed, heads masked)


@dataclass(frozen=True)
class RetrievalConfig(Config):
    """What the retrieval experiment runs.

    The defaults are sized so that the whole run, masking check included, takes a few minutes
    on two CPU cores with the embedded 135M model. The paper's grid is lengths spread over the
    model's context and depths 0..100% in 10 steps: for SmolLM2 (context 8192) that is
    ``lengths=(1024, 2048, ..., 8192)``, ``depths=tuple(i / 10 for i in range(11))``.

    Attributes:
        lengths: prompt lengths in tokens (each sample is at most this long, short by less
            than one haystack sentence).
        depths: needle depths, fractions of the haystack (0 = start, 1 = end).
        needles: JSONL file of needles; None = the shipped ``interp/data/needles.jsonl``.
        haystack: text files for the haystack; () = Python standard-library docstrings.
        mode: "teacher" (one forward per sample) or "decode" (the paper's greedy loop).
        response: teacher forcing feeds "needle" (the needle sentence) or "answer".
        max_new_tokens: decode mode's step limit (the paper's 50).
        min_recall: a sample counts when ROUGE-1 recall of the model's answer >= this.
        threshold: a head is a retrieval head when its score > this (the paper's 0.1).
        mask: run the causal check (top-K vs random-K masking).
        mask_top: K of the top-K heads masked; None = 5% of all heads (at least 1).
        mask_random: K of the random heads masked; None = the same K as ``mask_top``.
        seeds: one random-K draw per seed (the spread across seeds is reported).
        backend: `interp.kernels` backend ("auto", "torch", "triton", "reference").
        share_prefix: compute each shared token prefix of the grid once and reuse its KV
            cache (`interp.hooks.prefix`; models that take a prefix cache, the HF
            backend; both modes and the masking check; same results as one pass per sample).
            False = each sample on its own.
        batch_size: with ``share_prefix``, at most this many samples that differ only after
            a shared prefix (e.g. the needles at one length and depth) run as one batch.
            None = 1 on CPU (measured: batching there only adds padding and cache copies,
            benchmarks/RESULTS.md) and 4 on CUDA.
        min_counted: check: at least this many samples must count (the model recalls the
            needle), else the scores average over too few retrievals to rank heads.
        masking_sigmas: check: masking the top-K heads must lower recall below the random-K
            mean by more than this many standard deviations across the seeds.
    """

    lengths: tuple[int, ...] = (512, 1024)  # tokens; the paper's grid goes to the context (8192)
    depths: tuple[float, ...] = (0.1, 0.5, 0.9)  # the paper: 0.0, 0.1, ..., 1.0
    needles: Optional[str] = None  # None: interp/data/needles.jsonl (3 needles)
    haystack: tuple[str, ...] = ()  # (): stdlib docstrings
    mode: str = "teacher"  # or "decode" (the paper's loop)
    response: str = "needle"  # teacher forcing feeds the needle sentence; or "answer"
    max_new_tokens: int = 50  # decode-mode step limit (Wu et al.)
    min_recall: float = 0.5  # ROUGE-1 recall for a sample to count (Wu et al.)
    threshold: float = 0.1  # retrieval head: score > threshold (Wu et al.)
    mask: bool = True  # run the causal check
    mask_top: Optional[int] = None  # None: 5% of heads
    mask_random: Optional[int] = None  # None: same as mask_top
    seeds: tuple[int, ...] = (0, 1, 2)  # random-K draws
    backend: str = "auto"  # interp.kernels backend
    share_prefix: bool = True  # reuse the KV cache of shared token prefixes (exact)
    batch_size: Optional[int] = None  # samples per batch below a shared prefix; None: 1 on CPU, 4 on CUDA
    # Preconditions (interp.analyses.checks); no paper value: Wu et al. average over a 20 x 10 grid and show
    # the top-K masking effect by eye, so these only flag a grid too small or a check that does not separate.
    min_counted: int = 3  # check: counted samples (the model recalls the needle)
    masking_sigmas: float = 2.0  # check: top-K recall below random-K by > this x the seeds' standard deviation

    def validate(self) -> None:
        """Raise `InterpError` on settings outside their range (K against the model: `mask_sizes`)."""
        for name in ("lengths", "depths", "haystack", "seeds"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)):
                raise InterpError(f"{name} must be a sequence, got the string {value!r}")
            self.normalise(**{name: tuple(value)})
        if not self.lengths or not all(isinstance(x, int) and x > 0 for x in self.lengths):
            raise InterpError(f"lengths must be positive token counts, got {self.lengths!r}")
        if not self.depths or not all(0.0 <= float(d) <= 1.0 for d in self.depths):
            raise InterpError(f"depths must lie in [0, 1] (fractions of the haystack), got {self.depths!r}")
        if len(set(self.lengths)) != len(self.lengths) or len(set(self.depths)) != len(self.depths):
            raise InterpError("lengths and depths must not repeat a value")
        if self.mode not in ("teacher", "decode"):
            raise InterpError(f"mode must be 'teacher' or 'decode', got {self.mode!r}")
        if self.response not in ("needle", "answer"):
            raise InterpError(f"response must be 'needle' or 'answer', got {self.response!r}")
        if not (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1):
            raise InterpError(f"max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")
        if not 0.0 <= self.min_recall <= 1.0:
            raise InterpError(f"min_recall must lie in [0, 1], got {self.min_recall} (Wu et al. use 0.5)")
        if not 0.0 <= self.threshold < 1.0:
            raise InterpError(f"threshold must lie in [0, 1), got {self.threshold} (Wu et al. use 0.1)")
        if self.batch_size is not None and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise InterpError(f"batch_size must be None or an int >= 1, got {self.batch_size!r}")
        if not (isinstance(self.min_counted, int) and self.min_counted >= 1):
            raise InterpError(f"min_counted must be an int >= 1, got {self.min_counted!r}")
        if not self.masking_sigmas >= 0:
            raise InterpError(f"masking_sigmas must be >= 0, got {self.masking_sigmas!r}")
        if self.mask and not self.seeds:
            raise InterpError("seeds is empty: give at least one seed for the random-K masking (or mask=False)")
        if not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**32 for x in self.seeds):
            raise InterpError(f"seeds must be ints from 0 to 2**32-1 (--seed 0), got {self.seeds!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise InterpError(
                f"seeds repeat a value ({self.seeds!r}): a repeated draw adds no spread; give each seed once"
            )
        for name in ("mask_top", "mask_random"):
            k = getattr(self, name)
            if k is not None and not (isinstance(k, int) and k >= 1):
                raise InterpError(f"{name} must be None or an int >= 1, got {k!r}")

    def batch_for(self, device: torch.device) -> int:
        """The batch size on ``device`` (``batch_size``, or its default there)."""
        if self.batch_size is not None:
            return self.batch_size
        return 4 if device.type == "cuda" else 1

    def mask_sizes(self, n_heads_total: int) -> tuple[int, int]:
        """(K top, K random) for a model with ``n_heads_total`` heads.

        Raises:
            InterpError: K top larger than the model's heads, or K random larger than the heads
                outside the top K (the runner checks this before any model work).
        """
        k_top = self.mask_top if self.mask_top is not None else default_k(n_heads_total)
        k_random = self.mask_random if self.mask_random is not None else k_top
        if k_top > n_heads_total:
            raise InterpError(
                f"--mask-top {k_top} is larger than the model's {n_heads_total} heads: use K <= {n_heads_total}"
            )
        if k_random > n_heads_total - k_top:
            raise InterpError(
                f"--mask-random {k_random} is too large: random heads are drawn from the {n_heads_total - k_top} "
                f"heads outside the top {k_top}; use K <= {n_heads_total - k_top}"
            )
        return k_top, k_random


def default_k(n_heads_total: int, share: float = 0.05) -> int:
    """5% of all heads, rounded, at least 1 (the paper's "fewer than 5% are retrieval heads")."""
    return max(1, int(math.floor(share * n_heads_total + 0.5)))
