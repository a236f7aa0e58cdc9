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

Evaluation (`calibrate`): the shipped tasks (`interp/data/tasks/*.jsonl`, written for this
project) are scored by the next-token logits restricted to the answer tokens. ACT heads are
searched greedily on the calibration split (candidates: the heads with the largest hidden-sink
mass on the calibration prompts; each candidate is added if it improves calibration accuracy,
ties broken by the mean log-prob of the correct answer);
ZeroTuning's gamma is chosen on a small grid. Held-out accuracy before and after is reported
with Wilson intervals, a paired bootstrap interval of the difference and an exact McNemar test.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Shaped
from torch import Tensor

from interp.errors import InterpError
from interp.hooks import KeyBias, intervene, key_bias

__all__ = [
    "CalibrationConfig",
    "CalibrationResult",
    "Task",
    "TaskItem",
    "ACTBias",
    "available_tasks",
    "load_task",
    "act_bias",
    "act_edits",
    "zerotune_edits",
    "first_token_keys",
    "check_heads",
    "choice_token_ids",
    "score_task",
    "rank_act_candidates",
    "wilson_interval",
    "paired_bootstrap_diff",
    "mcnemar_exact",
    "calibrate",
]

Head = tuple[int, int]  # (layer, head)


# --------------------------------------------------------------------------------------------
# tasks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskItem:
    """One labelled prompt: ``answer`` indexes the task's ``choices``."""

    id: str
    split: str  # "calibration" or "heldout"
    prompt: str
    answer: int


@dataclass(frozen=True)
class Task:
    """A small labelled task scored by the next-token logits of its answer choices.

    File format (JSONL): a header line ``{"task", "kind", "description", "template",
    "choices"}`` then one item per line ``{"id", "split", "answer", <template fields>}``;
    ``answer`` is a choice (without its leading space); an ``options`` list fills the template
    fields A, B, C, ... .
    """

    name: str
    kind: str
    description: str
    choices: tuple[str, ...]
    items: tuple[TaskItem, ...]

    def split(self, name: str) -> tuple[TaskItem, ...]:
        out = tuple(it for it in self.items if it.split == name)
        if not out:
            raise InterpError(f"task '{self.name}' has no items in split '{name}': add items with \"split\": \"{name}\"")
        return out


def available_tasks() -> list[str]:
    """Names of the shipped tasks."""
    folder = resources.files("interp").joinpath("data/tasks")
    return sorted(p.name[: -len(".jsonl")] for p in folder.iterdir() if p.name.endswith(".jsonl"))


