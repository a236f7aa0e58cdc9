"""`interp score influence`: AttentionInfluence (arXiv 2505.07293), the loss change of each text
when the top retrieval heads are made uniform.

The runner encodes each text (its first ``max_tokens`` tokens) and runs it twice, plainly and
with `interp.hooks.uniform_attention` on the chosen heads (scoped by `interp.hooks.intervene`);
`interp.analyses.influence` turns the two losses into AI. Texts are the units of work: shared
over ranks, resumed from ``samples.jsonl``. In the report the heads are the top retrieval heads
of the retrieval stage, or else the top induction heads of the head detectors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import typer
from jaxtyping import Int
from torch import Tensor

from interp.analyses.checks import check_all, failed
from interp.analyses.influence import InfluenceConfig, InfluenceResult, combine, heads_to_mask, text_loss
from interp.datasets.head_lists import heads_checks_passed, read_heads
from interp.datasets.texts import default_texts, read_texts, texts_digest
from interp.errors import InterpError
from interp.experiments import flags
from interp.experiments._base import Experiment, InReport, Store, execute
from interp.models import Model

__all__ = ["EXPERIMENT", "losses", "run"]


def losses(
    lm: Model, ids_list: Sequence[Int[Tensor, "1 _pos"]], heads: Sequence[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """(L_base, L_masked) per token sequence [1, T]: two forward passes each."""
    from interp.hooks import intervene, uniform_attention

    edits = [uniform_attention(layer, head) for layer, head in heads]
    base, masked = [], []
    for ids in ids_list:
        lm.check_length(ids.shape[1])
        base.append(text_loss(lm.forward(ids), ids))
        with intervene(lm, edits):
            masked.append(text_loss(lm.forward(ids), ids))
    return np.array(base), np.array(masked)


def run(lm: Model, config: InfluenceConfig = InfluenceConfig(), store: Optional[Store] = None) -> InfluenceResult:
    """AttentionInfluence of each of the config's texts with its heads made uniform.

    Raises:
        InterpError: a head out of range, a text with fewer than 2 tokens, one that does not fit.
    """
    store = store or Store()
    heads = heads_to_mask(config, lm.arch.n_layers, lm.arch.n_heads)
    lm.arch.check_heads(heads, hint=f" ({lm.name}); was heads.csv written for another model?")
    texts = default_texts() if config.texts is None else config.texts
    texts = texts[: config.max_texts] if config.max_texts else texts
    by_key: dict[str, Tensor] = {}
    for n, text in enumerate(texts):
        ids = lm.encode(text, check=False)
        ids = ids[:, : config.max_tokens] if config.max_tokens else ids
        if ids.shape[1] < 2:
            raise InterpError(f"text {n + 1} has {ids.shape[1]} token: the loss needs at least 2 tokens")
        by_key[f"text-{n:05d}"] = ids
    store.note(texts_sha256=texts_digest(config.texts))
    settings = {**config.settings(), **store.notes, "masked": [f"{l}.{h}" for l, h in heads], "model": lm.name}

    def score(key: str) -> dict:
        ids = by_key[key]
        (base,), (masked,) = losses(lm, [ids], heads)
        return {"n_tokens": int(ids.shape[1]), "base_loss": float(base), "masked_loss": float(masked)}

    done = store.map(list(by_key), score, settings=settings, what="influence: texts")
    return combine(config, lm.name, heads, texts, [done[key] for key in by_key])


def describe(result: InfluenceResult) -> str:
    """The finding: which heads were made uniform and the range of AI over the texts."""
    s = result.summary()
    return (
        f"Making the {len(result.heads)} {result.config.heads_name} uniform ({', '.join(s['heads'])}) raises the loss "
        f"of {s['n_texts']} texts by AI = (L_masked - L_base) / L_base of {s['min_influence']:.3f} to "
        f"{s['max_influence']:.3f} (mean {s['mean_influence']:.3f}); highest for '{s['top_text']}'."
    )


def tables(result: InfluenceResult) -> dict[str, Any]:
    return {"texts": result.to_dataframe()}


def figures(result: InfluenceResult) -> dict[str, Any]:
    from interp.plots.heads import influence_figure

    return {"influence": influence_figure(result)}


def cli(
    heads: str = typer.Option(
        ..., "--heads", help="A retrieval run's heads.csv (top --k by score), or LAYER.HEAD pairs like 18.6,23.2."
    ),
    texts: Path = typer.Option(..., "--texts", help="UTF-8 file of the texts to rank, separated by lines '---'."),
    model: Optional[str] = flags.model_option(),
    k: Optional[int] = typer.Option(None, "--k", help="Heads taken from heads.csv (default: 5% of the model's heads)."),
    max_tokens: int = typer.Option(512, "--max-tokens", help="Tokens of each text scored."),
    out: Path = flags.out_option("runs/influence"),
    fresh: bool = flags.fresh_option(),
) -> None:
    """AttentionInfluence (arXiv 2505.07293): AI = (L_masked - L_base) / L_base per text with the top
    retrieval heads made uniform; ranks your texts. Writes texts.csv, run.json and influence.html into OUT."""
    text_set = read_texts(texts)
    from_file = heads.endswith(".csv") or Path(heads).is_file()
    flags.only_with("--k", k is not None, "a heads.csv in --heads (LAYER.HEAD pairs are masked as given)", from_file)
    if from_file:
        listed = read_heads(heads)
        flags.check_range(k, "--k", 1, len(listed), f"{heads} lists {len(listed)} heads")
        config = InfluenceConfig(
            heads=listed, k=k, share=None if k is not None else 0.05, texts=text_set, max_tokens=max_tokens,
            heads_name=f"top heads of {heads}", heads_checked=heads_checks_passed(heads),
        )  # fmt: skip
    else:
        config = InfluenceConfig(heads=flags.parse_heads(heads), texts=text_set, max_tokens=max_tokens)
    execute(
        EXPERIMENT,
        config,
        launch=flags.launch(),
        model=model,
        out=out,
        fresh=fresh,
        notes={"heads_source": heads, "texts_file": str(texts)},
    )


_REPORT_SIZES = {False: {"n_texts": 4, "max_tokens": 128, "k": 8}, True: {"n_texts": 2, "max_tokens": 48, "k": 4}}


def report_config(quick: bool, earlier: Mapping[str, Any]) -> InfluenceConfig:
    """The report's sizes (4 shipped texts of up to 128 tokens; quick: 2 of 48) and heads: the top
    ``k`` (8; quick: 4) retrieval heads of the retrieval stage that scored above 0, or else the
    top 5 induction heads of the head detectors, or else head 0 of the middle layer."""
    sizes = _REPORT_SIZES[quick]
    retrieval = earlier.get("retrieval")
    heads = [(int(l), int(h)) for l, h, v in retrieval.top(16) if v > 0][: sizes["k"]] if retrieval is not None else []
    name, source = "top retrieval heads", retrieval
    if not heads:  # no retrieval head scored (or no retrieval stage): use the induction heads
        found = earlier.get("heads")
        if found is not None and "induction" in found.kinds:
            heads = [(int(l), int(h)) for l, h, _ in found.top("induction", 5)]
        name, source = "top induction heads", found
    checks = check_all(source) if source is not None and heads else ()
    checked = not failed(checks) if checks else None  # None: a source that declares no checks
    return InfluenceConfig(
        heads=tuple(heads) or None, max_texts=sizes["n_texts"], max_tokens=sizes["max_tokens"], heads_name=name,
        heads_checked=checked,
    )  # fmt: skip


EXPERIMENT = Experiment(
    name="influence",
    title="AttentionInfluence",
    command=("score", "influence"),
    config=InfluenceConfig,
    run=run,
    tables=tables,
    figures=figures,
    describe=describe,
    cli=cli,
    report=InReport(report_config, order=80, uses=("retrieval", "heads")),
    quick={"max_texts": _REPORT_SIZES[True]["n_texts"], "max_tokens": _REPORT_SIZES[True]["max_tokens"]},
)
