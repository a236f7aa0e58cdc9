"""`interp atlas`: every head's use of a long context, a KV-cache head policy, and the selectors compared causally.

The runner packs the texts into windows of ``--length`` tokens, runs one forward pass per window
and reduces each layer's q and k with `interp.kernels.attention_stats` as the layer runs
(`interp.hooks.stream_layers`: O(T) memory, never the [T, T] matrix);
`interp.analyses.atlas` bins the row statistics by query position and turns them into kinds
and a policy over KV heads. Each selector's measurements (`interp.experiments._atlas_policy`)
rank the KV heads, and the causal check (`interp.experiments._atlas_causal`) windows each
selector's KV heads per budget on held-out windows and needle prompts. Windows, measurements
and conditions are units of work: shared over ranks, resumed from ``samples.jsonl``,
``selectors.jsonl`` and ``causal.jsonl``. Everything that can be refused (budgets, a policy file)
is refused before any model work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import typer
from torch import Tensor

from interp.analyses.atlas import (
    SELECTORS,
    WEIGHTED_ROW_METRICS,
    AtlasConfig,
    AtlasResult,
    combine,
    decision_units,
    position_bins,
    reduce_layer,
    with_scores,
)
from interp.datasets.texts import default_texts, read_texts, texts_digest
from interp.errors import InterpError
from interp.experiments import flags
from interp.experiments._atlas_causal import causal_check, conditions, n_windowed
from interp.experiments._atlas_policy import check_policy_file, measure, policy_units, write_duo_attention
from interp.experiments._base import Experiment, InReport, Store, execute, report_sizes
from interp.models import Model

__all__ = ["EXPERIMENT", "prepare_windows", "scan_text", "run", "read_policy"]


def _corpus(config: AtlasConfig) -> tuple[str, ...]:
    """The texts: the config's, else stdlib docstring prose followed by the shipped sink texts."""
    if config.texts is not None:
        return tuple(config.texts)
    from interp.datasets.haystack import stdlib_sentences

    return (" ".join(stdlib_sentences()), *default_texts())


def prepare_windows(lm: Model, config: AtlasConfig) -> tuple[list[Tensor], list[Tensor]]:
    """Token ids [1, length] of the profiled windows and of the held-out ones.

    The texts are joined by blank lines and the token stream is cut into consecutive windows of
    ``length`` tokens (each opening with BOS where the model prepends one); the last
    ``causal_texts`` windows are held out for the causal check.

    Raises:
        InterpError: ``length`` beyond the model's context, or too few tokens for one profiled
            window plus the held-out ones.
    """
    lm.check_length(config.length)
    if lm.tokenizer is None:
        raise InterpError(
            "the atlas reads texts, so it needs the model's tokenizer: load the model with interp.load_model"
        )
    stream = lm.tokens("\n\n".join(_corpus(config)))
    step = config.length - int(lm.prepends_bos)
    n = len(stream) // step
    if n < 1 + config.causal_texts:
        raise InterpError(
            f"the texts hold {len(stream)} tokens, fewer than {1 + config.causal_texts} windows of {config.length} "
            f"tokens (--length; {config.causal_texts} held out for the causal check): add text, lower --length or "
            "--causal-texts"
        )
    windows = [
        torch.tensor([lm.with_bos(stream[i * step : (i + 1) * step])], dtype=torch.long, device=lm.device)
        for i in range(n)
    ]
    held = windows[n - config.causal_texts :] if config.causal_texts else []
    profiled = windows[: n - config.causal_texts]
    if config.max_texts is not None:
        profiled = profiled[: config.max_texts]
    return profiled, held


