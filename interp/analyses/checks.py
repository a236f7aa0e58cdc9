"""Whether a finding can be trusted: the preconditions every analysis checks on its own result.

A number can be computed and still mean nothing: a normalised patching score when the model does
not do the task (its denominator is noise), a retrieval score from a handful of answered needles,
a "0% first-token sinks" where position 0 is not the BOS token the model was trained with, the
best of 400 heads "beating" a chance level it reaches by luck. Each analysis therefore states the
conditions its finding rests on and checks them on its result, with the numbers:

- each result has ``checks: tuple[Check, ...]`` (a property or field) and puts them in its
  ``summary()`` (``"checks"``, `as_records`);
- the experiment driver (`interp.experiments.execute`) writes them into run.json, starts the
  printed finding with `warning` when one fails, and under ``--strict`` raises `ChecksFailed`
  (exit code 3) after writing everything;
- the report marks the section of a failed check with a banner and has a column for it.

A `Check` compares one value with one threshold. Thresholds come from the papers where they give
one; otherwise they are defaults in the analysis's config, with a comment.

A check has three outcomes (`Check.outcome`): **passed**, **failed**, or **not tested**: the
run had too few seeds, samples or texts to decide (a spread from one seed is zero, so "above 2
standard deviations" would be met by construction; a check over an empty set says nothing).
A check that cannot fail is never reported as passed: it is `not_tested`, with the reason.
"not tested" is shown as such in run.json, the CLI line and the report; ``--strict`` treats it
as a failure (`blocking`).

This module is pure: the `Check` type, its constructors (`at_least`, `above`, `at_most`,
`holds`, `not_tested`), the chance levels of guessing heads (`chance_level`), and the text
helpers (`failed`, `untested`, `blocking`, `warning`, `as_records`). `ChecksFailed` is the error
of ``--strict``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from interp.errors import InterpError

__all__ = [
    "Check",
    "ChecksFailed",
    "at_least",
    "above",
    "at_most",
    "holds",
    "not_tested",
    "chance_level",
    "failed",
    "untested",
    "blocking",
    "warning",
    "as_records",
    "check_all",
]


@dataclass(frozen=True)
class Check:
    """One precondition of a finding, checked on the result.

    Attributes:
        name: short snake_case name, e.g. ``"clean_accuracy"`` (stable: scripts read it).
        value: the measured number (NaN when it could not be measured: that fails).
        threshold: the number it is compared with.
        passed: whether the finding may rest on it (False when not tested).
        detail: one plain sentence: what is compared, and what a failure means for the finding.
        op: how ``value`` must compare with ``threshold`` to pass: ">=", ">" or "<=".
        untested: why the run could not decide the check ("" when it was tested): too few
            seeds, samples or texts for the comparison to mean anything.
    """

    name: str
    value: float
    threshold: float
    passed: bool
    detail: str
    op: str = ">="
    untested: str = ""

    @property
    def outcome(self) -> str:
        """``"passed"``, ``"failed"`` or ``"not tested"``."""
        if self.untested:
            return "not tested"
        return "passed" if self.passed else "failed"

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly (run.json): name, outcome, value, threshold, passed, detail (NaN as
        None), and ``why_not_tested`` for a check the run could not decide."""
        record = {
            "name": self.name,
            "outcome": self.outcome,
            "value": _plain(self.value),
            "threshold": _plain(self.threshold),
            "passed": bool(self.passed),
            "detail": self.detail,
            "op": self.op,
        }
        if self.untested:
            record["why_not_tested"] = self.untested
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Check:
        """The inverse of `as_dict` (a run.json's record; None values are NaN)."""
        nan = float("nan")
        value, threshold = record.get("value"), record.get("threshold")
        untested = str(record.get("why_not_tested") or ("not tested" if record.get("outcome") == "not tested" else ""))
        return cls(
            str(record["name"]), nan if value is None else float(value), nan if threshold is None else float(threshold),
            bool(record["passed"]) and not untested, str(record.get("detail", "")), str(record.get("op", ">=")),
            untested,
        )  # fmt: skip

    def short(self) -> str:
        """``name = value (needs >= threshold)`` for one-line messages; ``name not tested (why)``."""
        if self.untested:
            return f"{self.name} not tested ({self.untested})"
        return f"{self.name} = {_fmt(self.value)} (needs {self.op} {_fmt(self.threshold)})"


class ChecksFailed(InterpError):
    """A check of the finding failed, or could not be tested, and the run was launched with
    ``--strict`` (CLI exit code 3).

    Raised after the run's outputs are written, so the failed result can still be read.
    """

    def __init__(self, what: str, checks: Sequence[Check]) -> None:
        self.checks = tuple(checks)
        bad = "; ".join(c.short() for c in self.checks)
        n_failed = sum(1 for c in self.checks if not c.untested)
        n_untested = len(self.checks) - n_failed
        counts = " and ".join(
            part for part in (f"{n_failed} check(s) failed" if n_failed else "",
                              f"{n_untested} not tested" if n_untested else "") if part
        )  # fmt: skip
        super().__init__(f"{what}: {counts} under --strict: {bad}")