def load_task(name: str) -> Task:
    """A shipped task by name (see `available_tasks`) or a task file path (.jsonl)."""
    if name.endswith(".jsonl") or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise InterpError(f"task file {path} not found")
        raw = path.read_text(encoding="utf-8")
    else:
        if name not in available_tasks():
            raise InterpError(f"unknown task '{name}': use one of {', '.join(available_tasks())} or a .jsonl path")
        raw = resources.files("interp").joinpath(f"data/tasks/{name}.jsonl").read_text(encoding="utf-8")
    lines = [ln for ln in raw.splitlines() if ln.strip()]
    if not lines:
        raise InterpError(f"task '{name}' is empty: it needs a header line and items")
    try:
        rows = [json.loads(ln) for ln in lines]
    except json.JSONDecodeError as err:
        raise InterpError(f"task '{name}' is not valid JSONL ({err})") from err
    head, body = rows[0], rows[1:]
    for key in ("task", "template", "choices"):
        if key not in head:
            raise InterpError(f"task '{name}': the first line must be a header with '{key}'")
    choices = tuple(head["choices"])
    labels = [c.strip() for c in choices]
    items = []
    for n, row in enumerate(body):
        fields = {k: v for k, v in row.items() if k not in ("id", "split", "answer", "options")}
        for letter, opt in zip("ABCDEFGHIJ", row.get("options", [])):
            fields[letter] = opt
        try:
            prompt = head["template"].format(**fields)
        except KeyError as err:
            raise InterpError(f"task '{name}' item {n + 1} lacks template field {err}") from err
        if row.get("answer") not in labels:
            raise InterpError(f"task '{name}' item {n + 1}: answer {row.get('answer')!r} is not one of {labels}")
        items.append(TaskItem(str(row.get("id", n)), str(row.get("split", "heldout")), prompt, labels.index(row["answer"])))
    return Task(head["task"], head.get("kind", ""), head.get("description", ""), choices, tuple(items))


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
    _check_beta(beta)
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
        scale: the model's softmax scale.
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

    def sink_mass(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """(S [batch, key_pos] bool, m [batch, query_pos]) of this head from its q and k."""
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


def check_heads(lm, heads: Sequence[Head]) -> list[Head]:
    """Validated (layer, head) pairs, or an error naming the bad one and the valid range."""
    out = []
    for spec in heads:
        try:
            layer, head = (int(x) for x in spec)
        except (TypeError, ValueError) as err:
            raise InterpError(f"head spec {spec!r} is not a (layer, head) pair: write heads as LAYER.HEAD, e.g. 12.3") from err
        if not 0 <= layer < lm.arch.n_layers or not 0 <= head < lm.arch.n_heads:
            raise InterpError(
                f"head {layer}.{head} out of range: the model has {lm.arch.n_layers} layers (0-{lm.arch.n_layers - 1}) "
                f"and {lm.arch.n_heads} heads per layer (0-{lm.arch.n_heads - 1})"
            )
        out.append((layer, head))
    return out


def act_edits(
    lm,
    heads: Sequence[Head],
    *,
    beta: float = 0.4,
    tau: float = 0.1,
    min_queries: int = 16,
    include_first: bool = False,
    attention_mask: Optional[Tensor] = None,
    backend: str = "auto",
) -> list[ACTBias]:
    """ACT on ``heads`` for a batch with ``attention_mask`` (use inside `interp.hooks.intervene`)."""
    _check_beta(beta)
    if not 0 < tau < 1:
        raise InterpError(f"tau must lie in (0, 1), got {tau}")
    placeholder = torch.zeros(1, dtype=torch.bool)
    return [
        ACTBias(
            layer, head, placeholder, 0.0, beta=beta, tau=tau, min_queries=min_queries, include_first=include_first,
            attention=lm.attention_kwargs(layer), key_padding_mask=attention_mask, backend=backend,
        )
        for layer, head in check_heads(lm, heads)
    ]


def zerotune_edits(
    lm,
    heads: Sequence[Head],
    gamma: Union[float, Sequence[float]],
    *,
    attention_mask: Optional[Tensor] = None,
    batch: int = 1,
    key_pos: Optional[int] = None,
) -> list[KeyBias]:
    """Initial-token scaling on ``heads``: a log(gamma) bias on each row's first real token.

    Args:
        gamma: one value for every head, or one per head; each > 0 (1 = no change).
        attention_mask: the batch's HF attention_mask (left padding), or None with ``batch``
            and ``key_pos``.
    """
    heads = check_heads(lm, heads)
    gammas = [gamma] * len(heads) if isinstance(gamma, (int, float)) else list(gamma)
    if len(gammas) != len(heads):
        raise InterpError(f"got {len(gammas)} gammas for {len(heads)} heads: give one gamma, or one per head")
    for g in gammas:
        _check_gamma(g)
    keys = first_token_keys(attention_mask, batch, key_pos)
    return [key_bias(layer, head, keys, math.log(g)) for (layer, head), g in zip(heads, gammas)]


def _check_beta(beta: float) -> None:
    if not (isinstance(beta, (int, float)) and 0.0 < beta <= 1.0):
        raise InterpError(f"beta must lie in (0, 1], got {beta!r} (ACT uses 0.4; 1 = no change)")


def _check_gamma(gamma: float) -> None:
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma > 0):
        raise InterpError(f"gamma must be a finite number > 0, got {gamma!r} (1 = no change; <1 flattens, >1 sharpens)")


# --------------------------------------------------------------------------------------------
# scoring and statistics
# --------------------------------------------------------------------------------------------


def choice_token_ids(lm, choices: Sequence[str]) -> list[int]:
    """First token id of each answer choice; they must differ."""
    ids = []
    for c in choices:
        toks = lm.tokenizer(c, add_special_tokens=False).input_ids
        if not toks:
            raise InterpError(f"answer choice {c!r} tokenises to nothing")
        ids.append(toks[0])
    if len(set(ids)) != len(ids):
        raise InterpError(f"answer choices {list(choices)} share a first token: make their first tokens differ")
    return ids


EditFactory = Callable[[Tensor, Tensor], list]  # (input_ids, attention_mask) -> edits for that batch


