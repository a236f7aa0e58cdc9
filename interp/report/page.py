"""The report's page: each stage's files through its `Store`, and ``index.html`` (an overview with
each finding's checks, a red banner above a finding that failed one, every figure)."""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

from interp.analyses.checks import failed, untested
from interp.protocols import Model
from interp.report.config import ReportConfig, StageReport, _experiments, _Output

__all__ = ["write_stage", "write_index"]


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=False)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

_HOW_TO_READ = "Figures are interactive: hover for values, drag to zoom, double-click to reset."


def write_stage(
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


def write_index(
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
