"""Export and shared figure builders: offline HTML files and pages, PNG only where it can be made."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from interp.errors import InterpError
from interp.plots import (
    PageSection,
    head_grid,
    is_static,
    position_grid,
    save_figure,
    save_page,
    save_plotlyjs,
    save_png,
    save_pngs,
    token_trace,
)
from interp.plots.export import image_backend_available

_CDN = re.compile(r"<script[^>]+src=[\"']https?://", re.I)


def _fig(seed: int = 0) -> go.Figure:
    rng = np.random.default_rng(seed)
    return head_grid(rng.random((4, 3)), title=f"grid {seed}")


def _plotlyjs_marker() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()[:200]


def test_save_figure_is_self_contained(tmp_path):
    path = save_figure(_fig(), tmp_path / "a" / "grid.html")
    text = path.read_text(encoding="utf-8")
    assert _plotlyjs_marker() in text  # plotly.js itself is inside
    assert not _CDN.search(text)
    assert "layer 3 head 2" in text  # the hover text travels with the figure


def test_save_figure_with_shared_plotlyjs(tmp_path):
    save_plotlyjs(tmp_path / "plotly.min.js")
    path = save_figure(_fig(), tmp_path / "sub" / "grid.html", include_plotlyjs="../plotly.min.js")
    text = path.read_text(encoding="utf-8")
    assert 'src="../plotly.min.js"' in text
    assert _plotlyjs_marker() not in text and len(text) < 100_000
    assert (tmp_path / "plotly.min.js").read_text(encoding="utf-8").startswith(_plotlyjs_marker())


def test_save_page_inlines_plotlyjs_once_and_draws_every_figure(tmp_path):
    figs = [("one", _fig(1)), ("two", _fig(2))]
    sections = [
        PageSection("First <finding>", "<p>ok</p>", figures=figs, links=[("table", "first/table.csv")]),
        PageSection("Second", "", figures=[("three", _fig(3))], anchor="second"),
    ]
    path = save_page(tmp_path / "index.html", sections, title="report & more", extra_css=".x{color:red}")
    text = path.read_text(encoding="utf-8")
    assert text.count(_plotlyjs_marker()) == 1
    assert not _CDN.search(text)
    assert text.count('class="figure"') == 3 and text.count("Plotly.newPlot") == 3
    ids = re.findall(r'<div id="(fig-[^"]+)"', text)
    assert len(ids) == len(set(ids)) == 3
    assert 'id="first-finding"' in text and 'id="second"' in text
    assert "First &lt;finding&gt;" in text and "report &amp; more" in text
    assert 'href="first/table.csv"' in text and ".x{color:red}" in text


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _animated_and_menu() -> tuple[go.Figure, go.Figure]:
    animated = go.Figure(go.Scatter(x=[0], y=[0]), frames=[go.Frame(data=[go.Scatter(x=[1], y=[1])])])
    menu = _fig()
    menu.update_layout(updatemenus=[{"buttons": [{"label": "a", "method": "restyle", "args": []}]}])
    return animated, menu


def test_is_static():
    animated, menu = _animated_and_menu()
    assert is_static(_fig())
    assert not is_static(animated) and not is_static(menu)


@pytest.fixture
def image_backend(monkeypatch):
    """A fake working image backend: records what it is asked to draw and writes PNG bytes."""
    import plotly.io as pio

    from interp.plots import export

    drawn: list[str] = []

    def write_image(fig, path, **kwargs):
        drawn.append(str(path))
        Path(path).write_bytes(PNG_MAGIC)

    def write_images(figs, paths, **kwargs):
        assert len(figs) == len(paths)
        for path in paths:
            write_image(None, path)

    monkeypatch.setattr(export, "image_backend_available", lambda: True)
    monkeypatch.setattr(go.Figure, "write_image", write_image)
    monkeypatch.setattr(pio, "write_images", write_images)
    return drawn


def test_png_with_a_working_backend(tmp_path, image_backend):
    animated, menu = _animated_and_menu()
    assert save_png(_fig(), tmp_path / "grid.png") == tmp_path / "grid.png"
    assert (tmp_path / "grid.png").read_bytes()[:8] == PNG_MAGIC
    assert save_png(animated, tmp_path / "anim.png") is None and not (tmp_path / "anim.png").exists()
    batch = save_pngs([(_fig(), tmp_path / "a.png"), (animated, tmp_path / "b.png"), (menu, tmp_path / "c.png")])
    assert batch == [tmp_path / "a.png"]  # an animation or a menu is never flattened to a picture
    assert image_backend == [str(tmp_path / "grid.png"), str(tmp_path / "a.png")]


def test_png_without_a_backend_writes_nothing(tmp_path, monkeypatch):
    from interp.plots import export

    monkeypatch.setattr(export, "image_backend_available", lambda: False)
    assert save_png(_fig(), tmp_path / "grid.png") is None
    assert save_pngs([(_fig(), tmp_path / "a.png")]) == []
    assert list(tmp_path.iterdir()) == []


def test_png_with_a_broken_backend_writes_nothing(tmp_path, image_backend, monkeypatch):
    """kaleido installed but unable to start: the HTML is the deliverable, no error, no file."""
    import plotly.io as pio

    def fail(*args, **kwargs):
        raise RuntimeError("kaleido could not start a browser")

    monkeypatch.setattr(go.Figure, "write_image", fail)
    monkeypatch.setattr(pio, "write_images", fail)
    assert save_png(_fig(), tmp_path / "grid.png") is None
    assert save_pngs([(_fig(), tmp_path / "a.png")]) == []
    assert list(tmp_path.iterdir()) == []


def test_image_backend_available_is_whether_kaleido_imports(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "kaleido" else object())
    assert image_backend_available() is False
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert image_backend_available() is True


def test_position_grid_hover_and_shape_check():
    values = np.arange(6, dtype=float).reshape(2, 3)
    fig = position_grid(values, rows=["layer 0", "layer 1"], tokens=["A", " <b>", "\n"], title="t", zmid=0.0)
    tr = fig.data[0]
    assert list(tr.x) == ["0 'A'", "1 ' &lt;b&gt;'", "2 '\\n'"] and list(tr.y) == ["layer 0", "layer 1"]
    assert tr.zmid == 0.0 and "token %{x}" in tr.hovertemplate
    with pytest.raises(InterpError, match="one token per position"):
        position_grid(values, rows=["a"], tokens=["x", "y", "z"], title="t")


def test_token_trace_marks_highlight_tokens():
    fig = token_trace(["a", "b", "c", "d"], {"v": [1.0, 2.0, 3.0, 4.0]}, title="t", marks={"hit": [1, 3]})
    marks = fig.data[1]
    assert list(marks.x) == [1, 3] and list(marks.y) == [2.0, 4.0] and list(marks.text) == ["'b'", "'d'"]