def score_task(
    lm, items: Sequence[TaskItem], choice_ids: Sequence[int], edits: Optional[EditFactory] = None, *, batch_size: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and correct-answer log-probabilities of ``items``.

    Each prompt is scored by the next-token logits restricted to ``choice_ids`` (the first token
    of each choice): prediction = argmax, log-prob = log-softmax over the choices.

    Returns:
        (pred [n] int, logprob [n] float of the correct choice).
    """
    preds, logps = [], []
    cids = torch.tensor(list(choice_ids))
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        ids, mask = lm.encode_batch([it.prompt for it in chunk])
        batch_edits = edits(ids, mask) if edits is not None else []
        with intervene(lm, batch_edits):
            logits = lm.forward(ids, mask)[:, -1, :]
        # a softmax over the answer-label logits (vocabulary), not attention
        scores = torch.log_softmax(logits[:, cids.to(logits.device)].double(), dim=-1).cpu()
        answers = torch.tensor([it.answer for it in chunk])
        preds.append(scores.argmax(-1).numpy())
        logps.append(scores[torch.arange(len(chunk)), answers].numpy())
    return np.concatenate(preds), np.concatenate(logps)


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
# config, result, driver
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationConfig:
    """One calibration experiment.

    Attributes:
        method: "act" (Yu et al. 2024) or "zerotune" (initial-token scaling, Han et al. 2025).
        task: a shipped task name (`available_tasks`) or a .jsonl task file.
        heads: fixed heads as (layer, head) pairs; None = search (ACT) / every head (ZeroTuning).
        beta: ACT, fraction of sink mass kept.
        tau: ACT, sink threshold on recv_mean.
        min_queries: ACT, keys seen by fewer queries are not sinks (1 = METRICS.md exactly).
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
    """

    method: str = "act"  # "act" | "zerotune"
    task: str = "sentiment"  # shipped task or .jsonl path
    heads: Optional[tuple[Head, ...]] = None  # None: search (act) / all heads (zerotune)
    beta: float = 0.4  # ACT (Yu et al. 2024)
    tau: float = 0.1  # ACT sink threshold
    min_queries: int = 16  # 1 = METRICS.md exactly
    include_first: bool = False  # ACT keeps the initial sink
    n_candidates: int = 12  # ACT greedy search size
    gamma: Optional[float] = None  # ZeroTuning fixed gamma
    gammas: tuple[float, ...] = (0.25, 0.5, 0.75, 1.5, 2.0, 4.0)  # ZeroTuning grid
    batch_size: int = 20
    confidence: float = 0.95
    n_boot: int = 2000
    seed: int = 0
    backend: str = "auto"

    def validate(self, lm=None) -> None:
        """Raise `InterpError` on settings outside their range (and heads outside ``lm``)."""
        if self.method not in ("act", "zerotune"):
            raise InterpError(f"unknown calibration method '{self.method}': use 'act' or 'zerotune'")
        _check_beta(self.beta)
        if not 0 < self.tau < 1:
            raise InterpError(f"tau must lie in (0, 1), got {self.tau}")
        if self.gamma is not None:
            _check_gamma(self.gamma)
        if not self.gammas and self.gamma is None and self.method == "zerotune":
            raise InterpError("no gammas to search: give a grid (e.g. 0.5,2) or a fixed gamma")
        for g in self.gammas:
            _check_gamma(g)
        if not (isinstance(self.n_candidates, int) and self.n_candidates >= 1):
            raise InterpError(f"n_candidates must be an int >= 1, got {self.n_candidates!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise InterpError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        if not 0 < self.confidence < 1:
            raise InterpError(f"confidence must lie in (0, 1), got {self.confidence}")
        if self.heads is not None and not self.heads:
            raise InterpError("heads is empty: give at least one LAYER.HEAD, or omit it to search")
        if lm is not None and self.heads is not None:
            check_heads(lm, self.heads)

    def settings(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


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

    def to_dataframe(self) -> pd.DataFrame:
        """Held-out accuracy before and after (accuracy.csv): condition, n, correct, accuracy,
        ci_low, ci_high (Wilson), mean_logp_correct."""
        rows = []
        for cond, correct, logp in (("before", self.before, self.logp_before), ("after", self.after, self.logp_after)):
            k, n = int(np.sum(correct)), len(correct)
            lo, hi = wilson_interval(k, n, self.config.confidence)
            rows.append(
                {"condition": cond, "n": n, "correct": k, "accuracy": k / n, "ci_low": lo, "ci_high": hi,
                 "mean_logp_correct": float(np.mean(logp))}
            )
        return pd.DataFrame(rows)

    def heads_dataframe(self) -> pd.DataFrame:
        """The calibrated heads (heads.csv): layer, head, method, and beta or gamma."""
        value = self.config.beta if self.config.method == "act" else self.gamma
        name = "beta" if self.config.method == "act" else "gamma"
        return pd.DataFrame(
            {"layer": [h[0] for h in self.heads], "head": [h[1] for h in self.heads],
             "method": self.config.method, name: value}
        )

    def search_dataframe(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.search))

    def items_dataframe(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"id": list(self.item_ids), "correct_before": self.before, "correct_after": self.after,
             "logp_before": self.logp_before, "logp_after": self.logp_after}
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
                c: {"accuracy": round(float(acc.loc[c, "accuracy"]), 4),
                    "ci": [round(float(acc.loc[c, "ci_low"]), 4), round(float(acc.loc[c, "ci_high"]), 4)]}
                for c in ("before", "after")
            },
            "difference": round(self.accuracy_after - self.accuracy_before, 4),
            "difference_ci": [round(lo, 4), round(hi, 4)],
            "mcnemar_p": round(self.p_value(), 4),
        }


def _better(rec: dict, best: dict) -> bool:
    """Search criterion: higher calibration accuracy, or the same accuracy and a higher mean
    log-prob of the correct answer (so a search can still move when accuracy is at 100%)."""
    return (rec["accuracy"], rec["mean_logp"]) > (best["accuracy"], best["mean_logp"])


def rank_act_candidates(lm, items: Sequence[TaskItem], config: CalibrationConfig) -> list[tuple[Head, float]]:
    """Heads ranked by hidden-sink mass on ``items`` (mean over prompts of sum of recv_mean over
    the hidden sinks), largest first; only heads with some hidden sink."""
    from interp.analyses.sinks import sink_members
    from interp.distributed import map_units
    from interp.hooks import capture
    from interp.kernels import attention_stats

    n_layers, n_heads = lm.arch.n_layers, lm.arch.n_heads

    def batch_mass(key: str) -> Tensor:
        start = int(key.removeprefix("batch-"))
        chunk = items[start : start + config.batch_size]
        ids, mask = lm.encode_batch([it.prompt for it in chunk])
        mass = torch.zeros(n_layers, n_heads, dtype=torch.float64)

        def on_layer(layer, q, k, v, mask=mask):
            rm = attention_stats(
                q, k, **lm.attention_kwargs(layer), key_padding_mask=mask, backend=config.backend
            ).recv_mean
            member, hidden = sink_members(rm.double(), config.tau, config.min_queries)
            chosen = member if config.include_first else hidden
            mass[layer] += torch.where(chosen, rm.double(), 0.0).sum(dim=(0, 2)).cpu()

        with capture(lm, keep=(), on_layer=on_layer):
            lm.forward(ids, mask)
        return mass

    # Batches are shared over the ranks (interp.distributed); summed in batch order as before.
    keys = [f"batch-{start}" for start in range(0, len(items), config.batch_size)]
    per_batch = map_units(keys, batch_mass, what="ACT candidate batches", progress=False, idle_ok=True)
    mass = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    for key in keys:
        mass += per_batch[key]
    mass /= len(items)
    order = torch.argsort(mass.flatten(), descending=True).tolist()
    return [((i // n_heads, i % n_heads), float(mass.flatten()[i])) for i in order if mass.flatten()[i] > 0]


def calibrate(lm, config: CalibrationConfig = CalibrationConfig(), *, log=None, progress: bool = True) -> CalibrationResult:
    """Choose a calibration on the task's calibration split and evaluate it on the held-out split.

    Both searches compare (calibration accuracy, mean log-prob of the correct answer)
    lexicographically: accuracy first, the log-prob only breaks ties (Yu et al. select on
    accuracy alone, which cannot move on a calibration split already at 100%).
    ACT: greedy forward selection over the ``n_candidates`` heads with the strongest hidden
    sinks: a head is kept when adding it to the kept set is better than the best so far.
    ZeroTuning: every head (or ``heads``), gamma = the best grid value, or 1 (no change) when
    none beats the uncalibrated model.

    Args:
        lm: a `interp.models.LoadedModel`.
        config: `CalibrationConfig`.
        log: optional `interp.runs.SampleLog` (or `interp.distributed.open_log`): each search
            step is stored, a re-run resumes.
        progress: progress bar over search steps.

    Launched on several ranks, every step's batches of items are shared over the ranks (the
    search itself runs in lockstep on all of them) and every rank returns the same result;
    rank 0 alone writes ``log``. More ranks than calibration batches is an error.

    Returns:
        `CalibrationResult` (held-out accuracy before/after with intervals; honest about no gain).
    """
    from tqdm.auto import tqdm

    from interp.distributed import log_add, map_units, world

    config.validate(lm)
    task = load_task(config.task)
    calib, held = task.split("calibration"), task.split("heldout")
    cids = choice_token_ids(lm, task.choices)
    answers_c = np.array([it.answer for it in calib])

    w = world()
    n_batches = -(-len(calib) // config.batch_size)
    if w.size > n_batches:
        raise InterpError(
            f"{w.size} ranks but the calibration split has only {n_batches} batches of --batch-size {config.batch_size}: "
            f"launch at most {n_batches} processes or lower --batch-size"
        )

    def evaluate(items, factory):
        # Units of work = batches of items, shared over the ranks; the batches (and so the
        # padding and the numbers) are those of a one-process run.
        bs = config.batch_size
        keys = [f"batch-{start}" for start in range(0, len(items), bs)]

        def one(key):
            start = int(key.removeprefix("batch-"))
            return score_task(lm, items[start : start + bs], cids, factory, batch_size=bs)

        got = map_units(keys, one, what="task batches", progress=False, idle_ok=True)
        pred = np.concatenate([got[k][0] for k in keys])
        logp = np.concatenate([got[k][1] for k in keys])
        return pred == np.array([it.answer for it in items]), logp

    def cached(key, fn):
        if log is not None and log.done(key):
            return {k: v for k, v in log.records[key].items() if k != "id"}
        rec = fn()
        log_add(log, key, rec)  # rank 0 writes; the other ranks keep it in memory
        return rec

    def calib_step(factory, **extra):
        correct, logp = evaluate(calib, factory)
        return {"accuracy": float(correct.mean()), "mean_logp": float(logp.mean()), **extra}

    base = cached("calib-baseline", lambda: calib_step(None, step="baseline"))
    search: list[dict] = [base]
    if config.method == "act":
        def factory_for(heads):
            return lambda ids, mask: act_edits(
                lm, heads, beta=config.beta, tau=config.tau, min_queries=config.min_queries,
                include_first=config.include_first, attention_mask=mask, backend=config.backend,
            )

        gamma = None
        if config.heads is not None:
            chosen = list(config.heads)
            best = cached("calib-fixed", lambda: calib_step(factory_for(chosen), step="fixed heads"))
            search.append(best)
        else:
            ranked = cached(
                "candidates",
                lambda: {"ranked": [[l, h, m] for (l, h), m in rank_act_candidates(lm, calib, config)[: config.n_candidates]]},
            )["ranked"]
            chosen, best = [], base
            for layer, head, mass in tqdm(ranked, desc="ACT head search", unit="head", disable=not progress):
                trial = chosen + [(int(layer), int(head))]
                rec = cached(
                    "trial-" + ",".join(f"{l}.{h}" for l, h in trial),  # keyed by the whole set tried
                    lambda: calib_step(factory_for(trial), step=f"+{layer}.{head}", hidden_mass=mass),
                )
                kept = _better(rec, best)
                search.append({**rec, "kept": kept})
                if kept:
                    chosen, best = trial, rec
        final = factory_for(chosen) if chosen else None
    else:
        heads = list(config.heads) if config.heads is not None else [
            (l, h) for l in range(lm.arch.n_layers) for h in range(lm.arch.n_heads)
        ]
        chosen = heads

        def factory_for(g):
            return lambda ids, mask: zerotune_edits(lm, heads, g, attention_mask=mask)

        if config.gamma is not None:
            gamma = float(config.gamma)
            best = cached("calib-fixed", lambda: calib_step(factory_for(gamma), step=f"gamma={gamma:g}", gamma=gamma))
            search.append(best)
        else:
            gamma, best = 1.0, {**base, "gamma": 1.0}
            for g in tqdm(config.gammas, desc="ZeroTuning gamma search", unit="gamma", disable=not progress):
                rec = cached(f"gamma-{g:g}", lambda: calib_step(factory_for(g), step=f"gamma={g:g}", gamma=g))
                search.append(rec)
                if _better(rec, best):
                    gamma, best = float(g), rec
        final = factory_for(gamma) if gamma != 1.0 else None
        if final is None:
            chosen = []

    def heldout(key, factory):
        def run():
            c, lp = evaluate(held, factory)
            return {"correct": c.tolist(), "logp": lp.tolist()}

        return cached(key, run)

    before = heldout("heldout-before", None)
    after = heldout("heldout-after", final) if final is not None else before
    return CalibrationResult(
        config=config,
        model=lm.name,
        task=task.name,
        heads=tuple((int(l), int(h)) for l, h in chosen),
        gamma=gamma if config.method == "zerotune" else None,
        search=tuple(search),
        calib_before=float(base["accuracy"]),
        calib_after=float(best["accuracy"]),
        item_ids=tuple(it.id for it in held),
        before=np.asarray(before["correct"], bool),
        after=np.asarray(after["correct"], bool),
        logp_before=np.asarray(before["logp"], float),
        logp_after=np.asarray(after["logp"], float),
    )
