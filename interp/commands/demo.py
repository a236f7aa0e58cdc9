"""`interp info`: load a model, show its next-token guesses and the captured per-layer shapes.

A quick check that loading and hooks work on a machine (the full demo is `interp report`).
"""

from __future__ import annotations

from typing import Optional

import typer

from interp.experiments import flags

__all__ = ["register", "info"]


def info(
    model: Optional[str] = flags.model_option(),
    prompt: str = typer.Option("The capital of France is", "--prompt", help="Text to run."),
    top: int = typer.Option(5, "--top", min=1, max=50, help="How many next tokens to show."),
) -> None:
    """Load MODEL, print its top next tokens for PROMPT and the shapes captured at each site
    (`interp --model-backend tl info` for the TransformerLens bridge)."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from interp.distributed import rank_model
    from interp.hooks import capture

    console = Console()
    lm = rank_model(model, flags.launch())  # --dtype, --attn-implementation, --device-map, ...
    a = lm.arch
    console.print(
        f"[bold]{lm.name}[/] ({lm.backend}): {a.n_layers} layers, {a.n_heads} query heads, {a.n_kv_heads} kv heads, "
        f"d_head {a.d_head}, context {a.n_ctx}; attention: {lm.hf_model.config._attn_implementation}; "
        + (f"BOS {lm.decode([lm.bos_id])!r} before every text" if lm.bos_id is not None else "no BOS")
    )
    ids = lm.encode(prompt)
    with capture(lm) as cap:
        logits = lm.forward(ids)
    probs = torch.softmax(logits[0, -1].float(), -1)
    p, idx = probs.topk(top)
    table = Table(title=f"next token after {prompt!r}")
    table.add_column("rank")
    table.add_column("token")
    table.add_column("p", justify="right")
    for r, (pi, ii) in enumerate(zip(p.tolist(), idx.tolist()), 1):
        table.add_row(str(r), repr(lm.decode([ii])), f"{pi:.3f}")
    console.print(table)
    shapes = Table(title="captured sites (layer 0; every layer has the same shapes)")
    shapes.add_column("site")
    shapes.add_column("shape")
    for site in cap.keep:
        shapes.add_row(site, str(tuple(cap[site, 0].shape)))
    console.print(shapes)


def register(groups) -> None:
    groups["app"].command("info")(info)
