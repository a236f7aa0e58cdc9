"""Booting a transformer-lens ``TransformerBridge`` over a HF model, checked against the model itself."""

from __future__ import annotations

from typing import Any

import torch

from interp.errors import InterpError
from interp.protocols import Model


def _probe_ids(model: Any) -> torch.Tensor:
    vocab = int(model.get_input_embeddings().weight.shape[0])
    return (torch.arange(8) * 7 % vocab).view(1, -1).to(model.get_input_embeddings().weight.device)


def _boot_bridge(model: Any, tokenizer: Any, source: str) -> Any:
    """A transformer-lens ``TransformerBridge`` over ``model``, checked against the model's own logits.

    The bridge rewires the HF modules in place, so the check compares with logits taken before
    booting it. Raises InterpError when the bridge lacks the family or changes its numbers
    (seen with Gemma 3 in transformer-lens 4.x).
    """
    from transformer_lens.model_bridge import TransformerBridge

    family = model.config.model_type
    probe = _probe_ids(model)
    with torch.no_grad():
        want = model(probe).logits.float()
    try:
        bridge = TransformerBridge.boot_transformers(source, hf_model=model, tokenizer=tokenizer, device=model.device)
    except (ValueError, KeyError, NotImplementedError, AttributeError, RuntimeError) as err:
        raise InterpError(
            f"transformer-lens cannot bridge this {family} model ({type(err).__name__}: {str(err)[:300]}): "
            "use backend='hf'"
        ) from err
    with torch.no_grad():
        got = bridge(probe).float()
    err = float((got - want).abs().max())
    tol = (1e-3 if model.dtype == torch.float32 else 5e-2) * max(1.0, float(want.abs().max()))
    if not err <= tol:
        raise InterpError(
            f"transformer-lens's bridge does not reproduce this {family} model: its logits differ from the HF "
            f"model's by {err:.3g} on a probe input. Use backend='hf' (and reload the model: the bridge has "
            "rewired its modules in place)"
        )
    return bridge


def _check_bridge_hooks(lm: Model) -> None:
    """Fail now, not in an analysis, when the bridge does not fire every site's hook for this family."""
    from interp.hooks import SITES, capture

    try:
        with capture(lm, layers=[0], keep=SITES):
            lm.forward(_probe_ids(lm.hf_model))
    except InterpError as err:
        raise InterpError(
            f"transformer-lens's bridge does not expose every site for this {lm.arch.model_type} model ({err}): "
            "use backend='hf'"
        ) from err
