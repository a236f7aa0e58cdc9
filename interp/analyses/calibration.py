"""Training-free attention calibrations (ACT, ZeroTuning) as scoped interventions, and whether they help.

Both calibrations are key biases on chosen heads (`interp.hooks.key_bias`: an extra q/k
dimension adds a bias to the scores of chosen keys inside the model's own fused attention; no
[T, T] tensor anywhere):

- ZeroTuning (initial-token scaling; Han et al. 2025): A'_i0 = gamma A_i0 / D,
  A'_ij = A_ij / D with D = (gamma - 1) A_i0 + 1, which is a bias of log(gamma) on key 0.
- ACT (Yu et al. 2024, "Unveiling and Harnessing Hidden Attention Sinks"), beta = 0.4: for j in
  the head's sink set S, A'_ij = beta A_ij, and the removed mass goes to the other visible keys
  in proportion to A_ij. With m_i = sum_{j in S} A_ij this is a per-row bias on the keys of S:

      b_i = log(beta (1 - m_i) / (1 - beta m_i))

  (S keys get e^b / Z = beta with Z = 1 - m + m e^b = (1 - m) / (1 - beta m); other keys get
  1 / Z = (1 - beta m) / (1 - m), exactly the proportional share). Rows with m_i = 1 have no
  other key to receive the mass and are left unchanged (b_i = 0).
  S and m_i are computed *inside the same forward pass*, at the head's layer, from the live q
  and k (`ACTBias`): one kernel call gives recv_mean (hence S: `sink_members`, the hidden
  sinks by default since ACT keeps the initial sink), a second gives m_i as the ``seg``
  statistic of a segment labelling S; then the bias is added. Earlier calibrated heads are
  therefore seen by later ones, as in the original method.

Evaluation: the choice sets (`interp.datasets.choices`; shipped under `interp/data/tasks`) are
scored by the next-token logits restricted to the answer tokens (`choice_scores`). ACT heads are
searched greedily on the calibration split (candidates: the heads with the largest hidden-sink
mass on the calibration prompts, `hidden_sink_mass`, ranked by `interp.analyses.rank_heads`;
each candidate is added if it improves calibration accuracy, ties broken by the mean log-prob of
the correct answer, `better`); ZeroTuning's gamma is chosen on a small grid. Held-out accuracy before and after is
reported with Wilson intervals, a paired bootstrap interval of the difference and an exact
McNemar test.

Checks (`interp.analyses.checks`, `CalibrationResult.checks`): the finding rests on enough
held-out items (``heldout_items``), a held-out split that shares no prompt with the calibration
split the setting was chosen on (``heldout_disjoint``), an uncalibrated model above the accuracy
guessing reaches by luck on those items (``base_above_chance``: at chance there is nothing to
calibrate, and a change is noise), and for ACT, calibrated heads that carry hidden-sink mass
above tau on the calibration prompts (``act_heads_sink_mass``: else ACT scales almost nothing).

This module is pure: the bias and statistics functions, `ACTBias` (computed from the live q
and k inside the model's forward pass), the frozen `CalibrationConfig` and `CalibrationResult`.
The runner that drives the model (the edits for a model's heads, batched scoring, the searches,
resume) is `interp.experiments.calibration`.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Integer, Shaped
from torch import Tensor

from interp.analyses._config import Config
from interp.analyses.checks import Check, above, as_records, at_least, at_most, chance_level
from interp.errors import InterpError
from interp.hooks import KeyBias

__all__ = [
    "CalibrationConfig",
    "CalibrationResult",
    "ACTBias",
    "act_bias",
    "first_token_keys",
    "check_beta",
    "check_gamma",
    "head_pairs",
    "choice_scores",
    "hidden_sink_mass",
    "better",
    "wilson_interval",
    "paired_bootstrap_diff",
    "mcnemar_exact",
    "CHECK_SETTINGS",
]

Head = tuple[int, int]  # (layer, head)

# The config fields that only set check thresholds: they change no number, so a resumed search
# leaves them out of the settings it must agree on (run.json still records them).
CHECK_SETTINGS = ("min_heldout", "chance_quantile")


# --------------------------------------------------------------------------------------------
# interventions
# --------------------------------------------------------------------------------------------


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
class ACTBias(KeyBias):
    """ACT on one head as a `KeyBias` whose keys and per-row bias are computed from the live q, k.

    ``keys`` and ``bias`` of the parent are placeholders (replaced at every forward pass).

    Attributes:
        beta: fraction of the sink mass kept (Yu et al. 2024: 0.4).
        tau: sink threshold on recv_mean (0.1).
        min_queries: keys seen by fewer queries are not sinks (see `interp.analyses.sinks`).
        include_first: also scale the first sink (usually position 0); ACT keeps it (False).
        attention: the layer's softmax settings, ``lm.attention_kwargs(layer)`` (scale, window,
            soft-cap, sink logits).
        key_padding_mask: [batch, key_pos] HF attention_mask of the batch, or None.
        backend: kernel backend.
    """

    beta: float = 0.4
    tau: float = 0.1
    min_queries: int = 16
    include_first: bool = False
    attention: Optional[dict] = None  # the layer's `LoadedModel.attention_kwargs` (scale, window, cap, sinks)
    key_padding_mask: Optional[Tensor] = None
    backend: str = "auto"

    def sink_mass(
        self, q: Float[Tensor, "batch head query_pos d_head"], k: Float[Tensor, "batch kv_head key_pos d_head"]
    ) -> tuple[Bool[Tensor, "batch key_pos"], Float[Tensor, "batch query_pos"]]:
        """(S [batch, key_pos] bool, m [batch, query_pos]) of this head from its q and k (post-RoPE)."""
        from interp.analyses.sinks import sink_members
        from interp.kernels import attention_stats

        group = q.shape[1] // k.shape[1]
        qh = q[:, self.head : self.head + 1].float()
        kh = k[:, self.head // group : self.head // group + 1].float()
        mask = self.key_padding_mask
        attention = dict(self.attention or {"scale": 1.0})
        if attention.get("sink_logits") is not None:
            attention["sink_logits"] = attention["sink_logits"][self.head : self.head + 1]
        common = dict(key_padding_mask=mask, backend=self.backend, **attention)
        cols = attention_stats(qh, kh, columns=True, **common)
        member, hidden = sink_members(cols.recv_mean[:, 0], self.tau, self.min_queries)
        sinks = member if self.include_first else hidden
        segments = torch.where(sinks, 0, -1).long()
        m = attention_stats(qh, kh, columns=False, segments=segments, n_segments=1, **common).seg[:, 0, :, 0]
        return sinks, m

    def columns(self, q: Tensor, k: Tensor, scale: float) -> tuple[Tensor, Tensor]:
        sinks, m = self.sink_mass(q, k)
        bias = act_bias(m.float(), self.beta)
        return KeyBias(self.layer, self.head, sinks, bias).columns(q, k, scale)


def head_pairs(heads: Sequence[Any]) -> tuple[Head, ...]:
    """``heads`` as (layer, head) int pairs, or an error naming the malformed one.

    Whether the heads exist is for the runner to check: it has the model.
    """
    out = []
    for spec in heads:
        try:
            layer, head = (int(x) for x in spec)
        except (TypeError, ValueError) as err:
            raise InterpError(
                f"head spec {spec!r} is not a (layer, head) pair: write heads as LAYER.HEAD, e.g. 12.3"
            ) from err
        out.append((layer, head))
    return tuple(out)


def check_beta(beta: float) -> None:
    """Raise `InterpError` unless 0 < beta <= 1 (ACT's fraction of sink mass kept)."""
    if not (isinstance(beta, (int, float)) and 0.0 < beta <= 1.0):
        raise InterpError(f"beta must lie in (0, 1], got {beta!r} (ACT uses 0.4; 1 = no change)")


def check_gamma(gamma: float) -> None:
    """Raise `InterpError` unless gamma is a finite number > 0 (ZeroTuning's first-token scale)."""
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma > 0):
        raise InterpError(f"gamma must be a finite number > 0, got {gamma!r} (1 = no change; <1 flattens, >1 sharpens)")


