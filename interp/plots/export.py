"""Export of figures: self-contained HTML (works offline), and PNG, SVG and PDF for papers.

`save_figure` writes one figure as one HTML file with plotly.js inside (or pointing at a shared
copy, for folders of many figures). `save_images` writes pictures of figures in any of
`IMAGE_FORMATS` through plotly's own static export (kaleido, which drives a headless Chromium:
kaleido 1.x finds it through choreographer or the ``BROWSER_PATH`` variable, which `find_browser`
sets from a Chromium on the ``PATH``); it raises `InterpError` with the reason when it cannot,
while `save_png`/`save_pngs` are the best-effort PNGs of the report (nothing written, no error). `page_html` is the one writer of pages holding many figures
(the report's index, patch.html, preplan.html): sections of HTML and figures, with plotly.js
inlined once, so a whole report is a single file that opens with no network; `save_page` writes
one to a file.
"""

from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from interp.errors import InterpError
from interp.runs import atomic_write_text

__all__ = [
    "IMAGE_FORMATS",
    "save_figure",
    "save_images",
    "parse_image_formats",
    "find_browser",
    "image_backend_problem",
    "save_png",
    "save_pngs",
    "save_plotlyjs",
    "fit_title",
    "figure_div",
    "is_static",
    "image_backend_available",
    "PageSection",
    "page_html",
    "save_page",
]

_CONFIG = {"displaylogo": False, "responsive": True}
# A picture has a fixed width (plotly's default layout: 700 x 500 px), so a long title is cut at the
# right edge where the HTML (as wide as the window) shows it whole. Glyphs of plotly's default
# sans-serif average about 0.45 of the font size; 0.5 leaves a margin.
_IMAGE_SIZE = (700, 500)
_GLYPH = 0.5
IMAGE_FORMATS = ("png", "svg", "pdf")  # what --image accepts: plotly's static formats for papers
_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def save_figure(
    fig,
    path: str | os.PathLike,
    *,
    png: bool = False,
    images: Sequence[str] = (),
    include_plotlyjs: Union[bool, str] = True,
) -> Path:
    """Write ``fig`` to ``path`` as one HTML file with plotly.js embedded (no network needed).

    Args:
        fig (plotly.graph_objects.Figure): the figure.
        path: the .html file to write.
        png: also write ``path.with_suffix('.png')`` when the figure is static (see
            :func:`is_static`) and an image backend (kaleido) works; skipped silently otherwise:
            the HTML is the primary output.
        images: formats of `IMAGE_FORMATS` to write beside the HTML (``path.with_suffix('.svg')``,
            ...), through `save_images`: an `InterpError` when they cannot be written.
        include_plotlyjs: True embeds plotly.js (self-contained); a relative path ending in
            ".js" references a shared copy instead (see :func:`save_plotlyjs`), for folders of
            many figures.
    """
    path = Path(path)
    html_text = fig.to_html(full_html=True, include_plotlyjs=include_plotlyjs, config=_CONFIG)
    atomic_write_text(path, html_text)
    if png:
        save_png(fig, path.with_suffix(".png"))
    if images:
        save_images([(fig, path)], images)
    return path


def parse_image_formats(text: Optional[str], flag: str = "--image") -> tuple[str, ...]:
    """``"png,svg,pdf"`` -> ("png", "svg", "pdf"); None, "" or "none" -> () (HTML only).

    Raises:
        InterpError: a format outside `IMAGE_FORMATS`.
    """
    if text is None or text.strip().lower() in ("", "none"):
        return ()
    names = tuple(dict.fromkeys(x.strip().lower().lstrip(".") for x in text.split(",") if x.strip()))
    bad = [n for n in names if n not in IMAGE_FORMATS]
    if bad:
        raise InterpError(f"{flag} {text!r}: use formats from {', '.join(IMAGE_FORMATS)}, comma-separated (or none)")
    return names


def find_browser() -> Optional[str]:
    """The Chromium kaleido will drive: ``BROWSER_PATH`` when set, else the first of chromium,
    chromium-browser, google-chrome, chrome on the ``PATH`` (then set as ``BROWSER_PATH``, where
    kaleido 1.x looks first), else None."""
    import shutil

    given = os.environ.get("BROWSER_PATH")
    if given:
        return given if Path(given).is_file() else None
    for name in _BROWSERS:
        found = shutil.which(name)
        if found:
            os.environ["BROWSER_PATH"] = found
            return found
    return None


def image_backend_problem() -> Optional[str]:
    """Why figures cannot be written as images here (kaleido missing, no Chromium), or None."""
    if not image_backend_available():
        return "kaleido is not installed (pip install kaleido; make install includes it)"
    if find_browser() is None:
        return (
            "no Chromium found for kaleido: install one (sh scripts/ensure_chromium.sh installs Debian's) "
            "or set BROWSER_PATH to a Chrome or Chromium binary"
        )
    return None


