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

from interp.report.config import STAGES, Report, ReportConfig, StageReport, stage_configs
from interp.report.run import check_model_supported, report, run_report

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
