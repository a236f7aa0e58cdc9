"""`interp atlas`: every head's use of a long context, a KV-cache head policy, and its causal check.

The runner packs the texts into windows of ``--length`` tokens, runs one forward pass per window
and reduces each layer's q and k with `interp.kernels.attention_stats` as the layer runs
(`interp.hooks.stream_layers`: O(T) memory, never the [T, T] matrix);
`interp.analyses.atlas` bins the row statistics by query position and turns them into kinds
and a policy. The causal check then windows heads with `interp.hooks.window_attention` on
held-out windows: the policy's heads, as many random heads (``--seeds``) and the heads with the
most distant mass, for each budget, measuring the loss change and needle recall
(`interp.experiments.retrieval.traces.needle_recall`). Windows and conditions are units of work:
shared over ranks, resumed from ``samples.jsonl`` and ``causal.jsonl``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import typer
from torch import Tensor

from interp.analyses.atlas import (
    AtlasConfig,
    AtlasResult,
    combine,
    kv_saved,
    parse_ints,
    position_bins,
    reduce_layer,
    select_heads,
    with_causal,
)
from interp.datasets.texts import default_texts, read_texts, texts_digest
from interp.errors import InterpError
from interp.experiments import flags
from interp.experiments._base import Experiment, InReport, Store, execute, report_sizes
from interp.models import Model

__all__ = ["EXPERIMENT", "prepare_windows", "scan_text", "window_loss", "run", "read_policy"]


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
    from interp.hooks import stream_layers
    from interp.kernels import attention_stats

    bins = position_bins(config.length, config.n_bins)
    n_bins = int(bins.max()) + 1
    windows = config.kernel_windows
    out: dict[int, dict] = {}

    def on_layer(layer: int, q: Tensor, k: Tensor) -> None:
        st = attention_stats(
            q, k, **lm.attention_kwargs(layer), sink_tokens=config.sinks, recent_windows=windows, columns=True,
            backend=config.backend,
        )  # fmt: skip
        assert st.recent is not None and st.distant is not None and st.recv is not None
        rows = {
            name: getattr(st, name)[0] for name in ("first", "sink", "entropy", "dist", "waad", "top1p", "self_mass")
        }
        rows["prev"] = st.recent[0, :, :, windows.index(2)] - st.self_mass[0]
        for w in config.windows:
            rows[f"recent_{w}"] = st.recent[0, :, :, windows.index(w)]
            rows[f"distant_{w}"] = st.distant[0, :, :, windows.index(w)]
        out[layer] = reduce_layer(rows, bins, n_bins, st.recv[0])

    stream_layers(lm, ids, layers, on_layer)
    return {"tokens": int(ids.shape[1]), "layers": [out[layer] for layer in layers]}


def window_loss(lm: Model, ids: Tensor, n: int, edits: Sequence = ()) -> float:
    """Mean next-token NLL (nats) of the last ``n`` tokens of ``ids`` [1, pos] with ``edits`` applied."""
    from interp.hooks import intervene

    n = min(n, int(ids.shape[1]) - 1)
    with intervene(lm, list(edits)), torch.no_grad():
        logits = lm.logits_tail(ids, n + 1)[0, :-1].float()
    return float(torch.nn.functional.cross_entropy(logits, ids[0, -n:].to(logits.device)))


def _needle_samples(lm: Model, config: AtlasConfig) -> tuple[list, Any]:
    """Needle samples at ``length`` tokens (middle depth), at most ``needles`` of them."""
    if config.needles == 0:
        return [], None
    from interp.analyses.retrieval import RetrievalConfig
    from interp.experiments.retrieval.runner import prepare_samples

    rconfig = RetrievalConfig(lengths=(config.length,), depths=(0.5,), mask=False)
    samples, _ = prepare_samples(lm, rconfig)
    return samples[: config.needles], rconfig


def _conditions(result: AtlasResult, policy: dict) -> list[dict]:
    """The causal check's conditions: policy.json's heads, then per budget the policy's, the most distant and random heads."""
    cfg = result.config
    distant = result.full()[f"distant_{cfg.policy_window}"]
    n_total = distant.size
    index = {layer: i for i, layer in enumerate(result.layers)}
    exact = [(index[layer], h) for layer, h in policy["windowed"]]
    out = [{"condition": "policy.json", "seed": 0, "budget": len(exact) / n_total, "heads": exact}]
    for b in cfg.budgets:
        n = int(round(b * n_total))
        out.append({"condition": "policy", "seed": 0, "budget": b, "heads": select_heads(distant, n, "policy")})
        out.append({"condition": "distant", "seed": 0, "budget": b, "heads": select_heads(distant, n, "distant")})
        out += [
            {"condition": "random", "seed": s, "budget": b, "heads": select_heads(distant, n, "random", s)}
            for s in range(cfg.seeds)
        ]
    return out