def save_images(pairs: Sequence[tuple], formats: Sequence[str], *, scale: float = 2.0) -> list[Path]:
    """Pictures of figures: for each (Figure, path) and format, ``path.with_suffix('.' + format)``,
    in one kaleido session (its browser starts once). Figures that are not static (animations,
    sliders, menus: see `is_static`) have no picture and are skipped.

    Args:
        pairs: (Figure, path) pairs; the path's suffix is replaced by each format's.
        formats: names from `IMAGE_FORMATS`.
        scale: pixels per layout pixel of PNGs (2: sharp on paper and on high-DPI screens).

    Returns:
        The files written.

    Raises:
        InterpError: an unknown format, no image backend (`image_backend_problem`), or kaleido failing.
    """
    formats = parse_image_formats(",".join(formats)) if formats else ()
    todo = [(fig, Path(path).with_suffix(f".{fmt}")) for fig, path in pairs if is_static(fig) for fmt in formats]
    if not todo:
        return []
    problem = image_backend_problem()
    if problem is not None:
        raise InterpError(f"cannot write {', '.join(formats)} images: {problem}")
    import plotly.io as pio

    try:
        figs = [fit_title(f) for f, _ in todo]
        pio.write_images(figs, [str(p) for _, p in todo], scale=scale, **_sizes(figs))
    except Exception as err:  # kaleido's own errors: one line with the reason
        reason = " ".join(str(err).split())[:300]
        raise InterpError(f"kaleido could not write the images ({type(err).__name__}: {reason})") from err
    return [p for _, p in todo]


def save_plotlyjs(path: str | os.PathLike) -> Path:
    """Write plotly.js (the bundled, offline copy) to ``path``, for figures that reference it."""
    from plotly.offline import get_plotlyjs

    return atomic_write_text(path, get_plotlyjs())


def is_static(fig) -> bool:
    """True when a picture shows everything: no animation frames, sliders or menus."""
    layout = fig.layout
    return not (getattr(fig, "frames", None) or layout.sliders or layout.updatemenus)


def image_backend_available() -> bool:
    """True when plotly can write images (kaleido installed and able to start)."""
    import importlib.util

    return importlib.util.find_spec("kaleido") is not None


def save_png(fig, path: str | os.PathLike, *, scale: float = 2.0) -> Optional[Path]:
    """Write a PNG of a static ``fig`` if an image backend works; None when it was not written."""
    if not is_static(fig) or not image_backend_available():
        return None
    path = Path(path)
    try:
        fit_title(fig).write_image(str(path), scale=scale)
    except Exception:  # kaleido present but unable to run (e.g. no browser for kaleido>=1)
        return None
    return path if path.is_file() else None


def save_pngs(pairs: Sequence[tuple], *, scale: float = 2.0) -> list[Path]:
    """Best-effort PNGs of many figures in one session (`save_images` without its errors).

    Args:
        pairs: (Figure, path) pairs; figures that are not static are skipped.

    Returns:
        The paths written (empty when no image backend works).
    """
    todo = [(fig, Path(path)) for fig, path in pairs if is_static(fig)]
    if not todo or not image_backend_available():
        return []
    import plotly.io as pio

    try:
        find_browser()
        figs = [fit_title(f) for f, _ in todo]
        pio.write_images(figs, [str(p) for _, p in todo], scale=scale, **_sizes(figs))
    except Exception:  # kaleido present but unable to run: the HTML is the deliverable
        return []
    return [p for _, p in todo if p.is_file()]


def fit_title(fig):
    """A copy of ``fig`` whose title fits its picture's width: wrapped at spaces onto as many
    lines as it needs (``<br>``), with the top margin and the height grown by the added lines so
    the plot keeps its size. A title that fits already, or none, leaves ``fig`` as it is.

    Args:
        fig (plotly.graph_objects.Figure): the figure (not changed).

    Returns:
        figure (plotly.graph_objects.Figure): ``fig`` itself, or the copy with the wrapped title.
    """
    import textwrap

    import plotly.graph_objects as go

    layout = fig.layout
    text = layout.title.text
    if not text:
        return fig
    size = layout.title.font.size or 1.4 * (layout.font.size or 12)  # plotly's title: 1.4 x the font
    width = layout.width or _IMAGE_SIZE[0]
    x = layout.title.x if layout.title.x is not None and layout.title.xref != "paper" else 0.05
    chars = max(20, int((width * (1 - x) - 20) / (_GLYPH * size)))
    parts = re.split(r"<br\s*/?>", text)
    lines = [line for part in parts for line in (textwrap.wrap(part, chars, break_on_hyphens=False) or [""])]
    if len(lines) == len(parts):
        return fig
    out = go.Figure(fig)
    extra = int((len(lines) - len(parts)) * 1.3 * size)
    top = layout.margin.t if layout.margin.t is not None else 100  # plotly's default top margin
    out.update_layout(
        title_text="<br>".join(lines),
        margin_t=top + extra,
        height=(layout.height or _IMAGE_SIZE[1]) + extra,
    )
    return out


