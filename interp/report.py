"""The one-command report: every analysis at small sizes, one page that shows what was found.

`run_report` runs every experiment of `interp.experiments.registry` that has a report setting, in
its ``order`` (retrieval heads, attention sinks, preplan/anchor tokens, IOI circuit patching, the
head detectors, select-and-copy, QRHead, AttentionInfluence, the attention patterns of the heads
they found), each through its own runner, tables, figures and one-sentence finding. A stage that
takes another's results names it in its `InReport` (``needs``, or ``uses`` when it can do
without): the report runs that one first and hands its result over. Each stage writes its tables
(CSV) and figures (HTML sharing one ``plotly.min.js``, plus PNG where the figure is static and an
image backend exists) through a `interp.experiments.Store` of ``DIR/<stage>/``; when every stage
has finished, ``DIR/index.html`` is written: one self-contained page (plotly.js
inlined once, opens with no network) that embeds every figure under a short summary of each
finding, and links the tables.

Every finding says whether it can be trusted: a stage whose result fails one of its checks
(`interp.analyses.checks`: the model does not do the task, too few samples, chance level, ...)
gets a red banner above its section and a "checks" column entry in the overview, its finding
starts with the warning, and run.json lists each stage's checks. Under ``--strict`` the report is
written in full and then fails with `ChecksFailed` (exit code 3).

Everything that can be checked cheaply is checked before any long work starts: the output
folder (`interp.runs.prepare_out_dir`), that the model has a hook adapter (from its config,
before its weights are loaded), and the stage settings. A stage that fails fails the whole run:
``index.html`` is only written when every stage finished, so a report is never silently partial.

The report is a thin layer: every number comes from the experiments' runners and every figure
from `interp.plots`; a new experiment with a ``report`` setting appears here with no edit.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from interp.analyses.checks import Check, ChecksFailed, as_records, blocking, check_all, failed, untested
from interp.config import Config
from interp.distributed import Launch
from interp.errors import InterpError
from interp.protocols import Model

__all__ = [
    "ReportConfig",
    "StageReport",
    "Report",
    "STAGES",
    "stage_configs",
    "check_model_supported",
    "run_report",
    "report",
]


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


# --------------------------------------------------------------------------------------------
# Pre-flight checks (cheap; before any long work)
# --------------------------------------------------------------------------------------------


def check_model_supported(name: Optional[str]) -> None:
    """Raise when the model named ``name`` has no hook adapter, reading only its config.

    The embedded model is always supported. A name whose config cannot be read is left to
    `interp.models.load_model`, which explains how to get the model.
    """
    from interp.hooks.adapters import adapter_for
    from interp.models import is_embedded

    if is_embedded(name):
        return
    try:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(name)
    except Exception:  # not found / no network: load_model gives the full explanation
        return
    text = getattr(cfg, "text_config", None) or cfg
    adapter_for(str(getattr(text, "model_type", cfg.model_type)))


def _check_lm(lm: object) -> None:  # any object: this is the check that it is a usable model
    if getattr(lm, "adapter", None) is None or getattr(lm, "arch", None) is None:
        raise InterpError(
            f"model {getattr(lm, 'name', lm)!r} has no hook adapter: load it with interp.load_model (or "
            "interp.models.wrap_model) so the report can capture its attention"
        )
    if getattr(lm, "tokenizer", None) is None:
        raise InterpError(
            f"model {lm.name!r} has no tokenizer: the report builds text prompts; load it with its tokenizer"
        )


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=False)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

_HOW_TO_READ = "Figures are interactive: hover for values, drag to zoom, double-click to reset."


def _write_stage(
    out_dir: Path, name: str, title: str, output: _Output, seconds: float, png: bool, images: tuple[str, ...] = ()
) -> StageReport:
    """The stage's tables, figures (sharing the report's plotly.js; PNGs of the static ones where an
    image backend works) and JSON, through the `Store` of ``out_dir/name``."""
    from interp.experiments import Store

    store = Store(out_dir / name, plotlyjs="../plotly.min.js", png=png, images=images, progress=False)
    for tname, df in output.tables.items():
        store.write_table(tname, df)
    store.write_figures(dict(output.figures))
    for jname, obj in output.json.items():
        store.write_json(jname, obj)
    store.close()
    return StageReport(
        name=name, title=title, summary=output.summary, seconds=round(seconds, 2),
        tables=tuple(f"{t}.csv" for t in output.tables), figures=tuple(f"{f}.html" for f, _ in output.figures),
        checks=tuple(output.checks),
    )  # fmt: skip


_EXTRA_CSS = """
.check-failed { background: #ffebe9; border: 2px solid #cf222e; border-radius: 6px; padding: .6em 1em; margin: .8em 0; }
.check-failed b { color: #cf222e; }
td.check-failed { padding: 3px 10px; } td.check-ok { color: #1a7f37; }
"""


def _checks_cell(stage: StageReport) -> str:
    """The overview's checks column: "passed (n)", "failed: names", or "none" for a stage without checks."""
    bad, open_ = failed(stage.checks), untested(stage.checks)
    if bad or open_:
        parts = [f"<b>failed</b>: {_esc(', '.join(c.name for c in bad))}"] if bad else []
        parts += [f"<b>not tested</b>: {_esc(', '.join(c.name for c in open_))}"] if open_ else []
        return f'<td class="check-failed">{"; ".join(parts)}</td>'
    return f'<td class="check-ok">passed ({len(stage.checks)})</td>' if stage.checks else "<td>none</td>"


def _banner(stage: StageReport) -> str:
    """The red banner above a section whose finding failed a check or left one untested: each
    such check with its numbers, or why the run could not decide it."""
    bad, open_ = failed(stage.checks), untested(stage.checks)
    if not bad and not open_:
        return ""
    items = "".join(f"<li>{_esc(c.short())}: {_esc(c.detail)}</li>" for c in (*bad, *open_))
    said = " and ".join(
        part for part in (f"{len(bad)} failed" if bad else "", f"{len(open_)} could not be tested" if open_ else "")
        if part
    )  # fmt: skip
    return (
        '<div class="check-failed" role="alert"><b>Do not trust this finding.</b> '
        f"Of its {len(stage.checks)} checks, {said}:<ul>{items}</ul></div>"
    )


def _write_index(
    out_dir: Path, lm: Model, config: ReportConfig, stages: list[StageReport], outputs: dict, seconds: float
) -> Path:
    from interp.plots.export import PageSection, save_page

    rows = "".join(
        f'<tr><td><a href="#{s.name}">{_esc(s.title)}</a></td>{_checks_cell(s)}<td>{_esc(s.summary)}</td><td>{s.seconds:.0f} s</td></tr>'
        for s in stages
    )
    overview = (
        '<table class="facts"><tr><th>analysis</th><th>checks</th><th>finding</th><th>time</th></tr>'
        + rows
        + "</table>"
        f"<p>{_esc(_HOW_TO_READ)} Tables (CSV) and one page per figure are in the folder of each analysis.</p>"
    )
    a = lm.arch
    sections = [PageSection("Overview", overview, anchor="overview")]
    for s in stages:
        links = [(t, f"{s.name}/{t}") for t in s.tables] + [(f, f"{s.name}/{f}") for f in s.figures]
        sections.append(
            PageSection(
                s.title,
                _banner(s) + outputs[s.name].summary_html,
                figures=outputs[s.name].figures,
                links=links,
                anchor=s.name,
            )
        )
    intro = (
        f"{_esc(lm.name)}: {a.n_layers} layers, {a.n_heads} query heads, {a.n_kv_heads} kv heads, d_head {a.d_head}. "
        f"{len(stages)} analyses in {seconds:.0f} s{' (quick sizes)' if config.quick else ''}; written "
        f"{time.strftime('%Y-%m-%d %H:%M')}."
    )
    css = _EXTRA_CSS + "".join(exp.report.css for name, exp in _experiments().items() if name in config.stages)
    return save_page(out_dir / "index.html", sections, title="interp report", intro_html=intro, extra_css=css)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _run_experiment(exp, lm: Model, config: ReportConfig, cfg, ctx: dict, launch: Launch = Launch()) -> _Output:
    """One registry experiment as a report stage: its config may use the results of earlier stages."""
    from interp.experiments import Store, finding

    if exp.name not in config.configs:
        takes = (*exp.report.needs, *exp.report.uses)
        earlier = {name: result for name, result in ctx["results"].items() if name in takes}
        cfg = exp.report.config(config.quick, earlier)
        ctx["configs"][exp.name] = cfg
    result = exp.run(lm, cfg, Store(engine=launch.engine, workers=launch.workers))
    ctx["results"][exp.name] = result
    text = finding(exp, result)  # led by a warning when a check failed
    shown = exp.report  # what the report shows of it (`InReport`)
    body = shown.html(result) if shown.html is not None else f"<p>{_esc(text)}</p>"
    checks = check_all(result)
    return _Output(
        summary=text, summary_html=body, tables=(shown.tables or exp.tables)(result),
        figures=list((shown.figures or exp.figures)(result).items()),
        json={"summary": exp.summary(result), "checks": as_records(checks)}, result=result, checks=checks,
    )  # fmt: skip


def run_report(
    lm: Model, out_dir, config: ReportConfig = ReportConfig(), *, console=None, launch: Launch = Launch()
) -> Report:
    """Run every chosen analysis on ``lm`` and write the report under ``out_dir``.

    Args:
        lm: a `interp.models.LoadedModel`.
        out_dir: the report folder (created; must be writable). ``index.html`` is the page.
        config: `ReportConfig` (small default sizes).
        console: a rich Console for progress (default: a new one on stderr).
        launch: the launch options (`interp.distributed.Launch`): the engine of every stage's
            units of work, and ``strict``.

    Returns:
        A `Report`.

    Raises:
        InterpError: an output folder that is a file or not writable, a model without a hook
            adapter or tokenizer, or bad stage settings (all before any long work); any stage's
            failure fails the run and ``index.html`` is not written.
        ChecksFailed: with ``launch.strict``, after everything is written, when a stage's check failed.
    """
    from rich.console import Console

    from interp.experiments import Store
    from interp.runs import prepare_out_dir

    started = time.time()
    out = prepare_out_dir(out_dir)
    _check_lm(lm)
    configs = stage_configs(config)
    store = Store(out, progress=False, command="report")  # the report's folder, locked and claimed for the run
    try:
        return _run_stages(lm, store, config, configs, console or Console(stderr=True), started, launch)
    finally:
        store.close()


def _run_stages(
    lm: Model, store: Any, config: ReportConfig, configs: dict, console: Any, started: float, launch: Launch
) -> Report:
    """`run_report` once everything is checked: each stage, then run.json and index.html in ``store``'s folder."""
    from interp.distributed import world
    from interp.plots.export import save_plotlyjs
    from interp.runs import run_info

    out = store.folder

    stale = out / "index.html"
    if stale.is_file():  # a failed run must not leave an older, complete-looking page behind
        stale.unlink()
    save_plotlyjs(out / "plotly.min.js")

    outputs: dict[str, _Output] = {}
    reports: list[StageReport] = []
    ctx: dict[str, Any] = {"config": config, "configs": configs, "results": {}}  # stages add what later stages need
    exps = _experiments()
    n = len(config.stages)
    for i, name in enumerate(config.stages, 1):
        title = exps[name].title
        console.rule(f"[bold]{i}/{n} {title}")
        t0 = time.time()
        try:
            output = _run_experiment(exps[name], lm, config, configs.get(name), ctx, launch)
        except Exception as err:
            console.print(f"[red]x {title} failed after {time.time() - t0:.0f} s; no index.html written[/]")
            if isinstance(err, InterpError):
                raise InterpError(f"report stage '{name}' failed: {err}") from err
            raise
        seconds = time.time() - t0
        outputs[name] = output
        reports.append(_write_stage(out, name, title, output, seconds, config.png, config.images))
        console.print(f"[green]done[/] in {seconds:.0f} s: {output.summary}")
    seconds = time.time() - started
    settings = {name: c.settings() for name, c in configs.items()}
    settings["report"] = {"quick": config.quick, "stages": list(config.stages)}
    info = run_info(lm, settings, started, ranks=world().size)
    info["command"] = "report"  # a used --out belongs to one command (`interp.runs.claim_folder`)
    info["stages"] = [
        {"name": s.name, "seconds": s.seconds, "summary": s.summary, "checks": as_records(s.checks)} for s in reports
    ]
    store.write_json("run", info)
    index = _write_index(out, lm, config, reports, outputs, seconds)
    console.print(f"[bold green]report written[/]: {index} ({index.stat().st_size / 1e6:.1f} MB) in {seconds:.0f} s")
    untrusted = [s for s in reports if not s.trusted]
    if untrusted:
        console.print(
            "[bold red]checks failed or not tested[/] in "
            + ", ".join(f"{s.name} ({', '.join(c.name for c in blocking(s.checks))})" for s in untrusted)
        )
    if untrusted and launch.strict:
        raise ChecksFailed(f"report of {lm.name}", [c for s in untrusted for c in blocking(s.checks)])
    return Report(out_dir=out, index=index, model=lm.name, stages=tuple(reports), seconds=round(seconds, 2))


def report(
    model: Optional[str] = None,
    out_dir="out/report",
    config: ReportConfig = ReportConfig(),
    *,
    console=None,
    launch: Launch = Launch(),
) -> Report:
    """Load ``model`` (None = the embedded SmolLM2) as ``launch`` says (dtype, attention
    implementation, device map, ...) and `run_report` it into ``out_dir``.

    The output folder, the model's adapter (from its config, before loading weights) and the
    settings are checked first.
    """
    from interp.distributed import rank_model
    from interp.runs import claim_folder, prepare_out_dir

    claim_folder(prepare_out_dir(out_dir), "report")  # another command's folder is refused before the model loads
    check_model_supported(model)
    stage_configs(config)
    lm = rank_model(model, launch)
    return run_report(lm, out_dir, config, console=console, launch=launch)
