"""Running the report: the cheap checks first, then every stage in order, then run.json and the page."""

from __future__ import annotations

import time
from typing import Any, Optional

from interp.analyses.checks import ChecksFailed, as_records, blocking, check_all
from interp.distributed import Launch
from interp.errors import InterpError
from interp.protocols import Model
from interp.report.config import Report, ReportConfig, StageReport, _experiments, _Output, stage_configs
from interp.report.page import _esc, write_index, write_stage

__all__ = ["check_model_supported", "run_report", "report"]


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
        reports.append(write_stage(out, name, title, output, seconds, config.png, config.images))
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
    index = write_index(out, lm, config, reports, outputs, seconds)
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