# --------------------------------------------------------------------------------------------
# scoring and statistics
# --------------------------------------------------------------------------------------------


def choice_scores(
    logits: Float[Tensor, "batch n_choices"], answers: Integer[Tensor, " batch"]
) -> tuple[np.ndarray, np.ndarray]:
    """Prediction and correct-answer log-probability of each prompt from its answer-choice logits.

    A softmax over the answer-label logits (vocabulary, not attention), in float64.

    Args:
        logits: [batch, n_choices] next-token logits of each choice's first token.
        answers: [batch] index of the correct choice.

    Returns:
        (pred [batch] int: argmax choice, logp [batch] float: log-softmax of the correct choice).
    """
    # a softmax over the [batch, choice] answer logits, not over attention (that comes from interp.kernels)
    scores = torch.log_softmax(logits.double(), dim=-1).cpu()
    answers = answers.cpu().long()
    return scores.argmax(-1).numpy(), scores[torch.arange(len(answers)), answers].numpy()


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


def better(rec: dict, best: dict) -> bool:
    """Search criterion: higher calibration accuracy, or the same accuracy and a higher mean
    log-prob of the correct answer (so a search can still move when accuracy is at 100%)."""
    return (rec["accuracy"], rec["mean_logp"]) > (best["accuracy"], best["mean_logp"])


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k / n."""
    if n <= 0:
        raise InterpError("no items to compute an accuracy interval from")
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_bootstrap_diff(
    before: np.ndarray, after: np.ndarray, *, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(after) - mean(before), resampling items (paired)."""
    before, after = np.asarray(before, float), np.asarray(after, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(before), size=(n_boot, len(before)))
    diffs = after[idx].mean(1) - before[idx].mean(1)
    lo, hi = np.quantile(diffs, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def mcnemar_exact(before: np.ndarray, after: np.ndarray) -> float:
    """Two-sided exact McNemar p-value for paired correctness vectors (binomial on discordant pairs)."""
    before, after = np.asarray(before, bool), np.asarray(after, bool)
    b = int((before & ~after).sum())
    c = int((~before & after).sum())
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(0, min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


# --------------------------------------------------------------------------------------------
# config and result
# --------------------------------------------------------------------------------------------


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
        object.__setattr__(self, "gammas", tuple(self.gammas))
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
            object.__setattr__(self, "heads", head_pairs(self.heads))


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
