"""The report's settings and what it returns: `ReportConfig`, `StageReport`, `Report`, and the
stages (`STAGES`: the registry's experiments with a report setting, in order)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from interp.analyses.checks import Check, blocking, failed, untested
from interp.config import Config
from interp.errors import InterpError

__all__ = ["ReportConfig", "StageReport", "Report", "STAGES", "stage_configs"]


def _experiments() -> dict:
    """The registry's experiments that take part in the report, by name."""
    from interp.experiments import registry

    return {name: exp for name, exp in registry().items() if exp.report is not None}


STAGES = tuple(_experiments())  # in run order (the registry's report order)


@dataclass(frozen=True)
class ReportConfig(Config):
    """Settings of `run_report`. Each analysis config left as None gets the report's small default.

    Attributes:
        quick: use the smallest sizes (a first look in about a minute; noisier numbers). The
            defaults are sized so `make demo` finishes within 10 minutes on 2 CPU cores.
        stages: which stages to run, a subset of `STAGES` (all by default); a stage comes with
            the stages it needs (`InReport.needs`).
        configs: stage name -> the analysis config that stage runs with (e.g.
            ``{"sinks": SinkConfig(length=512)}``); a stage not named runs at the report's sizes.
        png: also write PNGs of static figures when an image backend (kaleido) works.
        images: formats (png, svg, pdf) of every static figure, written beside its HTML
            (`interp.plots.export.save_images`; an error where they cannot be written).
    """

    quick: bool = False  # smallest sizes (tests, a first look)
    stages: tuple[str, ...] = STAGES  # all analyses
    configs: Mapping[str, Any] = field(
        default_factory=dict
    )  # stage name -> its analysis config; missing = report default
    png: bool = True  # PNGs of static figures where an image backend exists
    images: tuple[str, ...] = ()  # --image: these formats of every static figure, or an error

    def validate(self) -> None:
        stages = tuple(self.stages)
        unknown = [s for s in stages if s not in STAGES]
        if unknown or not stages:
            raise InterpError(f"unknown report stages {unknown or '(none given)'}: choose from {', '.join(STAGES)}")
        exps = _experiments()
        for name in stages:
            needs = exps[name].report.needs
            late = [s for s in (*needs, *exps[name].report.uses) if STAGES.index(s) > STAGES.index(name)]
            if late:  # a registry mistake, not the user's
                raise InterpError(
                    f"the {name} stage takes the results of {', '.join(late)}, which run after it: fix their order"
                )
            if not set(needs) <= set(stages):
                both = "both stages" if len(needs) == 2 else "those stages"
                raise InterpError(f"the {name} stage takes the results of {' and '.join(needs)}: include {both}")
        self.normalise(stages=tuple(s for s in STAGES if s in stages))
        unknown = [s for s in self.configs if s not in STAGES]
        if unknown:
            raise InterpError(f"configs for unknown stages {unknown}: name stages from {', '.join(STAGES)}")


@dataclass(frozen=True)
class StageReport:
    """What one stage found and wrote.

    Attributes:
        name: the stage (also its folder under the report).
        title: its heading.
        summary: the finding in one or two plain sentences.
        seconds: wall time of the stage.
        tables: file names of its CSV tables (relative to the stage folder).
        figures: file names of its figure pages (relative to the stage folder).
        checks: the preconditions of its finding, checked on its result (`interp.analyses.checks`).
    """

    name: str
    title: str
    summary: str
    seconds: float
    tables: tuple[str, ...]
    figures: tuple[str, ...]
    checks: tuple[Check, ...] = ()

    @property
    def trusted(self) -> bool:
        """Whether every check of the finding passed (none failed, none left untested)."""
        return not blocking(self.checks)


@dataclass(frozen=True)
class Report:
    """A finished report: ``index`` is the page, ``stages`` what each stage found."""

    out_dir: Path
    index: Path
    model: str
    stages: tuple[StageReport, ...]
    seconds: float

    def to_dataframe(self):
        """One row per stage: stage, title, seconds, n_tables, n_figures, checks_failed, summary."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "stage": s.name,
                    "title": s.title,
                    "seconds": s.seconds,
                    "n_tables": len(s.tables),
                    "n_figures": len(s.figures),
                    "checks_failed": ", ".join(c.name for c in failed(s.checks)),
                    "checks_not_tested": ", ".join(c.name for c in untested(s.checks)),
                    "summary": s.summary,
                }
                for s in self.stages
            ]
        )


@dataclass
class _Output:
    """A stage's results before they are written."""

    summary: str  # plain text
    summary_html: str  # trusted HTML (escaped)
    tables: dict = field(default_factory=dict)  # name -> DataFrame
    figures: list = field(default_factory=list)  # (name, Figure)
    json: dict = field(default_factory=dict)  # name -> JSON-able object
    result: Any = None
    checks: tuple = ()  # the result's checks (interp.analyses.checks.Check)


# --------------------------------------------------------------------------------------------
# Stage settings
# --------------------------------------------------------------------------------------------


def stage_configs(config: ReportConfig) -> dict[str, Any]:
    """The analysis config each chosen stage runs with (the report's small defaults where None).

    Building them validates every setting before any long work starts. A stage that takes other
    stages' results (`InReport.needs`) gets its config when they have run, unless one is given.
    """
    exps = _experiments()
    out: dict[str, Any] = {}
    for name in config.stages:
        if name in config.configs:
            out[name] = config.configs[name]
        elif not exps[name].report.needs:
            out[name] = exps[name].report.config(config.quick, {})
    return out
