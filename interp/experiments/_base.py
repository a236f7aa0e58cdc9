"""The experiment protocol, the store every experiment writes through, and the one driver.

An *experiment* joins a pure analysis (`interp.analyses.<name>`: frozen config, pure functions
over statistics, frozen result) to a model. It is one `Experiment` value, defined in
`interp.experiments.<name>` and found by `interp.experiments.registry`; the CLI and the report
iterate that registry, so adding an analysis means adding those two modules and their tests.

- ``run(lm, config, store) -> result`` is the only code that drives the model (through the
  `interp.models.Model` operations and `interp.hooks`), shares units of work over ranks and
  resumes them (`Store.map`), and shows progress.
- `Store` owns the output folder: resume logs, tables, figures and run.json. ``Store(None)``
  keeps nothing, for notebooks: ``EXPERIMENT.run(lm, config, Store())``.
- `execute` is what every command does: build the store, load the model once per rank, run,
  and on rank 0 write the tables, figures and run.json and print the finding.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Mapping, Optional, TypeVar

from interp.distributed import Launch
from interp.experiments._store import Store

__all__ = [
    "Experiment",
    "InReport",
    "Store",
    "execute",
    "report_sizes",
    "finding",
    "enforce_checks",
]


def finding(experiment: Experiment, result: Any) -> str:
    """The experiment's one-sentence finding, led by a warning when one of the result's checks failed."""
    from interp.analyses.checks import check_all, warning

    return warning(check_all(result)) + experiment.describe(result)


def enforce_checks(what: str, result: Any, strict: bool) -> None:
    """With ``strict`` (``--strict``), raise `ChecksFailed` when a check of ``result`` failed (after its outputs are written)."""
    from interp.analyses.checks import ChecksFailed, blocking, check_all

    bad = blocking(check_all(result))  # a check the run could not decide is no pass either
    if bad and strict:
        raise ChecksFailed(what, bad)


C = TypeVar("C")
R = TypeVar("R")


def _summary(result: Any) -> dict:
    return result.summary()


def _no_check(config: Any) -> None:
    return None


def _nothing(result: Any) -> dict:
    return {}


def report_sizes(config: type, sizes: Mapping[bool, Mapping[str, Any]]) -> Callable[[bool, Mapping[str, Any]], Any]:
    """An `InReport.config` that builds ``config(**sizes[quick])`` (earlier stages unused)."""

    def build(quick: bool, earlier: Mapping[str, Any]) -> Any:
        return config(**sizes[quick])

    return build


@dataclass(frozen=True)
class InReport:
    """How an experiment takes part in the one-command report (`interp.report`): everything the
    report reads of an experiment, in one value.

    Attributes:
        config: ``(quick, earlier) -> config`` the stage runs with, where ``earlier`` maps the
            stages of ``needs`` and ``uses`` that ran to their results (`report_sizes` builds one
            from sizes).
        order: position in the report (lower first).
        needs: the stages whose results ``config`` takes: the report runs them first and refuses
            a stage list without them.
        uses: the stages whose results ``config`` takes when they are in the report (it falls
            back on its own otherwise): run first when chosen.
        tables: result -> {name: DataFrame} for the stage's folder (default: the command's ``tables``).
        figures: result -> {name: Figure} for the page (default: the command's ``figures``).
        html: result -> the section's HTML (default: the finding, escaped, as a paragraph).
        css: the CSS that HTML needs on the page.
    """

    config: Callable[[bool, Mapping[str, Any]], Any]
    order: int = 100
    needs: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    tables: Optional[Callable[[Any], dict[str, Any]]] = None
    figures: Optional[Callable[[Any], dict[str, Any]]] = None
    html: Optional[Callable[[Any], str]] = None
    css: str = ""


@dataclass(frozen=True)
class Experiment(Generic[C, R]):
    """One analysis as the CLI and the report see it.

    Attributes:
        name: registry key; the report's folder and the default ``--out`` (``runs/<name>``).
        title: heading in the report.
        command: the CLI words, e.g. ``("score", "sinks")`` for ``interp score sinks``.
        config: the analysis's frozen config class.
        run: ``(lm, config, store) -> result``; the only code that drives the model.
        tables: result -> {name: DataFrame}, written as ``name.csv``.
        figures: result -> {name: plotly Figure}, written as ``name.html``.
        describe: result -> the finding in one or two plain sentences (console and report).
        cli: the typer command: its signature maps flags onto ``config`` and it calls `execute`.
        summary: result -> JSON-able summary for run.json (default ``result.summary()``).
        pages: result -> {name: whole HTML page}, written as ``name.html`` by the command (default none).
        record: result -> more run.json fields, e.g. what a later command reads back (default none).
        check: config -> None, checks that need no model (a task file), run before loading one.
        quick: the config fields ``--quick`` sets: the small sizes the report runs it at
            (`interp.experiments.options.apply_quick`).
        images: result -> {name: Figure} written as pictures with ``--image`` beside ``figures``:
            the figures of its ``pages`` (default none).
        report: how it appears in the one-command report (`InReport`: its config there, order,
            the stages it needs, its tables, figures and HTML); None: not in the report.
    """

    name: str
    title: str
    command: tuple[str, str]
    config: type
    run: Callable[..., R]
    tables: Callable[[R], dict[str, Any]]
    figures: Callable[[R], dict[str, Any]]
    describe: Callable[[R], str]
    cli: Callable[..., None]
    summary: Callable[[R], dict] = _summary
    pages: Callable[[R], dict[str, str]] = _nothing
    record: Callable[[R], dict] = _nothing
    check: Callable[[Any], None] = _no_check
    report: Optional[InReport] = None
    quick: Mapping[str, Any] = field(default_factory=dict)
    images: Optional[Callable[[R], dict[str, Any]]] = None


def command_words(experiment: Experiment) -> str:
    """The command as typed after ``interp``: ``"score sinks"``, ``"attention"``."""
    group, name = experiment.command
    return name if group == "app" else f"{group} {name}"


def execute(
    experiment: Experiment,
    config: Any,
    *,
    model: Optional[str],
    out: str | os.PathLike,
    fresh: bool = False,
    notes: Optional[Mapping[str, Any]] = None,
    progress: Optional[bool] = None,
    launch: Launch = Launch(),
) -> Any:
    """What every command does: check, open the store, load the model, run, write, print.

    The config is already validated (it was built); ``experiment.check`` and the output folder are
    checked before the model loads. Launched on several ranks, every rank runs its share and
    rank 0 writes the merged result. The result's checks (`interp.analyses.checks`) go into
    run.json; a failed one leads the printed finding with a warning and, under ``--strict``
    (``launch.strict``), raises `ChecksFailed` once everything is written.

    The options every command shares (`interp.experiments.options.shared`: ``--progress``,
    ``--image``, ``--quick``) are read from the command's context.

    Args:
        progress: show progress bars (default: ``--progress/--no-progress``).
        launch: the launch options (`interp.distributed.Launch`: engine, placement, ``--strict``,
            how the model loads), as the CLI built them from its flags.

    Returns:
        The experiment's result (on every rank).
    """
    from rich.console import Console

    from interp.distributed import rank_model, world
    from interp.experiments.options import apply_quick, shared

    started = time.time()
    options = shared()
    if options.quick:
        config = apply_quick(config, dict(experiment.quick), options.given)
    experiment.check(config)
    progress = options.progress if progress is None else progress
    store = Store(
        out, fresh=fresh, progress=progress, images=options.images, engine=launch.engine, workers=launch.workers,
        command=command_words(experiment),
    )  # fmt: skip
    try:
        store.note(**(notes or {}))
        lm = rank_model(model, launch)
        store.bind(lm, config)
        result = experiment.run(lm, config, store)
        if world().main:
            info = store.save(experiment, result, lm, config, started)
            console = Console(stderr=True)
            trusted = all(c["outcome"] == "passed" for c in info["checks"])
            console.print(f"[bold]{lm.name}[/]: {finding(experiment, result)}", style=None if trusted else "red")
            console.print(f"wrote {', '.join(store.written)} to {store.folder} ({info['wall_seconds']} s)")
    except BaseException:
        store.close(failed=True)
        raise
    store.close()
    enforce_checks(f"{' '.join(experiment.command)} on {lm.name}", result, launch.strict)
    return result
