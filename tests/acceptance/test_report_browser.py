"""The exported report in a real browser: Debian's headless Chromium, driven by playwright, offline.

Opens DIR/index.html from the shared `quick_report` run over file:// with networking disabled and
every non-file request refused, then checks: no JavaScript errors, every figure drawn, a hover
on a heatmap cell shows the tooltip with the right tokens, and saves screenshots under
artifacts/ (gitignored) for a person to look at.

Chromium comes from `scripts/ensure_chromium.sh` (run by `make test`); where it cannot be
installed the test skips and says so.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Per figure: its name, whether a plotly graph div exists, how many traces it drew, its size,
# and whether the SVG was rendered.
_FIGURES_JS = """() => [...document.querySelectorAll('.figure')].map(f => {
  const gd = f.querySelector('.js-plotly-plot');
  const r = gd ? gd.getBoundingClientRect() : {width: 0, height: 0};
  return {name: f.dataset.figure, plot: !!gd, traces: gd && gd._fullData ? gd._fullData.length : 0,
          type: gd && gd._fullData && gd._fullData.length ? gd._fullData[0].type : null,
          width: r.width, height: r.height, svg: !!(gd && gd.querySelector('.main-svg .cartesianlayer, .main-svg .barlayer, .main-svg .heatmaplayer, .main-svg .scatterlayer'))};
})"""


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip(
            "Chromium is not installed and could not be installed here: run scripts/ensure_chromium.sh "
            "(Debian: apt-get install chromium) to enable the browser test"
        )
    return path


def _hover(page, figure, fx: float, fy: float) -> str:
    """Move the mouse to (fx, fy) of the figure's plot area; return the tooltip text ('' if none)."""
    figure.scroll_into_view_if_needed()
    box = figure.locator(".nsewdrag").first.bounding_box()
    page.mouse.move(box["x"] + 5, box["y"] + 5)
    page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"], steps=4)
    tip = figure.locator(".hoverlayer .hovertext")
    try:
        tip.first.wait_for(state="visible", timeout=5000)
    except Exception:
        return ""
    return tip.first.text_content() or ""


def test_report_opens_offline_and_draws_every_figure(request, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'")
    chromium = _chromium()
    out, _, _ = request.getfixturevalue("quick_report")  # only once the browser is known to exist
    index = out / "index.html"
    figure_pages = sorted(p.relative_to(out) for p in out.glob("*/*.html"))
    assert figure_pages, "the report wrote no figure pages"
    ARTIFACTS.mkdir(exist_ok=True)

    errors: list[str] = []
    outside: list[str] = []

    def refuse(route):
        outside.append(route.request.url)
        route.abort()

    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh --user-data-dir
            executable_path=chromium,
            headless=True,
            args=_ARGS,
            offline=True,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            ctx.route(re.compile(r"^(?!file:|data:|blob:|about:).*"), refuse)
            page = ctx.new_page()
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.goto(index.as_uri(), wait_until="load")
            page.wait_for_function(
                "n => document.querySelectorAll('.js-plotly-plot .main-svg').length >= n",
                arg=len(figure_pages),
                timeout=60_000,
            )
            figures = page.evaluate(_FIGURES_JS)

            # every figure written under DIR/<analysis>/ is embedded in the page and drawn
            assert sorted(f["name"] for f in figures) == sorted(p.stem for p in figure_pages)
            for f in figures:
                assert f["plot"] and f["svg"] and f["traces"] >= 1, f"figure {f['name']} was not drawn: {f}"
                assert f["width"] > 300 and f["height"] > 200, f"figure {f['name']} has no room: {f}"
            sections = page.evaluate("() => [...document.querySelectorAll('section')].map(s => s.id)")
            assert {"retrieval", "sinks", "preplan", "patching", "attention"} <= set(sections)

            # hover a cell of each attention-pattern heatmap: late query, early key (a causal cell)
            from interp.experiments.attention import REPEAT_TEXT as _REPEAT_TEXT

            viewers = [
                f["name"]
                for f in figures
                if f["type"] == "heatmap" and f["name"].startswith(("retrieval_L", "patching_L"))
            ]
            assert len(viewers) == 2, f"expected the two attention viewers, got {viewers}"
            for name in viewers:
                fig = page.locator(f'.figure[data-figure="{name}"]')
                text = _hover(page, fig, 0.12, 0.9)
                m = re.search(r"query (\d+) '(.*?)'\s*key (\d+) '(.*?)'\s*attention: ([0-9.]+)", text)
                assert m, f"no attention tooltip on {name}: {text!r}"
                q_pos, q_tok, k_pos, _, value = m.groups()
                assert int(q_pos) >= int(k_pos) and 0.0 <= float(value) <= 1.0
                if name.startswith("retrieval_L"):
                    assert q_tok.strip() and q_tok.strip() in _REPEAT_TEXT  # the hovered token is from the shown text
            page.screenshot(path=str(ARTIFACTS / "report_hover.png"))

            # a layer x head grid answers a hover with its layer and head
            grids = [f["name"] for f in figures if f["type"] == "heatmap" and f["name"] not in viewers]
            assert grids, "the report has no layer x head heatmap"
            tips = [_hover(page, page.locator(f'.figure[data-figure="{name}"]'), 0.5, 0.5) for name in grids]
            assert any(re.search(r"layer \d+", t) for t in tips), f"no layer/head tooltip on {grids}: {tips}"

            page.mouse.move(0, 0)
            page.evaluate("() => window.scrollTo(0, 0)")
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            ctx.close()

    assert not errors, f"JavaScript errors in the report: {errors}"
    assert not outside, f"the report tried to reach the network: {outside}"
    assert (ARTIFACTS / "report.png").stat().st_size > 50_000
