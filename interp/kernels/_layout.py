"""The axis order of q and k: the kernel's ``"bhtd"`` or TransformerLens's ``"bthd"``.

`attention_stats` and `attention_pattern` both call `to_bhtd` before `prepare`, so one check
decides for both whether the tensors can be the layout the caller named. Shapes alone cannot
always tell [batch, head, pos, d_head] from [batch, pos, head, d_head] (with as many kv heads as
heads and as many query as key positions both read fine), so the check refuses what cannot be
the named layout:

- kv heads that do not divide the heads, or more query positions than key positions (what a
  GQA tensor read in the wrong order gives);
- more kv heads than key positions when there are 16 or more of those "heads": a sequence of 16+
  tokens read as heads. (A real model with 16+ kv heads and a shorter input is refused too; give
  it at least as many tokens as kv heads.)
"""

from __future__ import annotations

from torch import Tensor

from interp.errors import InterpError

__all__ = ["LAYOUTS", "to_bhtd"]

LAYOUTS = {
    "bhtd": "[batch, head, pos, d_head]",
    "bthd": "[batch, pos, head, d_head] (TransformerLens's hook_q/hook_k)",
}
_MANY_HEADS = 16  # a "head" axis this long and longer than the positions is a sequence read as heads


def to_bhtd(q: Tensor, k: Tensor, layout: str) -> tuple[Tensor, Tensor]:
    """q [batch, head, query_pos, d_head] and k [batch, kv_head, key_pos, d_head] from ``layout``.

    Args:
        q: queries in ``layout`` (``"bthd"``: [batch, query_pos, head, d_head]).
        k: keys in ``layout``, not repeated over GQA groups.
        layout: ``"bhtd"`` (the kernel's own) or ``"bthd"`` (TransformerLens's).

    Returns:
        (q, k) as views in the kernel's layout (no copy).

    Raises:
        InterpError: an unknown layout, or shapes that cannot be ``layout`` (one line naming it).
    """
    if layout not in LAYOUTS:
        raise InterpError(f"layout must be 'bhtd' {LAYOUTS['bhtd']} or 'bthd' {LAYOUTS['bthd']}, got {layout!r}")
    if not (isinstance(q, Tensor) and isinstance(k, Tensor) and q.ndim == 4 and k.ndim == 4):
        return q, k  # prepare says what is wrong with them
    shapes = f"q {tuple(q.shape)} and k {tuple(k.shape)}"
    if layout == "bthd":
        q, k = q.transpose(1, 2), k.transpose(1, 2)
    heads, kv_heads, n_query, n_key = q.shape[1], k.shape[1], q.shape[2], k.shape[2]
    why = ""
    if kv_heads == 0 or heads % kv_heads:
        why = f"head={heads} is not a multiple of kv_head={kv_heads}"
    elif n_query > n_key:
        why = f"query_pos={n_query} > key_pos={n_key} (need 1 <= query_pos <= key_pos)"
    elif kv_heads > n_key and kv_heads >= _MANY_HEADS:
        why = f"more kv heads ({kv_heads}) than key positions ({n_key}): a sequence read as heads"
    if why:
        other = "bthd" if layout == "bhtd" else "bhtd"
        raise InterpError(
            f"{shapes} cannot be layout '{layout}' {LAYOUTS[layout]}: {why}; "
            f"if they are {LAYOUTS[other]}, pass layout='{other}'"
        )
    return q, k
