"""What a patching run does: the targets, methods and metrics, and the frozen `PatchConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from interp.config import Config
from interp.errors import InterpError

__all__ = ["TARGETS", "METRICS", "METHODS", "PatchConfig"]

# target name -> (canonical site, head axis: "head" (query heads), "kv_head", or None)
TARGETS: dict[str, tuple[str, Optional[str]]] = {
    "head_out": ("z", "head"),
    "q": ("q", "head"),
    "k": ("k", "kv_head"),
    "v": ("v", "kv_head"),
    "resid_pre": ("resid_pre", None),
    "attn_out": ("attn_out", None),
    "mlp_out": ("mlp_out", None),
}
METRICS = ("score", "logit_diff", "kl")
METHODS = ("activation", "attribution")
TASK_NAMES = ("ioi", "colored-objects", "colored_objects", "co", "pairs")  # make_task's names, and a pairs file


@dataclass(frozen=True)
class PatchConfig(Config):
    """What `interp.experiments.patching.run` does. Defaults give the IOI head-output sweep of Wang et al.

    Attributes:
        task: "ioi", "colored-objects" (generated, `interp.datasets.make_task`), or "pairs" (your
            own prompt pairs, from the file ``pairs``).
        n: prompts of a generated task (the metric is averaged over them); with "pairs" the
            number of pairs in the file (recorded, not used).
        seed: generator seed of a generated task.
        pairs: task "pairs": a JSONL file, one {"clean", "corrupt", "correct", "wrong"} per line.
        target: head_out (z) | q | k | v (per kv head) | resid_pre | attn_out | mlp_out.
        method: activation | attribution (first order, one forward and one backward pass).
        metric: score (normalised logit difference) | logit_diff | kl (KL(clean || patched)).
        by_pos: patch each position separately; None: yes for resid_pre/attn_out/mlp_out, no for heads.
        layers: layers to patch; None = all (checked against the model by the runner).
        batch_rows: rows (copies x prompts) per forward pass; None = keep one pass near 256 MiB.
        compare: with method "attribution": also run activation patching and report the correlation.
        position_map: also estimate the resid_pre patch of every (layer, position) by attribution
            patching (one forward and one backward pass more): where the answer's information
            sits in the residual stream (the report's second map).
        min_clean_accuracy: check: the share of clean prompts the model gets right (LD > 0) must
            reach this, else the task is not done by the model and the scores mean nothing.
        min_logit_diff: check: the clean-minus-corrupted mean logit difference (the normalised
            score's denominator) must reach this many nats.
    """

    task: str = "ioi"  # "ioi", "colored-objects", or "pairs" (your own prompt pairs, from ``pairs``)
    n: int = 16  # prompts (the metric is averaged over them); not used with task "pairs"
    seed: int = 0  # task generator seed; not used with task "pairs"
    pairs: Optional[str] = None  # task "pairs": a JSONL file, one {"clean", "corrupt", "correct", "wrong"} per line
    target: str = "head_out"  # head_out (z) | q | k | v (per kv head) | resid_pre | attn_out | mlp_out
    method: str = "activation"  # activation | attribution
    metric: str = "score"  # score (normalised) | logit_diff | kl (KL(clean || patched) at the answer)
    by_pos: Optional[bool] = None  # None: by position for resid_pre/attn_out/mlp_out, all positions for heads
    layers: Optional[tuple[int, ...]] = None  # layers to patch; None = all
    batch_rows: Optional[int] = None  # rows (copies x prompts) per forward; None = fit one pass in 256 MiB
    compare: bool = False  # with method="attribution": also run activation patching, report the correlation
    position_map: bool = False  # also the resid_pre x position map by attribution patching (the report)
    # Preconditions (`interp.analyses.checks`); no paper gives a cut-off: Wang et al.'s GPT-2 small does IOI on
    # ~99% of prompts with a logit difference of ~3.5, so these defaults only flag a model that does not do the task.
    min_clean_accuracy: float = 0.8  # share of clean prompts with LD > 0
    min_logit_diff: float = 1.0  # nats, LD_clean - LD_corrupt (the normalised score's denominator)

    def validate(self) -> None:
        """Raise `InterpError` on a bad setting (before any model work)."""
        if self.layers is not None:
            self.normalise(layers=tuple(int(x) for x in self.layers))
        if self.pairs is not None:
            self.normalise(pairs=str(self.pairs))
        if self.task not in TASK_NAMES:
            raise InterpError(f"unknown task '{self.task}': use one of ioi, colored-objects, pairs")
        if self.task == "pairs" and self.pairs is None:
            raise InterpError(
                'task "pairs" needs a pairs file: set pairs to a JSONL file of {"clean", "corrupt", "correct", "wrong"} lines'
            )
        if self.pairs is not None and self.task != "pairs":
            raise InterpError(
                f"a pairs file was given with task '{self.task}': set task to \"pairs\" to run it, or drop the file"
            )
        if self.target not in TARGETS:
            raise InterpError(f"unknown target '{self.target}': use one of {', '.join(TARGETS)}")
        if self.method not in METHODS:
            raise InterpError(f"unknown method '{self.method}': use one of {', '.join(METHODS)}")
        if self.metric not in METRICS:
            raise InterpError(
                f"unknown metric '{self.metric}': use one of {', '.join(METRICS)} (or pass a callable to patch_task)"
            )
        if self.task != "pairs" and self.n < 1:
            raise InterpError(f"n = {self.n}: use at least one prompt")
        if self.batch_rows is not None and self.batch_rows < 1:
            raise InterpError(f"batch_rows = {self.batch_rows}: use a positive number of rows per forward")
        if self.layers is not None and not self.layers:
            raise InterpError("no layers chosen: pass at least one layer (or None for all)")
        if not 0.0 <= self.min_clean_accuracy <= 1.0:
            raise InterpError(f"min_clean_accuracy = {self.min_clean_accuracy}: use a share in [0, 1]")