def _sizes(figs: Sequence) -> dict[str, list[int]]:
    """Each figure's own layout size (plotly's default where it has none): ``pio.write_images``,
    unlike ``write_image``, draws every figure at the default size unless told."""
    return {
        "width": [f.layout.width or _IMAGE_SIZE[0] for f in figs],
        "height": [f.layout.height or _IMAGE_SIZE[1] for f in figs],
    }


def figure_div(fig, div_id: str) -> str:
    """The HTML ``<div>`` and script that draw ``fig``, without plotly.js (for :func:`save_page`)."""
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=_CONFIG)


@dataclass
class PageSection:
    """One section of a page: a heading, a summary (HTML), figures and links.

    Attributes:
        title: the heading.
        summary_html: trusted HTML (escape user text with ``html.escape`` before putting it here).
        figures: (name, Figure) pairs drawn in order.
        links: (label, relative href) pairs, e.g. to the section's tables.
        anchor: the section's id (default: from the title).
    """

    title: str
    summary_html: str = ""
    figures: Sequence[tuple] = field(default_factory=list)
    links: Sequence[tuple] = field(default_factory=list)
    anchor: Optional[str] = None


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1f2328; }
header { background: #24292f; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 6px 0; font-size: 24px; }
header p { margin: 0; color: #d0d7de; }
nav { padding: 8px 32px; border-bottom: 1px solid #d0d7de; background: #f6f8fa; }
nav a { margin-right: 18px; }
main { padding: 0 32px 48px 32px; max-width: 1400px; }
section { border-bottom: 1px solid #d0d7de; padding: 12px 0 24px 0; }
.summary { max-width: 1000px; line-height: 1.5; }
.links a { margin-right: 14px; font-size: 14px; }
.figure { margin: 12px 0; }
table.facts { border-collapse: collapse; margin: 8px 0; }
table.facts td, table.facts th { border: 1px solid #d0d7de; padding: 3px 10px; text-align: left; }
"""


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def save_page(
    path: str | os.PathLike,
    sections: Sequence[PageSection],
    *,
    title: str,
    intro_html: str = "",
    extra_css: str = "",
) -> Path:
    """Write `page_html` (plotly.js inlined once) atomically to ``path``; returns ``path``."""
    return atomic_write_text(path, page_html(sections, title=title, intro_html=intro_html, extra_css=extra_css))


def page_html(
    sections: Sequence[PageSection],
    *,
    title: str,
    intro_html: str = "",
    extra_css: str = "",
    plotlyjs: Union[bool, str] = True,
) -> str:
    """One HTML page: a heading, a navigation bar, and every section's summary, links and figures.

    Args:
        sections: the page's sections, in order.
        title: page title and heading.
        intro_html: trusted HTML under the heading.
        extra_css: more CSS for the page (e.g. for HTML fragments in the summaries).
        plotlyjs: True inlines plotly.js once (the page opens offline); a path such as
            ``"../plotly.min.js"`` references one shared copy; False leaves it out.
    """
    parts = []
    nav = []
    n_fig = 0
    for sec in sections:
        anchor = sec.anchor or _anchor(sec.title)
        nav.append(f'<a href="#{anchor}">{html.escape(sec.title)}</a>')
        body = [f'<section id="{anchor}">', f"<h2>{html.escape(sec.title)}</h2>"]
        if sec.summary_html:
            body.append(f'<div class="summary">{sec.summary_html}</div>')
        if sec.links:
            body.append(
                '<p class="links">'
                + "".join(f'<a href="{html.escape(href)}">{html.escape(label)}</a>' for label, href in sec.links)
                + "</p>"
            )
        for name, fig in sec.figures:
            n_fig += 1
            body.append(f'<div class="figure" data-figure="{html.escape(str(name))}">')
            body.append(figure_div(fig, f"fig-{anchor}-{n_fig}"))
            body.append("</div>")
        body.append("</section>")
        parts.append("\n".join(body))
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_STYLE}{extra_css}</style>
{_plotly_script(plotlyjs)}
</head>
<body>
<header><h1>{html.escape(title)}</h1><p>{intro_html}</p></header>
<nav>{"".join(nav)}</nav>
<main>
{chr(10).join(parts)}
</main>
</body>
</html>
"""
    return page


def _plotly_script(plotlyjs: Union[bool, str]) -> str:
    if plotlyjs is True:
        from plotly.offline import get_plotlyjs

        return f'<script type="text/javascript">{get_plotlyjs()}</script>'
    if isinstance(plotlyjs, str):
        return f'<script src="{html.escape(plotlyjs)}"></script>'
    return ""