def scan_text(lm: Model, ids: Tensor, config: AtlasConfig, layers: Sequence[int]) -> dict:
    """One window through the model: every layer's row statistics summed per position bin.

    Returns:
        JSON-able ``{"tokens": n, "layers": [reduce_layer record per layer]}``.
    """
    from interp.hooks import stream_layers, value_norms
    from interp.kernels import attention_stats

    bins = position_bins(config.length, config.n_bins)
    n_bins = int(bins.max()) + 1
    windows = config.kernel_windows
    out: dict[int, dict] = {}

    def on_layer(layer: int, q: Tensor, k: Tensor, v: Tensor) -> None:
        st = attention_stats(
            q, k, **lm.attention_kwargs(layer), sink_tokens=config.sinks, recent_windows=windows, columns=True,
            key_weight=value_norms(lm, layer, v).output, backend=config.backend,
        )  # fmt: skip
        assert st.recent is not None and st.distant is not None and st.recv is not None
        rows = {
            name: getattr(st, name)[0]
            for name in ("first", "sink", "entropy", "dist", "waad", "top1p", "self_mass", *WEIGHTED_ROW_METRICS)
        }
        rows["prev"] = st.recent[0, :, :, windows.index(2)] - st.self_mass[0]
        for w in config.windows:
            for prefix in ("", "w_"):  # attention, and attention weighted by ||W_O^h v_j||
                rows[f"{prefix}recent_{w}"] = getattr(st, f"{prefix}recent")[0, :, :, windows.index(w)]
                rows[f"{prefix}distant_{w}"] = getattr(st, f"{prefix}distant")[0, :, :, windows.index(w)]
        out[layer] = reduce_layer(rows, bins, n_bins, st.recv[0])

    stream_layers(lm, ids, layers, on_layer, values=True)
    return {"tokens": int(ids.shape[1]), "layers": [out[layer] for layer in layers]}


def _check_budgets(config: AtlasConfig, n_units: int) -> None:
    """Every budget windows at least one of the ``n_units`` decision units (else one clear error)."""
    for b in config.budgets:
        if n_windowed(b, n_units) < 1:
            raise InterpError(
                f"budget {b} windows no KV head: the model has {n_units} KV heads it does not already window, so a "
                f"budget needs at least {1 / n_units:.3g} (--budgets)"
            )


def _preflight(lm: Model, config: AtlasConfig, layers: Sequence[int]) -> Optional[list[tuple[int, int]]]:
    """Everything that can be refused before any work: layers, budgets, the policy file. Returns the
    policy file's windowed units (None without one)."""
    if config.causal_texts and len(layers) != lm.arch.n_layers:
        raise InterpError("the causal check windows heads of every layer: drop --layers or pass --causal-texts 0")
    windows = [lm.attention_kwargs(layer)["sliding_window"] for layer in layers]
    n_units = len(decision_units(len(layers), lm.arch.n_kv_heads, windows, config.length))
    if config.causal_texts and n_units == 0:
        raise InterpError("the model windows every layer below --length: there is no KV head left to decide")
    if config.causal_texts:
        _check_budgets(config, n_units)
    if config.policy_file is None:
        return None
    if not config.causal_texts:
        raise InterpError("--policy is what the causal check windows: pass --causal-texts 1 or more")
    return policy_units(config.policy_file, lm, config, layers)


def run(lm: Model, config: AtlasConfig = AtlasConfig(), store: Optional[Store] = None) -> AtlasResult:
    """The head atlas of ``lm``: profiles, kinds, the KV-head policy and (with held-out texts) the selectors' causal check.

    Raises:
        InterpError: bad texts or lengths (see `prepare_windows`), layers out of range, a causal
            check on a subset of layers, a budget that windows no KV head, a bad policy file
            (all before any model work).
    """
    from interp.hooks import check_layers

    store = store or Store()
    layers = check_layers(lm, config.layers)
    from_file = _preflight(lm, config, layers)
    profiled, held = prepare_windows(lm, config)
    store.note(texts_sha256=texts_digest(config.texts))
    settings = {**config.settings(), **store.notes, "model": lm.name}
    by_key = {f"text-{n:05d}": ids for n, ids in enumerate(profiled)}
    done = store.map(
        list(by_key), lambda key: scan_text(lm, by_key[key], config, layers), settings=settings, what="atlas: texts"
    )
    result = combine(
        lm.name, config, layers, lm.arch.n_heads, lm.arch.kv_map,
        [lm.attention_kwargs(layer)["sliding_window"] for layer in layers], [done[key] for key in by_key],
    )  # fmt: skip
    if held:
        measured = measure(lm, result, profiled[0], store)
        scores = {
            name: {seed: SELECTORS[name].score(measured, result.kv_map, seed)
                   for seed in (range(config.seeds) if SELECTORS[name].seeded else (0,))}
            for name in config.selectors
        }  # fmt: skip
        result = with_scores(result, {name: by_seed[0] for name, by_seed in scores.items()})
        result = causal_check(lm, result, held, store, conditions(result, scores, from_file))
    from interp.distributed import world

    if world().main:
        store.write_json("policy", result.policy())
        write_duo_attention(store, result)
    return result


