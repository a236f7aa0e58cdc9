"""`interp score preplan`: preplan and anchor tokens of responses (Li et al. 2025).

For each prompt the runner builds the prompt ids (chat template by default), answers greedily
when no response is given (`Model.greedy`, stopping at an end-of-sequence token), runs one
forward pass over prompt + response and reduces each chosen layer's q and k to dist, waad and
band statistics as the layer runs (`interp.analyses.preplan.layer_statistics`); the pure
`interp.analyses.preplan.analyse` finds the heads and tokens. Prompts are the units of work:
shared over ranks, resumed from ``samples.jsonl``.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
import typer
from jaxtyping import Integer
from torch import Tensor

from interp.analyses.preplan import (
    PreplanConfig,
    PreplanResult,
    PreplanRun,
    PreplanStats,
    analyse,
    default_layers,
    layer_statistics,
)
from interp.datasets.prompts import Prompt, default_prompts, load_prompts, prompts_digest
from interp.errors import InterpError
from interp.experiments import flags
from interp.experiments._base import Experiment, InReport, Store, execute
from interp.models import Model

__all__ = ["EXPERIMENT", "collect_statistics", "score_ids", "score_prompt", "run"]


def collect_statistics(
    lm: Model, ids: Integer[Tensor, "1 pos"], n_prompt: int, layers: Sequence[int], config: PreplanConfig
) -> PreplanStats:
    """One forward pass; each chosen layer's q/k is reduced to statistics as it runs.

    Args:
        ids: [1, pos] prompt + response ids.
        n_prompt: prompt length P.
        layers: the chosen layers.

    Raises:
        InterpError: a chosen layer whose hooks did not fire.
    """
    from interp.hooks import stream_layers

    kept: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def on_layer(layer: int, q: Tensor, k: Tensor) -> None:
        kept[layer] = layer_statistics(q, k, attention=lm.attention_kwargs(layer), n_prompt=n_prompt, config=config)

    stream_layers(lm, ids, layers, on_layer)  # stops after the last chosen layer
    stack = lambda i: np.stack([kept[layer][i] for layer in layers])  # noqa: E731
    return PreplanStats(layers=tuple(layers), dist=stack(0), waad=stack(1), band=stack(2))


def score_ids(
    lm: Model,
    config: PreplanConfig,
    prompt_ids: Integer[Tensor, "1 prompt_pos"],
    response_ids: Optional[Integer[Tensor, "1 resp_pos"]] = None,
    *,
    prompt: str = "",
    response: Optional[str] = None,
) -> PreplanResult:
    """Preplan and anchor tokens of one prompt + response given as token ids.

    Args:
        prompt_ids: [1, P] prompt ids (chat template already applied if wanted).
        response_ids: [1, R] response ids, or None to generate ``config.max_new_tokens`` greedily.
        prompt: the prompt's text, stored in the result.
        response: the response's text, stored in the result (decoded from its ids when None).

    Raises:
        InterpError: an empty prompt or response, a one-token response, prompt + response longer
            than the context, layers out of range.
    """
    arch = lm.arch
    prompt_ids = torch.as_tensor(prompt_ids).reshape(1, -1).to(lm.device)
    n_prompt = int(prompt_ids.shape[1])
    if n_prompt == 0:
        raise InterpError("prompt is empty: give at least one token of prompt text")
    layers = (
        list(config.layers) if config.layers is not None else default_layers(arch.n_layers, config.n_default_layers)
    )
    for layer in layers:
        arch.check_layer(int(layer))
    generated = response_ids is None
    if generated:
        if n_prompt + config.max_new_tokens > arch.n_ctx:
            raise InterpError(
                f"prompt ({n_prompt} tokens) + max_new_tokens ({config.max_new_tokens}) exceed the context of "
                f"{arch.n_ctx} tokens: lower --max-new-tokens or shorten the prompt"
            )
        response_ids = lm.greedy(prompt_ids, config.max_new_tokens, stop=lm.stop_ids, progress=True)
    response_ids = torch.as_tensor(response_ids).reshape(1, -1).to(lm.device)
    n_resp = int(response_ids.shape[1])
    if n_resp == 0:
        raise InterpError("the response is empty: give response text (or omit it to generate one)")
    if n_resp < 2:
        raise InterpError(
            "the response has 1 token: WAAD jumps need at least 2 response tokens; give a longer response "
            "(or raise --max-new-tokens)"
        )
    if n_prompt + n_resp > arch.n_ctx:
        raise InterpError(
            f"prompt ({n_prompt} tokens) + response ({n_resp} tokens) = {n_prompt + n_resp} tokens exceed the "
            f"context of {arch.n_ctx} tokens of {lm.name}: shorten the response or the prompt"
        )
    stats = collect_statistics(lm, torch.cat([prompt_ids, response_ids], dim=1), n_prompt, layers, config)
    resp_list = response_ids[0].tolist()
    return PreplanResult.found(
        analyse(stats, config),
        config=config,
        model=lm.name,
        prompt=prompt,
        response=lm.decode(resp_list) if response is None else response,
        generated=generated,
        n_prompt=n_prompt,
        tokens=tuple(lm.token_strings(resp_list)),
        token_ids=np.asarray(resp_list, dtype=np.int64),
        layers=tuple(layers),
        prompt_tokens=tuple(lm.token_strings(prompt_ids[0].tolist())),
    )


def score_prompt(
    lm: Model, config: PreplanConfig = PreplanConfig(), *, prompt: Optional[str] = None, response: Optional[str] = None
) -> PreplanResult:
    """Preplan and anchor tokens of one response (Li et al. 2025; docs/METRICS.md#preplan-and-anchor-tokens).

    Args:
        config: thresholds and layers (`PreplanConfig`; paper defaults; its prompts are not used).
        prompt: the user's question; None = the first shipped math word problem. Wrapped in the
            chat template when ``config.chat``.
        response: the assistant's answer to score; None = greedy generation of up to
            ``config.max_new_tokens`` tokens.

    Raises:
        InterpError: empty prompt or response, prompt + response longer than the context,
            layers out of range.
    """
    if prompt is None:
        prompt = default_prompts()[0].prompt
    if not isinstance(prompt, str) or not prompt.strip():
        raise InterpError("the prompt is empty: give the question text")
    if response is not None and not response.strip():
        raise InterpError("the response is empty: give response text (or omit it to generate one)")
    prompt_ids = lm.encode(lm.chat_prompt(prompt) if config.chat else prompt)
    response_ids = lm.encode(response, check=False, bos=False) if response is not None else None  # continues the prompt
    return score_ids(lm, config, prompt_ids, response_ids, prompt=prompt, response=response)


def run(lm: Model, config: PreplanConfig = PreplanConfig(), store: Optional[Store] = None) -> PreplanRun:
    """Preplan and anchor tokens of every prompt of ``config`` (None: the shipped math problems).

    Args:
        store: where finished prompts are logged and resumed from (`Store`; None keeps nothing).
            Launched on several ranks, each scores its share and every rank returns the whole run.
    """
    store = store or Store()
    prompts = config.prompts if config.prompts is not None else default_prompts()
    by_id = {p.id: p for p in prompts}
    store.note(prompts_sha256=prompts_digest(prompts))
    settings = {**config.settings(), **store.notes, "model": lm.name}

    def one(key: str) -> dict:
        p = by_id[key]
        return score_prompt(lm, config, prompt=p.prompt, response=p.response).to_record()

    done = store.map(list(by_id), one, settings=settings, what="prompts", progress=len(prompts) > 1)
    results = tuple(PreplanResult.from_record(done[key], config) for key in by_id)
    layers = results[0].layers if results else ()
    windows = tuple(lm.attention_kwargs(layer)["sliding_window"] for layer in layers)
    return PreplanRun(config=config, model=lm.name, ids=tuple(by_id), results=results, windows=windows)


# --------------------------------------------------------------------------------------------
# What the command and the report show
# --------------------------------------------------------------------------------------------


def _finding(r: PreplanResult) -> str:
    s = r.summary()
    shipped = {p.prompt for p in default_prompts()}
    answer = "a greedy answer" if r.generated else "the given answer"
    question = "a math word problem" if r.prompt in shipped else "the prompt"
    return (
        f"{s['n_response_tokens']} response tokens of {answer} to {question}, layers {s['layers']}: "
        f"{r.n_local} local and {r.n_global} global heads; {s['n_preplan']} preplan tokens "
        f"(largest WAAD jumps), {s['n_anchor']} anchor tokens (highest FAI), {s['n_dominated_anchors']} of them "
        f"locally dominated (a preplan token in the {r.config.coupling_k} tokens before)."
    )


def describe(result: PreplanRun) -> str:
    """The finding per prompt (one sentence; prefixed by the prompt id when there are several)."""
    if len(result.results) == 1:
        return _finding(result.results[0])
    return "\n".join(f"{i}: {_finding(r)}" for i, r in zip(result.ids, result.results))


def tables(result: PreplanRun) -> dict[str, Any]:
    return {"tokens": result.to_dataframe(), "heads": result.heads_dataframe()}


def pages(result: PreplanRun) -> dict[str, str]:
    """preplan.html: a section per prompt, its response tokens coloured, with its figures."""
    from interp.plots.preplan import preplan_page

    return {"preplan": preplan_page(result.results, result.ids)}


def report_figures(result: PreplanRun) -> dict[str, Any]:
    from interp.plots import preplan as pp

    out: dict[str, Any] = {}
    for i, r in zip(result.ids, result.results):
        suffix = "" if len(result.results) == 1 else f"_{i}"
        out |= {
            f"waad{suffix}": pp.waad_figure(r),
            f"fai{suffix}": pp.fai_figure(r),
            f"spans{suffix}": pp.span_figure(r),
        }
    return out


_REPORT_CSS = """
.resp { font-family: ui-monospace, monospace; line-height: 1.9; white-space: pre-wrap; border: 1px solid #eee;
        padding: .8em; max-width: 1100px; }
.tok { border-radius: 3px; padding: 0 1px; }
.tok:hover { outline: 1px solid #333; }
.preplan { background: #f4a261; } .anchor { background: #8ecae6; } .both { background: #c77dff; }
.dom { box-shadow: 0 0 0 2px #d00000; }
"""  # the coloured tokens of `report_html`


def report_html(result: PreplanRun) -> str:
    """The report section: the finding, the prompt, and the response with its tokens coloured."""
    from interp.plots.preplan import highlighted_text_html

    legend = (
        '<p class="legend"><span class="tok preplan">preplan</span> <span class="tok anchor">anchor</span> '
        '<span class="tok both">both</span> <span class="tok anchor dom">locally dominated anchor</span> '
        "(hover a token for its numbers)</p>"
    )
    esc = lambda x: html.escape(str(x), quote=False)  # noqa: E731
    parts = [
        f"<p>{esc(_finding(r))}</p><p>Prompt: <i>{esc(r.prompt)}</i></p>" + legend + highlighted_text_html(r)
        for r in result.results
    ]
    return "".join(parts)


def cli(
    model: Optional[str] = flags.model_option(),
    prompt: Optional[str] = typer.Option(
        None, "--prompt", help="One question (default: the shipped math word problems)."
    ),
    prompts: Optional[Path] = typer.Option(
        None, "--prompts", help='JSONL file, one {"id", "prompt", "response"?} per line.'
    ),
    response: Optional[str] = typer.Option(None, "--response", help="Response to score (default: greedy generation)."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Greedy tokens when no response is given."),
    out: Path = flags.out_option("runs/preplan"),
    layers: Optional[str] = flags.layers_option("5 in [L/3, 2L/3]"),
    local_quantile: float = typer.Option(0.3, "--local-quantile", help="Share of heads with the lowest span = local."),
    global_quantile: float = typer.Option(
        0.3, "--global-quantile", help="Share of heads with the highest span = global."
    ),
    preplan_quantile: float = typer.Option(0.4, "--preplan-quantile", help="Top share of WAAD jumps = preplan tokens."),
    anchor_quantile: float = typer.Option(0.4, "--anchor-quantile", help="Top share of FAI = anchor tokens."),
    window: int = typer.Option(10, "--window", help="W of WAAD."),
    band_lo: int = typer.Option(10, "--band-lo", help="FAI band start (queries s+lo..s+hi)."),
    band_hi: int = typer.Option(100, "--band-hi", help="FAI band end."),
    tau_waad: Optional[float] = typer.Option(
        None, "--tau-waad", help="WAAD cut for locally dominated anchors (default: median)."
    ),
    no_chat: bool = typer.Option(False, "--no-chat", help="Do not wrap prompts in the chat template."),
    backend: str = flags.backend_option(),
    fresh: bool = flags.fresh_option(),
) -> None:
    """Find local/global heads, WAAD and FAI per token, preplan and anchor tokens; writes tokens.csv,
    heads.csv, run.json and preplan.html into OUT."""
    if prompt is not None and prompts is not None:
        raise InterpError("pass either --prompt or --prompts, not both")
    if response is not None and not response.strip():
        raise InterpError("--response is empty: give the response text, or omit it to generate one greedily")
    if prompt is not None:
        chosen: Optional[tuple[Prompt, ...]] = (Prompt("prompt", prompt, response),)
    else:
        if response is not None:
            raise InterpError('--response needs --prompt (for a prompt file, put a "response" field on each line)')
        chosen = load_prompts(prompts) if prompts is not None else None
    config = PreplanConfig(
        prompts=chosen, layers=flags.parse_layers(layers), window=window, band=(band_lo, band_hi),
        local_quantile=local_quantile, global_quantile=global_quantile, preplan_quantile=preplan_quantile,
        anchor_quantile=anchor_quantile, tau_waad=tau_waad, max_new_tokens=max_new_tokens, chat=not no_chat,
        backend=flags.check_backend(backend),
    )  # fmt: skip
    execute(EXPERIMENT, config, launch=flags.launch(), model=model, out=out, fresh=fresh)


_REPORT_SIZES = {False: {"max_new_tokens": 96}, True: {"max_new_tokens": 24}}


def report_config(quick: bool, earlier: Mapping[str, Any]) -> PreplanConfig:
    """The report's sizes: a greedy answer of 96 tokens (quick: 24) to the first shipped problem."""
    return PreplanConfig(prompts=default_prompts()[:1], **_REPORT_SIZES[quick])


EXPERIMENT = Experiment(
    name="preplan",
    title="Preplan and anchor tokens",
    command=("score", "preplan"),
    config=PreplanConfig,
    run=run,
    tables=tables,
    figures=lambda result: {},
    pages=pages,
    describe=describe,
    cli=cli,
    report=InReport(report_config, order=30, figures=report_figures, html=report_html, css=_REPORT_CSS),
    quick=_REPORT_SIZES[True],
    images=report_figures,
)
