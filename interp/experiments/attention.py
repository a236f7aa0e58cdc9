"""`interp attention`: the attention patterns of chosen heads on chosen texts, exactly as the model
computes them (the report's last stage draws the heads the other stages found).

Each view is one head on one text: the head's q and k are captured on the text and its pattern is
the kernel's own softmax (`interp.kernels.attention_pattern`, through `interp.plots.attention`),
drawn with the query and key tokens in the hover and as tick labels. The finding says, per head,
which keys it attends to most (mean attention over the queries), its mean entropy and its sink
mass (the kernel's statistics, `interp.kernels.attention_stats`, with the layer's own settings).
A text you give is drawn as it is; ``--repeats N`` says it N times. With ``--weighting norm``
each head is drawn twice side by side: a_ij, and the norm-weighted a_ij ||W_O^h v_j|| normalised
per row (Kobayashi et al. 2020; v captured too, `interp.hooks.value_norms`): what each key adds
to the head's output rather than the attention it gets. In the report the views are built from the
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

import pandas as pd
import torch
import typer
from jaxtyping import Float
from torch import Tensor

from interp.analyses import Config
from interp.errors import InterpError
from interp.experiments import flags
from interp.experiments._base import Experiment, InReport, execute
from interp.models import Model

__all__ = ["ViewConfig", "AttentionViews", "REPEAT_TEXT", "head_summary", "run", "EXPERIMENT"]

# The report's copy text: a sentence of rare words, said ``repeats`` times.
REPEAT_TEXT = "The violet lighthouse keeper Marguerite counted forty-seven copper gulls over the Baltic shore at dawn. "

View = tuple[str, int, int, str, str]  # (label, layer, head, text, caption)
WEIGHTINGS = ("attention", "norm")  # how --weighting draws a head


@dataclass(frozen=True)
class ViewConfig(Config):
    """Which heads to draw on which texts.

    Attributes:
        views: (label, layer, head, text, caption) per figure; the figure is named
            ``<label>_L<layer>H<head>`` and titled by its caption.
        weighting: "attention" (a_ij) or "norm" (a_ij beside a_ij ||W_O^h v_j|| normalised per row).
    """

    views: tuple[View, ...] = ()  # no default view: a view names a head and a text
    weighting: str = "attention"  # "norm": the norm-weighted pattern beside the plain one

    def validate(self) -> None:
        """Raise `InterpError` on an empty or malformed view (model-free checks)."""
        if self.weighting not in WEIGHTINGS:
            raise InterpError(f"unknown weighting {self.weighting!r}: use {' or '.join(WEIGHTINGS)}")
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
    heads: tuple[dict, ...] = ()  # per view: `head_summary` (top keys, entropy, sink mass)

    def summary(self) -> dict:
        views = [{"label": v[0], "layer": v[1], "head": v[2], "caption": v[4]} for v in self.config.views]
        return {"views": [{**view, **head} for view, head in zip(views, self.heads)] if self.heads else views}

    def to_dataframe(self) -> pd.DataFrame:
        """One row per view: label, layer, head, tokens, entropy, sink, and its top keys as text."""
        rows = []
        for (label, layer, head, _, _), s in zip(self.config.views, self.heads):
            keys = "; ".join(f"{k['position']} {k['token']!r} {k['mass']:.3f}" for k in s["top_keys"])
            rows.append({"label": label, "layer": layer, "head": head, "tokens": s["tokens"], "entropy": s["entropy"],
                         "sink": s["sink"], "top_keys": keys})  # fmt: skip
        return pd.DataFrame(rows, columns=["label", "layer", "head", "tokens", "entropy", "sink", "top_keys"])


def head_summary(
    entropy: Float[Tensor, " query"],
    sink: Float[Tensor, " query"],
    recv: Float[Tensor, " key"],
    tokens: list[str],
    k: int = 3,
) -> dict:
    """What one head does on one text, from its kernel statistics.

    Args:
        entropy: per query row, in nats; padded rows NaN.
        sink: per query row, the mass on the first real token; padded rows NaN.
        recv: per key, the attention it receives summed over the queries.
        tokens: the text's tokens.
        k: how many top keys.

    Returns:
        {"tokens", "entropy" (mean over queries), "sink" (mean sink mass), "top_keys": the ``k``
        keys of largest mean attention over the queries, each {"position", "token", "mass"}}.
    """
    n = len(tokens)
    mean_recv = recv.double().nan_to_num(0.0) / max(n, 1)
    top = torch.topk(mean_recv, min(k, n))
    keys = [{"position": int(j), "token": tokens[int(j)], "mass": float(v)} for v, j in zip(top.values, top.indices)]
    return {
        "tokens": n,
        "entropy": float(entropy.double().nanmean()),
        "sink": float(sink.double().nanmean()),
        "top_keys": keys,
    }


def _line(caption: str, layer: int, head: int, s: dict) -> str:
    keys = ", ".join(f"{k['token']!r}@{k['position']} ({k['mass']:.2f})" for k in s["top_keys"])
    name = f"layer {layer} head {head}"
    where = caption if caption.lower() == name else f"{caption} ({name})"
    return f"{where}: attends most to {keys}; entropy {s['entropy']:.2f} nats, sink mass {s['sink']:.2f}"


def run(lm: Model, config: ViewConfig, store: Any = None) -> AttentionViews:
    """Capture each view's head on its text and draw its pattern.

    Raises:
        InterpError: a layer or head outside the model, a text longer than its context.
    """
    from interp.hooks import capture
    from interp.kernels import attention_stats
    from interp.plots.attention import attention_view, norm_view, pattern_kwargs

    for _, layer, head, _, _ in config.views:  # every view checked before any is drawn
        lm.arch.check_layer(layer)
        lm.arch.check_head(head)
    figures, lines, heads = {}, [], []
    for label, layer, head, text, caption in config.views:
        ids = lm.encode(text)
        norm = config.weighting == "norm"
        with capture(lm, layers=[layer], keep=("q", "k", "v") if norm else ("q", "k")) as cap:
            lm.forward(ids)
        tokens = lm.token_strings(ids[0])
        q, k = cap["q", layer][0, head], cap["k", layer][0, lm.arch.kv_map[head]]
        settings = {**pattern_kwargs(lm.attention_kwargs(layer), head), "layer": layer, "head": head}
        if norm:
            fig = norm_view(q, k, cap.value_norms(layer).output[0, head], tokens, **settings)
        else:
            fig = attention_view(q, k, tokens, **settings)
        named = caption.lower() == f"layer {layer} head {head}"  # the figure's own title names the head
        fig.update_layout(title=fig.layout.title.text.capitalize() if named else f"{caption}: {fig.layout.title.text}")
        figures[f"{label}_L{layer}H{head}"] = fig
        stats = attention_stats(cap["q", layer], cap["k", layer], **lm.attention_kwargs(layer), columns=True)
        summary = head_summary(stats.entropy[0, head], stats.sink[0, head], stats.recv[0, head], tokens)
        heads.append(summary)
        lines.append(_line(caption, layer, head, summary))
    return AttentionViews(config=config, model=lm.name, lines=tuple(lines), figures=figures, heads=tuple(heads))


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
    text: Optional[str] = typer.Option(
        None, "--text", help="The text each head is drawn on (default: a sentence of rare words, said twice)."
    ),
    text_file: Optional[Path] = typer.Option(None, "--text-file", help="Read the text from this UTF-8 file."),
    repeats: Optional[int] = typer.Option(
        None, "--repeats", min=1, help="Say the text N times (your text: once unless given; copying shows from 2)."
    ),
    weighting: str = typer.Option(
        "attention", "--weighting", help="attention: a_ij; norm: a_ij beside a_ij ||W_O^h v_j|| normalised per row."
    ),
    model: Optional[str] = flags.model_option(),
    out: Path = flags.out_option("runs/attention"),
    fresh: bool = flags.fresh_option(),
) -> None:
    """Draw the attention pattern of each head in --heads on --text or --text-file (exact softmax of
    the model's own q and k, token ticks and hover); the finding gives each head's top keys,
    entropy and sink mass; writes head_L<layer>H<head>.html, heads.csv and run.json into OUT."""
    flags.not_together("--text", text is not None, "--text-file", text_file is not None, "give one text")
    parsed = flags.parse_heads(heads, optional=False) or ()
    if text_file is not None:
        from interp.datasets import read_user_text

        text = read_user_text(text_file, "text file", "a UTF-8 text file").rstrip("\n")
    said = _said(text, repeats)
    views = tuple(("head", int(layer), int(head), said, f"Layer {layer} head {head}") for layer, head in parsed)
    notes = {"text_file": str(text_file) if text_file else None, "repeats": repeats}
    execute(
        EXPERIMENT,
        ViewConfig(views=views, weighting=weighting),
        launch=flags.launch(),
        model=model,
        out=out,
        fresh=fresh,
        notes=notes,
    )


def _said(text: Optional[str], repeats: Optional[int]) -> str:
    """The text drawn: a user's text as given (said ``repeats`` times only when asked), or the
    default sentence said twice (or ``repeats`` times)."""
    if text is None:
        return " ".join([REPEAT_TEXT.strip()] * (repeats or 2))
    return text if not repeats or repeats == 1 else " ".join([text.strip()] * repeats)


EXPERIMENT = Experiment(
    name="attention",
    title="Attention patterns of the heads found",
    command=("app", "attention"),
    config=ViewConfig,
    run=run,
    tables=lambda result: {"heads": result.to_dataframe()},
    figures=lambda result: dict(result.figures),
    describe=describe,
    cli=cli,
    report=InReport(report_config, order=1000, needs=("retrieval", "patching"), html=report_html),
)
