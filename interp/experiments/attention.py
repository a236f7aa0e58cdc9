"""`interp attention`: the attention patterns of chosen heads on chosen texts, exactly as the model
computes them (the report's last stage draws the heads the other stages found).

Each view is one head on one text: the head's q and k are captured on the text and its pattern is
the kernel's own softmax (`interp.kernels.attention_pattern`, through `interp.plots.attention`),
drawn with the query and key tokens in the hover. In the report the views are built from the
results of the stages this one `needs`: the top retrieval head on a sentence said twice (a head
that copies from context attends, on the second copy, to the token after the current token's
first occurrence: a stripe parallel to the diagonal) and the top patching head on a clean prompt
of its task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import typer

from interp.analyses import Config
from interp.errors import InterpError
from interp.experiments import flags
from interp.experiments._base import Experiment, InReport, execute
from interp.models import Model

__all__ = ["ViewConfig", "AttentionViews", "REPEAT_TEXT", "run", "EXPERIMENT"]

# The report's copy text: a sentence of rare words, said ``repeats`` times.
REPEAT_TEXT = "The violet lighthouse keeper Marguerite counted forty-seven copper gulls over the Baltic shore at dawn. "

View = tuple[str, int, int, str, str]  # (label, layer, head, text, caption)


@dataclass(frozen=True)
class ViewConfig(Config):
    """Which heads to draw on which texts.

    Attributes:
        views: (label, layer, head, text, caption) per figure; the figure is named
            ``<label>_L<layer>H<head>`` and titled by its caption.
    """

    views: tuple[View, ...] = ()  # no default view: a view names a head and a text

    def validate(self) -> None:
        """Raise `InterpError` on an empty or malformed view (model-free checks)."""
        if not self.views:
            raise InterpError("no views: give at least one (label, layer, head, text, caption)")
        for view in self.views:
            if len(view) != 5:
                raise InterpError(f"view {view!r} is not (label, layer, head, text, caption)")
            label, layer, head, text, _ = view
            if not re.fullmatch(r"[A-Za-z0-9_-]+", str(label)):
                raise InterpError(f"view label {label!r}: use letters, digits, '_' or '-' (it names a file)")
            if not (isinstance(layer, int) and isinstance(head, int) and layer >= 0 and head >= 0):
                raise InterpError(f"view of {label}: layer {layer!r} and head {head!r} must be ints >= 0")
            if not str(text).strip():
                raise InterpError(f"view of {label}: the text is empty; give a text to draw the head on")


@dataclass(frozen=True)
class AttentionViews:
    """The drawn patterns: one figure per view, and one line saying what each shows."""

    config: ViewConfig
    model: str
    lines: tuple[str, ...]
    figures: dict = field(default_factory=dict, repr=False)  # name -> plotly Figure

    def summary(self) -> dict:
        return {"views": [{"label": v[0], "layer": v[1], "head": v[2], "caption": v[4]} for v in self.config.views]}


def run(lm: Model, config: ViewConfig, store: Any = None) -> AttentionViews:
    """Capture each view's head on its text and draw its pattern.

    Raises:
        InterpError: a layer or head outside the model, a text longer than its context.
    """
    from interp.hooks import capture
    from interp.plots.attention import attention_view, pattern_kwargs

    for _, layer, head, _, _ in config.views:  # every view checked before any is drawn
        lm.arch.check_layer(layer)
        lm.arch.check_head(head)
    figures, lines = {}, []
    for label, layer, head, text, caption in config.views:
        ids = lm.encode(text)
        with capture(lm, layers=[layer], keep=("q", "k")) as cap:
            lm.forward(ids)
        q, k = cap["q", layer][0, head], cap["k", layer][0, lm.arch.kv_map[head]]
        fig = attention_view(
            q, k, lm.token_strings(ids[0]), **pattern_kwargs(lm.attention_kwargs(layer), head), layer=layer, head=head
        )
        fig.update_layout(title=f"{caption}: {fig.layout.title.text}")
        figures[f"{label}_L{layer}H{head}"] = fig
        lines.append(f"{caption}: layer {layer} head {head}")
    return AttentionViews(config=config, model=lm.name, lines=tuple(lines), figures=figures)


def describe(result: AttentionViews) -> str:
    return "; ".join(result.lines) + "."


def report_html(result: AttentionViews) -> str:
    import html

    return (
        f"<p>{html.escape(describe(result), quote=False)}</p><p>Each pattern is computed exactly from the head's "
        "captured q and k. The copy text is one sentence said twice: a head that copies from context attends, on "
        "the second copy, to the token after the current token's first occurrence (a stripe parallel to the "
        "diagonal). Hover a cell for the query and key tokens.</p>"
    )


def report_config(quick: bool, earlier: Mapping[str, Any]) -> ViewConfig:
    """The report's views, from the stages it `needs`: the top retrieval head on `REPEAT_TEXT` said
    twice (a middle-layer head when no retrieval head scored) and the top patching head on the first
    clean prompt of its task."""
    from interp.analyses.patching import top_heads

    retrieval, patching = earlier["retrieval"], earlier["patching"]
    copy_text = REPEAT_TEXT * 2
    top = retrieval.top(5)
    if top:
        layer, head, _ = top[0]
        views = [("retrieval", layer, head, copy_text, "Top retrieval head on repeated text")]
    else:  # no needle sample was answered, so no head scored: show a mid-depth head instead
        layer = retrieval.scores.shape[0] // 2
        views = [("retrieval", layer, 0, copy_text, "No retrieval head scored; a middle-layer head on repeated text")]
    layer, head, _ = top_heads(patching, 1)[0]
    views.append(
        ("patching", layer, head, patching.prompts[0], f"Top {patching.task.upper()} patching head on a clean prompt")
    )
    return ViewConfig(views=tuple(views))


def cli(
    heads: str = typer.Option(..., "--heads", help="Heads to draw, LAYER.HEAD,... e.g. 18.6,23.3."),
    text: str = typer.Option(REPEAT_TEXT.strip(), "--text", help="The text each head is drawn on."),
    repeats: int = typer.Option(2, "--repeats", min=1, help="Say the text this many times (copying shows from 2)."),
    model: Optional[str] = flags.model_option(),
    out: Path = flags.out_option("runs/attention"),
) -> None:
    """Draw the attention pattern of each head in --heads on --text (exact softmax of the model's
    own q and k, token hover); writes head_L<layer>H<head>.html and run.json into OUT."""
    parsed = flags.parse_heads(heads) or ()
    said = " ".join([text.strip()] * repeats)
    views = tuple(("head", int(layer), int(head), said, f"Layer {layer} head {head}") for layer, head in parsed)
    execute(EXPERIMENT, ViewConfig(views=views), model=model, out=out)


EXPERIMENT = Experiment(
    name="attention",
    title="Attention patterns of the heads found",
    command=("app", "attention"),
    config=ViewConfig,
    run=run,
    tables=lambda result: {},
    figures=lambda result: dict(result.figures),
    describe=describe,
    cli=cli,
    report=InReport(report_config, order=1000, needs=("retrieval", "patching"), html=report_html),
)
