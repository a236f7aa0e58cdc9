"""Figures for a paper (issue 27): every format of ``--image`` written by plotly's own static
export (kaleido over a headless Chromium) and opened again; attention figures with token ticks
and a blank masked triangle."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from interp.errors import InterpError
from interp.plots import head_grid
from interp.plots.attention import MAX_TICKS, attention_view
from interp.plots.export import IMAGE_FORMATS, image_backend_problem, parse_image_formats, save_images

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pattern_figure(n: int = 130):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(n, 16, generator=g), torch.randn(n, 16, generator=g)
    tokens = [f" w{i}" for i in range(n)]
    return attention_view(q, k, tokens, scale=0.25, layer=3, head=1)


def test_pattern_figure_labels_tokens_and_leaves_the_masked_triangle_blank():
    fig = _pattern_figure(130)
    z = np.asarray(fig.data[0].z, dtype=float)
    assert np.isnan(z[np.triu_indices(130, 1)]).all() and np.isfinite(z[np.tril_indices(130)]).all()
    for axis in (fig.layout.xaxis, fig.layout.yaxis):
        assert axis.showticklabels and not axis.showgrid  # no grid lines drawn over the NaN cells
        assert 30 <= len(axis.ticktext) <= MAX_TICKS  # 130 tokens: every 3rd labelled
        assert set(axis.tickvals) <= set(fig.data[0].x)
    assert fig.layout.xaxis.ticktext[:2] == (" w0", " w3")
    assert not fig.data[0].xgap and not fig.data[0].ygap
    short = _pattern_figure(20)
    assert len(short.layout.xaxis.ticktext) == 20  # under the limit every token is labelled


def test_image_formats_are_parsed_and_bad_ones_refused():
    assert parse_image_formats("png, SVG,.pdf,png") == ("png", "svg", "pdf")
    assert parse_image_formats(None) == () and parse_image_formats("none") == ()
    with pytest.raises(InterpError, match="use formats from png, svg, pdf"):
        parse_image_formats("png,jpg")


def test_every_image_format_is_written_and_opens(tmp_path):
    problem = image_backend_problem()
    if problem is not None:
        pytest.skip(f"no image backend here: {problem}")
    grid = head_grid(np.random.default_rng(0).normal(size=(4, 6)), title="scores", colorbar="score")
    pairs = [(_pattern_figure(70), tmp_path / "pattern.html"), (grid, tmp_path / "grid.html")]
    written = save_images(pairs, IMAGE_FORMATS)
    assert sorted(p.name for p in written) == sorted(f"{n}.{f}" for n in ("pattern", "grid") for f in IMAGE_FORMATS)
    for stem in ("pattern", "grid"):
        png = (tmp_path / f"{stem}.png").read_bytes()
        assert png[:8] == PNG_MAGIC and png[12:16] == b"IHDR"
        width, height = struct.unpack(">II", png[16:24])
        assert width >= 700 and height >= 450  # plotly's layout size at scale 2
        root = ET.parse(tmp_path / f"{stem}.svg").getroot()
        assert root.tag.endswith("svg") and root.tag.startswith("{http://www.w3.org/2000/svg}")
        pdf = (tmp_path / f"{stem}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-64:] and b"/Page" in pdf
    svg_text = (tmp_path / "pattern.svg").read_text(encoding="utf-8")
    assert "w68" in svg_text  # the token tick labels (every 2nd of 70) are in the picture


def test_save_images_without_a_backend_is_one_clear_error(tmp_path, monkeypatch):
    from interp.plots import export

    monkeypatch.setattr(export, "find_browser", lambda: None)
    monkeypatch.setattr(export, "image_backend_available", lambda: True)
    with pytest.raises(InterpError, match="no Chromium found"):
        save_images([(head_grid(np.ones((2, 2)), title="t"), tmp_path / "g.html")], ("png",))
    assert list(tmp_path.iterdir()) == []


LONG_TITLE = (
    "ioi: attribution patching of head_out (layer x head); clean accuracy 100%, LD clean 3.21 / corrupt -1.05; "
    "r(attribution, activation) = 0.87"
)


def test_a_long_title_is_wrapped_to_the_picture_width_and_a_short_one_kept():
    from interp.plots.export import fit_title

    fig = head_grid(np.zeros((30, 9)), title=LONG_TITLE, colorbar="score")
    fitted = fit_title(fig)
    lines = fitted.layout.title.text.split("<br>")
    assert len(lines) >= 2 and " ".join(lines) == LONG_TITLE  # wrapped at spaces, no word lost
    size = 1.4 * 12  # plotly's title font at the default font size
    assert max(len(line) for line in lines) * 0.5 * size <= 700 * 0.95  # each line fits the 700 px width
    extra = fitted.layout.margin.t - 100
    assert extra > 0 and fitted.layout.height - (fig.layout.height or 500) == extra  # the plot keeps its size
    assert fig.layout.title.text == LONG_TITLE  # the figure itself (its HTML) is unchanged
    short = head_grid(np.zeros((2, 2)), title="scores")
    assert fit_title(short) is short


def test_a_picture_has_its_figures_own_size_and_the_whole_title(tmp_path):
    problem = image_backend_problem()
    if problem is not None:
        pytest.skip(f"no image backend here: {problem}")
    from interp.plots.export import fit_title

    fig = head_grid(np.random.default_rng(1).normal(size=(30, 9)), title=LONG_TITLE, colorbar="score")
    fig.update_layout(height=660)
    (written,) = save_images([(fig, tmp_path / "patch.html")], ("png",))
    width, height = struct.unpack(">II", written.read_bytes()[16:24])
    assert (width, height) == (2 * 700, 2 * fit_title(fig).layout.height)  # not plotly's 700 x 500 for every figure
    save_images([(fig, tmp_path / "patch.html")], ("svg",))
    root = ET.parse(tmp_path / "patch.svg").getroot()
    title = [el for el in root.iter() if el.get("class") == "gtitle"]
    assert len(title) == 1
    lines = ["".join(t.itertext()) for t in title[0].iter() if t.tag.endswith("tspan") and t.get("class") == "line"]
    assert " ".join(lines) == LONG_TITLE  # two or more lines, all of it drawn