def read_policy(path: str | Path, lm: Model, config: Optional[AtlasConfig] = None) -> list[tuple[int, int]]:
    """The KV heads (layer, kv head) that a policy.json or full_attention_heads.tsv (with config.json) windows on ``lm``.

    Args:
        config: the run the policy must fit (its sinks and window); None: the file's own.

    Raises:
        InterpError: unreadable, another model's, a wrong shape or values outside [0, 1], a JSON
            list, no ``windowed``, no sinks / window, or sinks / window other than ``config``'s.
    """
    if config is None:
        got = check_policy_file(str(path))
        if not isinstance(got["window"], int) or not isinstance(got["sinks"], int):
            raise InterpError(f"the policy {path} names no window and sinks: write it with interp atlas")
        config = AtlasConfig(length=lm.arch.n_ctx, windows=(got["window"],), sinks=got["sinks"], causal_texts=0)
    layers = list(range(lm.arch.n_layers))
    return [(layers[i], g) for i, g in policy_units(str(path), lm, config, layers)]


def describe(result: AtlasResult) -> str:
    """The finding: the kinds, the policy's KV saving and, with the causal check, each selector's best saving."""
    s = result.summary()
    kinds = ", ".join(f"{n} {k}" for k, n in s["kinds"].items())
    cfg = result.config
    text = (
        f"Over {s['n_texts']} texts of {cfg.length} tokens, the {len(result.layers) * result.n_heads} heads are {kinds} "
        f"(at the full length; sink mass >= {cfg.sink_min}, previous-token mass >= {cfg.prev_min}, distant mass beyond "
        f"{cfg.sinks} sinks and {cfg.policy_window} tokens <= {cfg.distant_max}). The policy windows "
        f"{s['windowed_kv_heads']} of the {s['kv_units']} KV heads the model does not window, saving "
        f"{s['kv_saved']:.1%} of the KV cache at {cfg.length} tokens."
    )
    if result.causal:
        best = ", ".join(f"{k} {'n/a' if v is None else f'{v:.0%}'}" for k, v in s["best_kv_saved"].items())
        text += (
            f" Causal check on held-out text ({s['n_key_tokens']} key tokens of {s['n_loss_tokens']}): the largest KV "
            f"saving with key-token loss change <= {cfg.loss_tolerance} nats/token and needle recall >= "
            f"{cfg.recall_min:.0%} of the unedited model's, per selector: {best}."
        )
    return text


def tables(result: AtlasResult) -> dict[str, Any]:
    out = {
        "heads": result.to_dataframe(),
        "profiles": result.profiles_dataframe(),
        "kv_heads": result.kv_heads_dataframe(),
    }
    if result.causal:
        out["causal"] = result.causal_dataframe()
        out["frontier"] = result.frontier_dataframe()
    return out


def figures(result: AtlasResult) -> dict[str, Any]:
    from interp.plots.atlas import causal_figure, frontier_figure

    return {"causal": causal_figure(result), "frontier": frontier_figure(result)} if result.causal else {}


def pages(result: AtlasResult) -> dict[str, str]:
    from interp.plots.atlas import atlas_page

    return {"atlas": atlas_page(result)}


def record(result: AtlasResult) -> dict:
    """policy.json's content also in run.json (``policy``)."""
    return {"policy": result.policy()}


def check(config: AtlasConfig) -> None:
    """What needs no model: a policy file that cannot be read, is not numbers in [0, 1], a JSON list, no ``windowed``."""
    if config.policy_file is not None:
        check_policy_file(config.policy_file)