def causal_check(lm: Model, result: AtlasResult, held: Sequence[Tensor], store: Store) -> AtlasResult:
    """Window each condition's heads on the held-out windows: loss change and needle recall."""
    from interp.experiments.retrieval.traces import needle_recall
    from interp.hooks import window_attention

    cfg = result.config
    policy = result.policy()
    if cfg.policy_file is not None:
        policy = read_policy(cfg.policy_file, lm)
        if (policy.get("window"), policy.get("sinks")) != (cfg.policy_window, cfg.sinks):
            raise InterpError(
                f"the policy {cfg.policy_file} keeps {policy.get('sinks')} sinks and a window of {policy.get('window')}, "
                f"this run {cfg.sinks} and {cfg.policy_window}: pass --sinks {policy.get('sinks')} --window {policy.get('window')}"
            )
    samples, rconfig = _needle_samples(lm, cfg)
    conditions = _conditions(result, policy)

    def measure(heads: Sequence[tuple[int, int]]) -> dict:
        edits = [window_attention(result.layers[i], h, cfg.policy_window, cfg.sinks) for i, h in heads]
        loss = float(np.mean([window_loss(lm, ids, cfg.loss_tokens, edits) for ids in held]))
        recall = float(np.mean([needle_recall(lm, s, rconfig, edits)[0] for s in samples])) if samples else float("nan")
        return {"loss": loss, "recall": None if math.isnan(recall) else recall}

    units = {"base": []} | {f"{c['condition']}-{c['budget']:.4f}-{c['seed']}": c["heads"] for c in conditions}
    settings = {**cfg.settings(), **store.notes, "model": lm.name, "policy": policy}
    done = store.map(
        list(units), lambda key: measure(units[key]), settings=settings, what="atlas: causal check", log="causal.jsonl"
    )
    base = done["base"]
    rows = []
    for c, key in zip(conditions, list(units)[1:]):
        rec = done[key]
        saved = kv_saved(
            c["heads"],
            len(result.layers),
            result.kv_map,
            cfg.length,
            cfg.policy_window,
            cfg.sinks,
            result.layer_windows,
        )
        rows.append({
            "condition": c["condition"], "seed": c["seed"], "budget": round(c["budget"], 4), "n_heads": len(c["heads"]),
            "kv_saved": round(saved, 6), "delta_loss": rec["loss"] - base["loss"],
            "recall": float("nan") if rec["recall"] is None else rec["recall"],
        })  # fmt: skip
    base_recall = float("nan") if base["recall"] is None else base["recall"]
    return with_causal(result, rows, base["loss"], base_recall)


def run(lm: Model, config: AtlasConfig = AtlasConfig(), store: Optional[Store] = None) -> AtlasResult:
    """The head atlas of ``lm``: profiles, kinds, the policy and (with held-out texts) its causal check.

    Raises:
        InterpError: bad texts or lengths (see `prepare_windows`), layers out of range, a causal
            check on a subset of layers.
    """
    from interp.hooks import check_layers

    store = store or Store()
    layers = check_layers(lm, config.layers)
    if config.causal_texts and len(layers) != lm.arch.n_layers:
        raise InterpError("the causal check windows heads of every layer: drop --layers or pass --causal-texts 0")
    if config.policy_file is not None:
        read_policy(config.policy_file, lm)  # another model's policy: refused before any work
        if not config.causal_texts:
            raise InterpError("--policy is what the causal check windows: pass --causal-texts 1 or more")
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
        result = causal_check(lm, result, held, store)
    from interp.distributed import world

    if world().main:
        store.write_json("policy", result.policy())
    return result


