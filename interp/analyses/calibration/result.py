"""The calibration's frozen config and result: held-out accuracy before and after, its intervals,
the test, and the checks of the finding (see `interp.analyses.calibration`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from interp.analyses.calibration.act import Head, check_beta, check_gamma, head_pairs
from interp.analyses.checks import Check, above, as_records, at_least, at_most, chance_level, not_tested
from interp.analyses.stats import mcnemar_exact, paired_bootstrap_diff, wilson_interval
from interp.config import Config
from interp.errors import InterpError

__all__ = ["CalibrationConfig", "CalibrationResult", "CHECK_SETTINGS", "Head"]

# The config fields that only set check thresholds: they change no number, so a resumed search
# leaves them out of the settings it must agree on (run.json still records them).
CHECK_SETTINGS = ("min_heldout", "chance_quantile")


@dataclass(frozen=True)
class CalibrationConfig(Config):
    """One calibration experiment.

    Attributes:
        method: "act" (Yu et al. 2024) or "zerotune" (initial-token scaling, Han et al. 2025).
        task: a shipped choice set (`interp.datasets.choices.available_choice_sets`) or a .jsonl
            choice-set file (the CLI's ``--task``).
        heads: fixed heads as (layer, head) pairs; None = search (ACT) / every head (ZeroTuning).
        beta: ACT, fraction of sink mass kept.
        tau: ACT, sink threshold on recv_mean.
        min_queries: ACT, keys seen by fewer queries are not sinks (1 = docs/METRICS.md exactly).
        include_first: ACT, also scale the first sink (the paper keeps it: False).
        n_candidates: ACT, heads tried by the greedy search (largest hidden-sink mass on the
            calibration prompts first).
        gamma: ZeroTuning, a fixed gamma (skips the search); None = search ``gammas``.
        gammas: ZeroTuning, the grid searched on the calibration split.
        batch_size: prompts per forward pass.
        confidence: level of the intervals.
        n_boot: bootstrap resamples of the accuracy difference.
        seed: bootstrap seed.
        backend: kernel backend for ACT's statistics.
        min_heldout: check: at least this many held-out items (``heldout_items``).
        chance_quantile: check: the uncalibrated held-out accuracy must exceed this quantile of
            the accuracy of a model guessing among the choices (``base_above_chance``).
    """

    method: str = "act"  # "act" | "zerotune"
    task: str = "sentiment"  # shipped task or .jsonl path
    heads: Optional[tuple[Head, ...]] = None  # None: search (act) / all heads (zerotune)
    beta: float = 0.4  # ACT (Yu et al. 2024)
    tau: float = 0.1  # ACT sink threshold
    min_queries: int = 16  # 1 = docs/METRICS.md exactly
    include_first: bool = False  # ACT keeps the initial sink
    n_candidates: int = 12  # ACT greedy search size
    gamma: Optional[float] = None  # ZeroTuning fixed gamma
    gammas: tuple[float, ...] = (0.25, 0.5, 0.75, 1.5, 2.0, 4.0)  # ZeroTuning grid
    batch_size: int = 20
    confidence: float = 0.95
    n_boot: int = 2000
    seed: int = 0
    backend: str = "auto"
    # Preconditions (`interp.analyses.checks`); neither paper gives a cut-off (both evaluate on hundreds
    # to thousands of items). Under 30 items the 95% interval of an accuracy near 50% spans more than
    # +-17 points and one item moves it by over 3 points: a gain of the papers' size (a few points) is
    # one or two items.
    min_heldout: int = 30  # held-out items
    chance_quantile: float = 0.95  # base accuracy above the 95th percentile of guessing (about 5% false alarms)

    def validate(self) -> None:
        """Raise `InterpError` on settings outside their range (heads are checked against the
        model by the runner); normalise heads to (layer, head) int pairs."""
        if self.method not in ("act", "zerotune"):
            raise InterpError(f"unknown calibration method '{self.method}': use 'act' or 'zerotune'")
        check_beta(self.beta)
        if not 0 < self.tau < 1:
            raise InterpError(f"tau must lie in (0, 1), got {self.tau}")
        if not (isinstance(self.min_queries, int) and self.min_queries >= 1):
            raise InterpError(f"min_queries must be an int >= 1, got {self.min_queries!r} (1 = no tail guard)")
        if self.gamma is not None:
            check_gamma(self.gamma)
        self.normalise(gammas=tuple(self.gammas))
        if not self.gammas and self.gamma is None and self.method == "zerotune":
            raise InterpError("no gammas to search: give a grid (e.g. 0.5,2) or a fixed gamma")
        for g in self.gammas:
            check_gamma(g)
        if not (isinstance(self.n_candidates, int) and self.n_candidates >= 1):
            raise InterpError(f"n_candidates must be an int >= 1, got {self.n_candidates!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise InterpError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        if not 0 < self.confidence < 1:
            raise InterpError(f"confidence must lie in (0, 1), got {self.confidence}")
        if not (isinstance(self.min_heldout, int) and self.min_heldout >= 1):
            raise InterpError(f"min_heldout must be an int >= 1, got {self.min_heldout!r}")
        if not 0 < self.chance_quantile < 1:
            raise InterpError(f"chance_quantile must lie in (0, 1), got {self.chance_quantile!r}")
        if self.heads is not None:
            if not self.heads:
                raise InterpError("heads is empty: give at least one LAYER.HEAD, or omit it to search")
            self.normalise(heads=head_pairs(self.heads))


@dataclass(frozen=True)
class CalibrationResult:
    """Outcome of `calibrate`.

    Attributes:
        config, model, task: what was run.
        heads: the calibrated heads (chosen by the search or given).
        gamma: ZeroTuning's chosen gamma (None for ACT).
        search: one dict per search step (candidate or gamma, calibration accuracy, kept).
        calib_before, calib_after: calibration-split accuracy without / with the calibration.
        item_ids: held-out item ids.
        before, after: [n_heldout] bool, held-out item correct without / with it.
        logp_before, logp_after: [n_heldout] log-prob of the correct choice.
        n_choices: answer choices per item (chance is 1 / n_choices); None when not known.
        heldout_in_calibration: held-out items whose prompt is also a calibration prompt; None
            when not known.
        head_sink_mass: ACT, per calibrated head (order of ``heads``), its hidden-sink mass on
            the calibration prompts (mean over prompts of the summed recv_mean of its hidden
            sinks, `hidden_sink_mass`); empty for ZeroTuning.
    """

    config: CalibrationConfig
    model: str
    task: str
    heads: tuple[Head, ...]
    gamma: Optional[float]
    search: tuple[dict, ...]
    calib_before: float
    calib_after: float
    item_ids: tuple[str, ...]
    before: np.ndarray
    after: np.ndarray
    logp_before: np.ndarray
    logp_after: np.ndarray
    n_choices: Optional[int] = None
    heldout_in_calibration: Optional[int] = None
    head_sink_mass: tuple[float, ...] = ()

    @property
    def accuracy_before(self) -> float:
        return float(np.mean(self.before))

    @property
    def accuracy_after(self) -> float:
        return float(np.mean(self.after))

    def difference_interval(self) -> tuple[float, float]:
        return paired_bootstrap_diff(
            self.before, self.after, n_boot=self.config.n_boot, confidence=self.config.confidence, seed=self.config.seed
        )

    def p_value(self) -> float:
        return mcnemar_exact(self.before, self.after)

    @property
    def checks(self) -> tuple[Check, ...]:
        """The preconditions of the held-out finding, with their numbers.

        - ``heldout_items``: held-out items >= ``config.min_heldout``.
        - ``heldout_disjoint``: held-out prompts that are also calibration prompts <= 0 (the
          setting is chosen on the calibration split; measured on its own items it is optimistic).
        - ``base_above_chance``: held-out accuracy before calibration > the
          ``config.chance_quantile`` quantile of the accuracy of guessing among ``n_choices``
          on as many items (`chance_level`).
        - ``act_heads_sink_mass`` (ACT, when heads were calibrated): the smallest hidden-sink
          mass of a calibrated head on the calibration prompts > ``config.tau`` (one sink's
          worth per prompt; below it the head has a hidden sink on few prompts, and ACT leaves
          the prompts without one unchanged).
        """
        cfg, n = self.config, len(self.before)
        nan = float("nan")
        level = chance_level([1 / self.n_choices] * n, 1, cfg.chance_quantile) if self.n_choices and n else nan
        shared = nan if self.heldout_in_calibration is None else self.heldout_in_calibration
        out = [
            at_least(
                "heldout_items",
                n,
                cfg.min_heldout,
                f"held-out items the accuracies are measured on; with {n} one item is {1 / max(n, 1):.1%} and the "
                "difference cannot resolve a gain of a few points: add items",
            ),
            at_most(
                "heldout_disjoint",
                shared,
                0,
                "held-out prompts that are also calibration prompts (where the calibration was chosen): "
                "its held-out accuracy would be optimistic; give the splits different items",
            ),
            above(
                "base_above_chance",
                self.accuracy_before,
                level,
                f"held-out accuracy without calibration against the {cfg.chance_quantile:.0%} quantile of "
                f"guessing among {self.n_choices} choices on {n} items (chance "
                + (f"{1 / self.n_choices:.2f}" if self.n_choices else "not known")
                + "): at chance there is nothing to calibrate and a change is noise",
            ),
        ]
        if self.heldout_in_calibration is None:  # a NaN "failed" here said nothing about the splits
            out[1] = not_tested(out[1], "the overlap of the held-out and calibration prompts was not measured")
        if not level < 1:  # no item, or so few that even all right cannot beat guessing
            out[2] = not_tested(out[2], f"{n} held-out item(s): too few to beat guessing; add items")
        if cfg.method == "act" and self.heads:
            measured = len(self.head_sink_mass) == len(self.heads)
            weakest = int(np.argmin(self.head_sink_mass)) if measured else 0
            layer, head = self.heads[weakest]
            out.append(
                above(
                    "act_heads_sink_mass",
                    self.head_sink_mass[weakest] if measured else nan,
                    cfg.tau,
                    f"smallest hidden-sink mass on the calibration prompts (mean over prompts of the summed recv_mean "
                    f"of its hidden sinks) of the {len(self.heads)} calibrated head(s)"
                    + (f", head {layer}.{head}" if measured else " (not measured)")
                    + f", against tau = {cfg.tau:g}: below it the head has hidden sinks on few prompts, ACT leaves "
                    "it nearly unchanged, and a change in accuracy is not ACT's doing",
                )
            )
        return tuple(out)

    def to_dataframe(self) -> pd.DataFrame:
        """Held-out accuracy before and after (accuracy.csv): condition, n, correct, accuracy,
        ci_low, ci_high (Wilson), mean_logp_correct."""
        rows = []
        for cond, correct, logp in (("before", self.before, self.logp_before), ("after", self.after, self.logp_after)):
            k, n = int(np.sum(correct)), len(correct)
            lo, hi = wilson_interval(k, n, self.config.confidence)
            rows.append(
                {
                    "condition": cond,
                    "n": n,
                    "correct": k,
                    "accuracy": k / n,
                    "ci_low": lo,
                    "ci_high": hi,
                    "mean_logp_correct": float(np.mean(logp)),
                }
            )
        return pd.DataFrame(rows)

    def heads_dataframe(self) -> pd.DataFrame:
        """The calibrated heads (heads.csv): layer, head, method, and beta or gamma."""
        value = self.config.beta if self.config.method == "act" else self.gamma
        name = "beta" if self.config.method == "act" else "gamma"
        return pd.DataFrame(
            {
                "layer": [h[0] for h in self.heads],
                "head": [h[1] for h in self.heads],
                "method": self.config.method,
                name: value,
            }
        )

    def search_dataframe(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.search))

    def items_dataframe(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "id": list(self.item_ids),
                "correct_before": self.before,
                "correct_after": self.after,
                "logp_before": self.logp_before,
                "logp_after": self.logp_after,
            }
        )

    def summary(self) -> dict:
        lo, hi = self.difference_interval()
        acc = self.to_dataframe().set_index("condition")
        return {
            "method": self.config.method,
            "task": self.task,
            "heads": [f"{l}.{h}" for l, h in self.heads],
            "gamma": self.gamma,
            "calibration_accuracy": {"before": round(self.calib_before, 4), "after": round(self.calib_after, 4)},
            "heldout_n": len(self.before),
            "heldout_accuracy": {
                c: {
                    "accuracy": round(float(acc.loc[c, "accuracy"]), 4),
                    "ci": [round(float(acc.loc[c, "ci_low"]), 4), round(float(acc.loc[c, "ci_high"]), 4)],
                }
                for c in ("before", "after")
            },
            "difference": round(self.accuracy_after - self.accuracy_before, 4),
            "difference_ci": [round(lo, 4), round(hi, 4)],
            "mcnemar_p": round(self.p_value(), 4),
            "checks": as_records(self.checks),
        }