def cli(
    model: Optional[str] = flags.model_option(),
    texts: Optional[Path] = typer.Option(
        None,
        "--texts",
        help="UTF-8 file of texts separated by lines '---', joined and cut into windows (default: stdlib docstring prose and the shipped texts).",
    ),
    length: int = typer.Option(8192, "--length", help="Tokens per window: every head is profiled up to this position."),
    max_texts: Optional[int] = typer.Option(None, "--max-texts", help="Profile at most N windows."),
    sinks: int = typer.Option(4, "--sinks", help="S: the first tokens a windowed head keeps (StreamingLLM keeps 4)."),
    windows: str = typer.Option(
        "64,256,1024", "--windows", help="The W of the recent and distant masses, comma-separated, each below --length."
    ),
    window: Optional[int] = typer.Option(
        None, "--window", help="The policy's window, one of --windows (default the largest)."
    ),
    bins: int = typer.Option(16, "--bins", help="Log-spaced query-position bins of the profiles."),
    distant_max: float = typer.Option(
        0.05, "--distant-max", help="A head with at most this distant mass may be windowed."
    ),
    causal_texts: int = typer.Option(1, "--causal-texts", help="Windows held out for the causal check (0: none)."),
    selectors: str = typer.Option(
        "profile,razor,random", "--selectors", help=f"How the causal check ranks KV heads: {', '.join(SELECTORS)}."
    ),
    budgets: str = typer.Option(
        "0.25,0.5,0.75", "--budgets", help="Shares of the KV heads the model does not window, windowed per selector."
    ),
    seeds: int = typer.Option(3, "--seeds", help="Draws of the random selector per budget."),
    needles: int = typer.Option(
        1, "--needles", help="Needles for recall at --length, each at depths 0.25/0.5/0.75 (0: none)."
    ),
    key_context: Optional[int] = typer.Option(
        None, "--key-context", help="K of the key tokens (LongPPL's short context; default min(4096, --length / 2))."
    ),
    policy: Optional[Path] = typer.Option(
        None,
        "--policy",
        help="A policy.json, or a DuoAttention full_attention_heads.tsv with its config.json beside it: the causal check adds its KV heads as selector policy-file.",
    ),
    layers: Optional[str] = flags.layers_option(),
    backend: str = flags.backend_option(),
    out: Path = flags.out_option("runs/atlas"),
    fresh: bool = flags.fresh_option(),
) -> None:
    """Every head's use of a long context (the head atlas) and a KV-cache head policy, with the
    selectors compared causally; writes heads.csv, kv_heads.csv, profiles.csv, policy.json,
    full_attention_heads.tsv + config.json (DuoAttention), causal.csv, frontier.csv, atlas.html,
    causal.html, frontier.html and run.json into OUT."""
    config = AtlasConfig(
        texts=read_texts(texts) if texts is not None else None, length=length, max_texts=max_texts, sinks=sinks,
        windows=flags.parse_ints(windows, "--windows"), window=window, n_bins=bins, distant_max=distant_max,
        causal_texts=causal_texts, selectors=flags.parse_names(selectors, "--selectors", tuple(SELECTORS)), budgets=flags.parse_floats(budgets, "--budgets"), seeds=seeds, needles=needles,
        key_context=key_context, layers=flags.parse_layers(layers),
        policy_file=str(policy) if policy is not None else None,
        backend=flags.check_backend(backend),
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


# The report's small sizes: 2 windows of 512 tokens, one held out (quick: 256 tokens, no needles).
_REPORT_SIZES = {
    False: {
        "length": 512,
        "windows": (32, 128),
        "max_texts": 1,
        "budgets": (0.25, 0.5),
        "seeds": 1,
        "needles": 0,
        "loss_tokens": 256,
        "key_context": 128,
    },
    True: {
        "length": 256,
        "windows": (32, 64),
        "max_texts": 1,
        "budgets": (0.5,),
        "seeds": 1,
        "needles": 0,
        "loss_tokens": 128,
        "key_context": 64,
    },
}


EXPERIMENT = Experiment(
    name="atlas",
    title="Head atlas at long context",
    command=("app", "atlas"),
    config=AtlasConfig,
    run=run,
    tables=tables,
    figures=figures,
    describe=describe,
    cli=cli,
    pages=pages,
    record=record,
    check=check,
    report=InReport(report_sizes(AtlasConfig, _REPORT_SIZES), order=80),
    quick=_REPORT_SIZES[True],
)