def read_policy(path: str | Path, lm: Model) -> dict:
    """A policy.json written by `interp atlas`, checked against ``lm``.

    Raises:
        InterpError: unreadable, or written for another model (name, layers or heads differ).
    """
    try:
        policy = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InterpError(f"cannot read the policy file {path}: {err}") from None
    if (
        policy.get("model") != lm.name
        or policy.get("n_layers") != lm.arch.n_layers
        or policy.get("n_heads") != lm.arch.n_heads
    ):
        raise InterpError(
            f"the policy {path} was written for {policy.get('model')} ({policy.get('n_layers')} layers x "
            f"{policy.get('n_heads')} heads), not {lm.name} ({lm.arch.n_layers} x {lm.arch.n_heads}): run interp atlas on this model"
        )
    return policy


def describe(result: AtlasResult) -> str:
    """The finding: the kinds, the policy's savings and, with the causal check, the share of heads that can be windowed."""
    s = result.summary()
    kinds = ", ".join(f"{n} {k}" for k, n in s["kinds"].items())
    cfg = result.config
    text = (
        f"Over {s['n_texts']} texts of {cfg.length} tokens, the {len(result.layers) * result.n_heads} heads are {kinds} "
        f"(at the full length; sink mass >= {cfg.sink_min}, previous-token mass >= {cfg.prev_min}, distant mass beyond "
        f"{cfg.sinks} sinks and {cfg.policy_window} tokens <= {cfg.distant_max}). The policy windows "
        f"{s['windowed_heads']} heads, saving {s['kv_saved']:.1%} of the KV cache at {cfg.length} tokens."
    )
    if result.causal:
        share = result.windowable_share()
        text += (
            f" Causal check on held-out text: up to {share:.0%} of the heads (the least distant mass first) can be "
            f"windowed with a loss change under {cfg.loss_tolerance} nats/token"
        )
        rand = [r for r in result.causal if r["condition"] == "random"]
        pol = [r for r in result.causal if r["condition"] == "policy"]
        if rand and pol:
            text += f" (mean change {np.mean([r['delta_loss'] for r in pol]):+.3f} vs {np.mean([r['delta_loss'] for r in rand]):+.3f} for random heads)"
        text += "."
    return text


def tables(result: AtlasResult) -> dict[str, Any]:
    out = {"heads": result.to_dataframe(), "profiles": result.profiles_dataframe()}
    if result.causal:
        out["causal"] = result.causal_dataframe()
    return out


def figures(result: AtlasResult) -> dict[str, Any]:
    from interp.plots.atlas import causal_figure

    return {"causal": causal_figure(result)} if result.causal else {}


def pages(result: AtlasResult) -> dict[str, str]:
    from interp.plots.atlas import atlas_page

    return {"atlas": atlas_page(result)}


def record(result: AtlasResult) -> dict:
    """policy.json's content also in run.json (``policy``)."""
    return {"policy": result.policy()}


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
    budgets: str = typer.Option("0.25,0.5,0.75", "--budgets", help="Shares of heads windowed in the causal sweep."),
    seeds: int = typer.Option(3, "--seeds", help="Random head sets per budget."),
    needles: int = typer.Option(2, "--needles", help="Needle samples for recall at --length (0: none)."),
    policy: Optional[Path] = typer.Option(
        None,
        "--policy",
        help="A policy.json of an earlier interp atlas on this model: the causal check windows its heads (default: this run's policy).",
    ),
    layers: Optional[str] = flags.layers_option(),
    backend: str = flags.backend_option(),
    out: Path = flags.out_option("runs/atlas"),
    fresh: bool = flags.fresh_option(),
) -> None:
    """Every head's use of a long context (the head atlas) and a KV-cache head policy checked
    causally; writes heads.csv, profiles.csv, policy.json, causal.csv, atlas.html, causal.html and run.json into OUT."""
    try:
        shares = tuple(float(x) for x in budgets.split(",") if x.strip())
    except ValueError:
        raise InterpError(f"--budgets takes comma-separated shares such as 0.25,0.5, got {budgets!r}") from None
    config = AtlasConfig(
        texts=read_texts(texts) if texts is not None else None, length=length, max_texts=max_texts, sinks=sinks,
        windows=parse_ints(windows, "--windows"), window=window, n_bins=bins, distant_max=distant_max,
        causal_texts=causal_texts, budgets=shares, seeds=seeds, needles=needles, layers=flags.parse_layers(layers),
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
    },
    True: {
        "length": 256,
        "windows": (32, 64),
        "max_texts": 1,
        "budgets": (0.5,),
        "seeds": 1,
        "needles": 0,
        "loss_tokens": 128,
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
    report=InReport(report_sizes(AtlasConfig, _REPORT_SIZES), order=80),
    quick=_REPORT_SIZES[True],
)
