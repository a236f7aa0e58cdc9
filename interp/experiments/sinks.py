"""`interp score sinks`: first-token and hidden attention sinks of every head over a text set.

The runner tokenises the texts into windows, runs one forward pass per window, and reduces each
layer's q and k with `interp.kernels` as the layer runs (streaming, so memory grows with T,
never T^2); `interp.analyses.sinks` turns those statistics into the result. Windows are the
units of work: shared over ranks, resumed from ``samples.jsonl``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import typer
from torch import Tensor

from interp.analyses.sinks import SinkConfig, SinkResult, combine, reduce_layer
from interp.datasets.texts import default_texts, read_texts, texts_digest
from interp.errors import InterpError
from interp.experiments import flags
from interp.experiments._base import Experiment, InReport, Store, execute, report_sizes
from interp.models import Model

__all__ = ["EXPERIMENT", "prepare_windows", "scan_window", "run"]


def prepare_windows(lm: Model, config: SinkConfig) -> list[Tensor]:
    """Token ids [1, length] of every window analysed.

    Without ``pack`` each text gives one window (its first ``length`` tokens); with ``pack``
    the texts are joined by blank lines and the stream is cut into consecutive windows (the
    incomplete last one is dropped), each opening with BOS where the model prepends one.

    Raises:
        InterpError: no texts, a text shorter than ``length`` (without pack), too few tokens
            in all (with pack), or ``length`` beyond the model's context.
    """
    texts = default_texts() if config.texts is None else tuple(config.texts)
    if not texts or not any(t.strip() for t in texts):
        raise InterpError("no texts to analyse: pass at least one non-empty text (or omit texts for the shipped set)")
    if config.length > lm.arch.n_ctx:
        raise InterpError(
            f"length {config.length} exceeds the context of {lm.name} ({lm.arch.n_ctx} tokens): lower --length"
        )
    if config.pack:
        stream = lm.tokens("\n\n".join(texts))
        step = config.length - int(lm.prepends_bos)  # every window opens with BOS where the model prepends one
        n = len(stream) // step
        if n == 0:
            raise InterpError(
                f"the texts hold {len(stream)} tokens in all, fewer than one window of {config.length} "
                "tokens (--length): lower --length or add text"
            )
        windows = [
            torch.tensor([lm.with_bos(stream[i * step : (i + 1) * step])], dtype=torch.long, device=lm.device)
            for i in range(n)
        ]
    else:
        windows = []
        for i, text in enumerate(texts):
            ids = lm.encode(text, check=False)
            if ids.shape[1] < config.length:
                raise InterpError(
                    f"text {i + 1} of {len(texts)} has {ids.shape[1]} tokens, fewer than the sink window of "
                    f"{config.length} tokens (--length): lower --length, lengthen or drop that text, "
                    "or pass --pack to join the texts into windows"
                )
            windows.append(ids[:, : config.length])
    if config.max_texts is not None:
        windows = windows[: config.max_texts]
    return windows


def scan_window(lm: Model, ids: Tensor, config: SinkConfig, layers: Sequence[int]) -> dict:
    """Run one window through the model and reduce every analysed layer to sink statistics.

    Each layer's statistics are computed twice from the same q and k: plain, and weighted by
    key_weight = ||W_O^h v_j|| (`interp.hooks.value_norms`; the kernel's ``w_sink``).

    Returns a JSON-friendly record: first_token_mass, weighted_first_token_mass and alpha0
    (``[layer][head]`` lists), position_count ([length]: number of (layer, head) with alpha_j > eps),
    hits (list of [layer, head, position, alpha, hidden]).
    """
    import numpy as np

    from interp.hooks import stream_layers, value_norms
    from interp.kernels import attention_stats

    n_layers, n_heads, length = len(layers), lm.arch.n_heads, ids.shape[1]
    index = {layer: i for i, layer in enumerate(layers)}
    ftm, wftm, a0 = (np.full((n_layers, n_heads), np.nan) for _ in range(3))
    pos_count = np.zeros(length, dtype=np.int64)
    hits: list[list] = []

    def on_layer(layer: int, q: Tensor, k: Tensor, v: Tensor) -> None:
        kwargs = lm.attention_kwargs(layer)
        weight = value_norms(lm, layer, v).output
        st = attention_stats(
            q, k, **kwargs, sink_tokens=config.sink_tokens, columns=True, key_weight=weight, backend=config.backend
        )
        i = index[layer]
        rec = reduce_layer(st.sink[0], st.recv_mean[0], layer, config, kwargs["sliding_window"], w_sink=st.w_sink[0])
        ftm[i], wftm[i], a0[i] = rec["first_token_mass"], rec["weighted_first_token_mass"], rec["alpha0"]
        pos_count[:] += rec["count"]
        hits.extend(rec["hits"])

    stream_layers(lm, ids, layers, on_layer, values=True)  # stops after the last analysed layer
    return {
        "length": int(length),
        "first_token_mass": ftm.tolist(),
        "weighted_first_token_mass": wftm.tolist(),
        "alpha0": a0.tolist(),
        "position_count": pos_count.tolist(),
        "hits": hits,
    }


def run(lm: Model, config: SinkConfig = SinkConfig(), store: Optional[Store] = None) -> SinkResult:
    """Measure first-token and hidden sinks of every head over the config's texts.

    Args:
        lm: the model.
        config: what to measure.
        store: where finished windows are logged and resumed from (`Store`; None keeps nothing).
            Launched on several ranks, each scans its share and every rank returns the whole result.

    Raises:
        InterpError: bad texts (see `prepare_windows`), layers out of range.
    """
    from interp.hooks import check_layers

    store = store or Store()
    layers = check_layers(lm, config.layers)
    windows = prepare_windows(lm, config)
    special = set(getattr(lm.tokenizer, "all_special_ids", []) or [])
    by_key = {f"text-{n:05d}": ids for n, ids in enumerate(windows)}
    store.note(texts_sha256=texts_digest(config.texts))
    settings = {**config.settings(), **store.notes, "model": lm.name}
    done = store.map(
        list(by_key), lambda key: scan_window(lm, by_key[key], config, layers), settings=settings, what="sinks: texts"
    )
    tokens = []
    for ids in windows:
        id_list = ids[0].tolist()
        tokens.append((lm.token_strings(id_list), [i in special for i in id_list]))
    return combine(
        lm.name, config, layers, lm.arch.n_heads, tokens, [done[key] for key in by_key],
        layer_windows=[lm.attention_kwargs(layer)["sliding_window"] for layer in layers],
        first_is_bos=[lm.starts_with_bos(ids) for ids in windows], model_bos=lm.prepends_bos,
    )  # fmt: skip


def _first_token(result: SinkResult) -> str:
    """What position 0 is: BOS, or the text's first token (and whether the model expects BOS)."""
    if len(result.first_is_bos) != result.n_texts:
        return ""
    share = sum(result.first_is_bos) / max(result.n_texts, 1)
    if share == 1:
        return " (position 0 is BOS in every text)"
    if result.model_bos:
        return f" (position 0 is BOS in only {share:.0%} of texts, although the model prepends BOS)"
    return " (position 0 is the text's first token: the model adds no BOS)"


def describe(result: SinkResult) -> str:
    """The finding in two or three sentences: sink rates per layer kind, what position 0 is, hidden sinks."""
    cfg, s = result.config, result.summary()
    heads = result.to_dataframe()
    top = heads.sort_values("first_token_mass", ascending=False).iloc[0]
    types = [f"{k} ({v['share']:.0%})" for k, v in list(s["hidden_token_types"].items())[:3]]
    kinds = s["sink_rate_pct_by_kind"]
    by_kind = (
        " (" + "; ".join(f"{k} layers {v:.1f}%" for k, v in kinds.items()) + ", windowed layers judged over the "
        "queries that see position 0)"
        if len(kinds) > 1 or any(k != "global" for k in kinds) else ""
    )  # fmt: skip
    return (
        f"Sink rate at the first token{_first_token(result)}: {result.sink_rate:.1f}% of (text, layer, head) have "
        f"alpha_0 > {cfg.eps} (Gu et al. 2024){by_kind} over {s['n_texts']} texts of {s['tokens_per_text']} tokens; mean first-token mass "
        f"{s['mean_first_token_mass']:.2f}, highest in layer {int(top['layer'])} head {int(top['head'])} "
        f"({top['first_token_mass']:.2f}). {s['n_hidden_sinks']} hidden sinks (recv_mean > {cfg.tau}, Yu et al. 2024)"
        + (f", mostly {', '.join(types)} tokens." if types else ".")
        + _noop_sentence(result)
    )


def _noop_sentence(result: SinkResult) -> str:
    """How many first-token sinks are no-ops, or '' without value weighting."""
    if not result.value_weighted:
        return ""
    s = result.summary()
    heads = s["sink_heads"]
    share = s["noop_share_pct"]
    return (
        f" Weighted by ||W_O^h v_j|| (Kobayashi et al. 2020), {share:.0f}% of the first-token sinks are no-ops "
        f"(value-weighted first-token mass < {result.config.noop_ratio} x the attention mass); by their means over "
        f"texts {heads['no-op']} sink heads are no-ops and {heads['active']} active."
        if share == share
        else " No first-token sink to weight by values."
    )


def tables(result: SinkResult) -> dict[str, Any]:
    return {
        "heads": result.to_dataframe(),
        "sinks": result.sinks_dataframe(),
        "layers": result.layer_sink_rates(),
        "token_types": result.token_type_table(),
    }


def figures(result: SinkResult) -> dict[str, Any]:
    from interp.plots.sinks import sinks_figure

    return {"sinks": sinks_figure(result)}


def report_figures(result: SinkResult) -> dict[str, Any]:
    from interp.plots import sinks as sp

    return {
        "first_token_mass": sp.first_token_mass_grid(result),
        **({"value_weighted_sinks": sp.value_weighted_sinks(result)} if result.value_weighted else {}),
        "layer_sink_rates": sp.layer_sink_rates(result),
        "hidden_sink_types": sp.hidden_sink_types(result),
    }


def cli(
    model: Optional[str] = flags.model_option(),
    texts: Optional[Path] = typer.Option(
        None, "--texts", help="UTF-8 file of texts separated by lines '---' (default: the shipped set)."
    ),
    length: int = typer.Option(
        256, "--length", help="Tokens analysed per text (the sink window); shorter texts are an error unless --pack."
    ),
    pack: bool = typer.Option(
        False, "--pack", help="Join the texts and cut the token stream into windows of --length tokens."
    ),
    max_texts: Optional[int] = typer.Option(None, "--max-texts", help="Analyse only the first N texts (windows)."),
    out: Path = flags.out_option("runs/sinks"),
    eps: float = typer.Option(0.3, "--eps", help="Gu et al. sink threshold on alpha_j."),
    tau: float = typer.Option(0.1, "--tau", help="Yu et al. hidden-sink threshold on recv_mean."),
    min_queries: int = typer.Option(
        16, "--min-queries", help="Keys seen by fewer queries are not sinks (1 = paper exactly)."
    ),
    noop_ratio: float = typer.Option(
        0.5, "--noop-ratio", help="A sink is a no-op when its value-weighted first-token mass is below this x its mass."
    ),
    layers: Optional[str] = flags.layers_option(),
    backend: str = flags.backend_option(),
    fresh: bool = flags.fresh_option(),
) -> None:
    """First-token and hidden attention sinks of every head, each first-token sink active or no-op by
    its value-weighted mass, over a text set; writes heads.csv,
    sinks.csv, layers.csv, token_types.csv, run.json and sinks.html into OUT."""
    config = SinkConfig(
        texts=read_texts(texts) if texts is not None else None, length=length, pack=pack, max_texts=max_texts,
        eps=eps, tau=tau, min_queries=min_queries, noop_ratio=noop_ratio, layers=flags.parse_layers(layers), backend=flags.check_backend(backend),
    )  # fmt: skip
    execute(
        EXPERIMENT,
        config,
        launch=flags.launch(),
        model=model,
        out=out,
        fresh=fresh,
        notes={"texts_file": str(texts) if texts else None},
    )


# The report's small sizes: 6 texts of 256 tokens (quick: 2 of 128).
_REPORT_SIZES = {False: {"length": 256, "max_texts": 6}, True: {"length": 128, "max_texts": 2}}


EXPERIMENT = Experiment(
    name="sinks",
    title="Attention sinks",
    command=("score", "sinks"),
    config=SinkConfig,
    run=run,
    tables=tables,
    figures=figures,
    describe=describe,
    cli=cli,
    report=InReport(report_sizes(SinkConfig, _REPORT_SIZES), order=20, figures=report_figures),
    quick=_REPORT_SIZES[True],
)
