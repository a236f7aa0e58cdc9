"""The `interp` command line: a thin typer layer over library calls.

Subcommands are defined in `interp.commands.*` and registered here. Every InterpError is
printed as one clear line with exit code 2 (bad input), never a traceback.
"""

from __future__ import annotations

import importlib
import signal
import sys
from typing import Optional

import typer

from interp.errors import InterpError

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False, no_args_is_help=True, rich_markup_mode=None, help="Mechanistic interpretability of attention."
)
score = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Score heads: retrieval, sinks, preplan, detectors, select-copy, qr-heads, influence.",
)
calibrate = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Training-free attention calibrations (ACT, ZeroTuning)."
)
patch = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Circuit patching on IOI and Colored Objects.")
app.add_typer(score, name="score")
app.add_typer(calibrate, name="calibrate")
app.add_typer(patch, name="patch")


def _print_version(value: Optional[bool]) -> None:
    """``--version``: print the installed version and exit."""
    if value:
        from interp import __version__

        typer.echo(f"interp {__version__}")
        raise typer.Exit()


@app.callback()
def _launch(
    engine: str = typer.Option(
        "ranks",
        "--engine",
        help="How units of work are run: 'ranks' (this process, or the ranks of torchrun / accelerate launch / srun) or 'ray' (Ray actors, one model each; pip install 'interp[ray]').",
    ),
    workers: Optional[int] = typer.Option(
        None, "--workers", help="With --engine ray: number of actors (default: one per CPU, or per GPU)."
    ),
    device_map: Optional[str] = typer.Option(
        None,
        "--device-map",
        help="Spread each rank's model over its devices (accelerate), e.g. auto; with several ranks per machine each rank gets its share of the GPUs.",
    ),
    max_memory: Optional[str] = typer.Option(
        None,
        "--max-memory",
        help="With --device-map: memory cap per device, e.g. 0=20GiB,1=20GiB,cpu=60GiB (GPU indices count within the rank's share).",
    ),
    dtype: Optional[str] = typer.Option(
        None,
        "--dtype",
        help="Model weights dtype: float32 (default), bfloat16 or float16; statistics are accumulated in float32 either way.",
    ),
    attn_implementation: Optional[str] = typer.Option(
        None,
        "--attn-implementation",
        help="Attention implementation to load the model with: sdpa, eager, flex_attention, ... (default: sdpa where the family has it, else eager).",
    ),
    model_backend: Optional[str] = typer.Option(
        None,
        "--model-backend",
        help="hf (default: hooks on the HF module) or tl (a TransformerLens TransformerBridge over it; slower, eager attention).",
    ),
    prepend_bos: Optional[bool] = typer.Option(
        None,
        "--prepend-bos/--no-prepend-bos",
        help="Put the tokenizer's BOS token before every text, or not (default: as the model's tokenizer does: Llama, Mistral and Gemma add one, SmolLM2 does not).",
    ),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="A failed check of a finding (the model does not do the task, too few samples, chance level, ...) is an error: exit code 3 once the outputs are written (for scripted runs).",
    ),
    version: Optional[bool] = typer.Option(
        None, "--version", is_eager=True, callback=_print_version, help="Print the version of interp and exit."
    ),
) -> None:
    """Mechanistic interpretability of attention. Launch options come before the command:
    `torchrun --nproc-per-node 2 -m interp --device-map auto score sinks ...`."""
    from typer.main import get_current_context  # the click context typer runs this invocation in

    from interp.distributed import Launch, LoadOptions, parse_max_memory

    load = LoadOptions(
        dtype=dtype, attn_implementation=attn_implementation, backend=model_backend, prepend_bos=prepend_bos
    )
    get_current_context().obj = Launch(  # the command reads it from its context (`interp.experiments.flags.launch`)
        engine=engine, workers=workers, device_map=device_map, max_memory=parse_max_memory(max_memory),
        strict=strict, load=load,
    )  # fmt: skip


_GROUPS = {"app": app, "score": score, "calibrate": calibrate, "patch": patch}
_COMMAND_MODULES = ("demo", "patching", "report")


def _register_experiments() -> None:
    from interp.experiments import registry
    from interp.experiments.options import with_common_options

    for exp in registry().values():  # each with the options every command shares (--progress, --image, --quick)
        group, name = exp.command
        _GROUPS[group].command(name)(with_common_options(exp.cli, exp.command))


_register_experiments()

for _name in _COMMAND_MODULES:
    try:
        _mod = importlib.import_module(f"interp.commands.{_name}")
    except ModuleNotFoundError as _err:
        if _err.name != f"interp.commands.{_name}":
            raise
        continue
    _mod.register(_GROUPS)


def _usage_line(err: typer.TyperException) -> str:
    """A usage error (typer's click) as one line, pointing at the command's ``--help``."""
    message = " ".join((err.format_message() if hasattr(err, "format_message") else str(err)).split())
    ctx = getattr(err, "ctx", None)
    return f"{message} (see: {ctx.command_path} --help)" if ctx is not None else message


_SIGTERM = {"received": False}  # set by `_terminate`: the interrupt main() sees came from SIGTERM


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (``kill``, a scheduler's time limit) stops a run as Ctrl-C does: finished work is kept."""
    _SIGTERM["received"] = True
    raise KeyboardInterrupt


def _on_sigterm() -> object:
    """Route SIGTERM to `_terminate` for this command; returns the handler to restore (None: not
    installed, e.g. outside the main thread)."""
    try:
        return signal.signal(signal.SIGTERM, _terminate)
    except (ValueError, OSError):  # not the main thread, or a platform without SIGTERM handlers
        return None


def main() -> None:
    """Console entry point: run the app, turning InterpError into a clear message and exit code 2
    (exit code 3: a check of a finding failed under ``--strict``; 130: Ctrl-C; 143: SIGTERM, which
    stops a run as Ctrl-C does and says what was kept)."""
    from interp.analyses.checks import ChecksFailed
    from interp.runs import forget_folders, interrupted_note

    _SIGTERM["received"] = False
    previous = _on_sigterm()
    try:
        code = app(standalone_mode=False)  # typer turns Ctrl-C into exit code 130 and returns it here
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and not isinstance(code, bool) and code:
            sys.exit(code)
    except ChecksFailed as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(3)
    except InterpError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        if _SIGTERM["received"]:
            typer.secho(f"terminated (SIGTERM): {interrupted_note()}", err=True)
            sys.exit(143)
        typer.secho(interrupted_note(), err=True)
        sys.exit(130)
    except typer.TyperException as err:  # usage errors (unknown command, a value of the wrong type): one line too
        if type(err).__name__ != "NoArgsIsHelpError":  # a group called bare has just printed its help
            typer.secho(f"error: {_usage_line(err)}", fg=typer.colors.RED, err=True)
        sys.exit(getattr(err, "exit_code", 2))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        forget_folders()


if __name__ == "__main__":
    main()