def _plain(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def _fmt(x: float) -> str:
    x = float(x)
    if math.isnan(x):
        return "nan"
    if x == int(x) and abs(x) < 1e9:
        return str(int(x))
    return f"{x:.3g}"


def _measured(value: float) -> bool:
    return not math.isnan(float(value))


def at_least(name: str, value: float, threshold: float, detail: str) -> Check:
    """Passes when ``value >= threshold`` (NaN fails)."""
    return Check(name, float(value), float(threshold), _measured(value) and float(value) >= threshold, detail)


def above(name: str, value: float, threshold: float, detail: str) -> Check:
    """Passes when ``value > threshold`` (NaN fails)."""
    return Check(name, float(value), float(threshold), _measured(value) and float(value) > threshold, detail, ">")


def at_most(name: str, value: float, threshold: float, detail: str) -> Check:
    """Passes when ``value <= threshold`` (NaN fails)."""
    return Check(name, float(value), float(threshold), _measured(value) and float(value) <= threshold, detail, "<=")


def holds(name: str, condition: bool, detail: str) -> Check:
    """A yes/no condition as a check: value 1 or 0 against threshold 1."""
    return Check(name, 1.0 if condition else 0.0, 1.0, bool(condition), detail)


def not_tested(check: Check, why: str) -> Check:
    """``check`` reported as not tested: the run had too little to decide it (``why``, e.g.
    "one seed: no spread to compare with; give --seed twice or more"). Its value and threshold
    stay for the record; it never counts as passed."""
    if not why:
        raise ValueError("not_tested needs the reason the check could not be decided")
    return Check(check.name, check.value, check.threshold, False, check.detail, check.op, why)


def chance_level(
    p: float | Sequence[float] | np.ndarray, n_heads: int = 1, quantile: float = 0.95, n_sim: int = 4000, seed: int = 0
) -> float:
    """The accuracy the best of ``n_heads`` guessing heads reaches by luck (Monte Carlo).

    Each head guesses every item independently, item k right with probability ``p[k]`` (1 / the
    number of options of item k). Returns the ``quantile`` of the best head's accuracy: a head
    (or the model, ``n_heads=1``) above it beats guessing beyond what luck gives the best of that
    many (at 0.95: about a 5% false-alarm rate).

    Args:
        p: chance of each item (one number: every item of ``len`` 1; use a sequence for several).
        n_heads: how many heads are compared (the best is reported).
        quantile: in (0, 1).
    """
    probs = np.atleast_1d(np.asarray(p, dtype=float))
    if probs.size == 0:
        return float("nan")
    if not 0.0 < quantile < 1.0 or n_heads < 1:
        raise InterpError(f"chance_level needs quantile in (0, 1) and n_heads >= 1, got {quantile}, {n_heads}")
    rng = np.random.default_rng(seed)
    hits = np.zeros((n_sim, n_heads), dtype=np.int64)
    values, counts = np.unique(probs, return_counts=True)
    for value, count in zip(values, counts):  # items of one chance level: a binomial count each
        hits += rng.binomial(int(count), float(value), size=(n_sim, n_heads))
    best = hits.max(-1) / probs.size
    return float(np.quantile(best, quantile))


def failed(checks: Iterable[Check]) -> tuple[Check, ...]:
    """The checks that were tested and did not pass."""
    return tuple(c for c in checks if not c.passed and not c.untested)


def untested(checks: Iterable[Check]) -> tuple[Check, ...]:
    """The checks the run could not decide (too few seeds, samples or texts)."""
    return tuple(c for c in checks if c.untested)


def blocking(checks: Iterable[Check]) -> tuple[Check, ...]:
    """What ``--strict`` refuses: the failed checks and the untested ones."""
    return tuple(c for c in checks if not c.passed)


def warning(checks: Iterable[Check]) -> str:
    """The warning a finding starts with when a check fails or was not tested ("" when all pass).

    E.g. ``"WARNING, do not trust this finding: clean_accuracy = 0 (needs >= 0.8). "``, or
    ``"NOT TESTED: masking_top_below_random not tested (one seed: ...). "``.
    """
    checks = tuple(checks)
    bad, open_ = failed(checks), untested(checks)
    text = ""
    if bad:
        text += "WARNING, do not trust this finding: " + "; ".join(c.short() for c in bad) + ". "
    if open_:
        text += "NOT TESTED: " + "; ".join(c.short() for c in open_) + ". "
    return text


def as_records(checks: Iterable[Check]) -> list[dict[str, Any]]:
    """The checks as JSON-friendly dicts (the ``checks`` list of run.json and of summaries)."""
    return [c.as_dict() for c in checks]


def check_all(result: Any) -> tuple[Check, ...]:
    """A result's checks (``result.checks``; none for a result that declares none)."""
    return tuple(getattr(result, "checks", ()) or ())
