"""The options every analysis command shares, added in one place so no command can miss one.

`with_common_options` wraps an experiment's typer command (``Experiment.cli``) with the options
of `COMMON` that its own signature lacks: ``--progress/--no-progress``, ``--image png,svg,pdf``
and, on ``score``, ``patch`` and ``atlas`` commands (`takes_quick`), ``--quick``. The CLI
registers every registry command through it, so a new command gets them with no edit; its own
flags (``--model``, ``--out``, ``--fresh``) come from `interp.experiments.flags` and
``tests/unit/test_cli_options.py`` checks that every command has the whole set.

The wrapper parses the options before the command body runs (a bad ``--image`` or a missing
Chromium is one `InterpError` line before any model loads) and holds them as a `Shared` (a
context variable, set for the command's call only) that `interp.experiments.execute` reads
(`shared`). ``--quick`` replaces the
config's fields named in ``Experiment.quick`` (the small sizes the report runs the experiment
at) except those whose flag was given on the command line: ``--quick --n 8`` keeps 8.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional

import typer

__all__ = ["COMMON", "Shared", "shared", "takes_quick", "with_common_options", "apply_quick"]

# typer hands a command its context for a parameter of click's Context class; it passes that
# class itself (typer.Context's base), so the parameter is annotated with it.
_CONTEXT = typer.Context.__mro__[1]
COMMON = ("--model", "--out", "--fresh", "--progress", "--image")  # every analysis command has these


@dataclass(frozen=True)
class Shared:
    """The shared options of one command run.

    Attributes:
        progress: show progress bars (``--progress/--no-progress``).
        images: picture formats written beside each figure's HTML (``--image``; () = HTML only).
        quick: run at the report's small sizes (``--quick``).
        given: the command's parameters given on the command line (they win over ``--quick``).
    """

    progress: bool = True
    images: tuple[str, ...] = ()
    quick: bool = False
    given: frozenset[str] = frozenset()


_SHARED: contextvars.ContextVar[Optional[Shared]] = contextvars.ContextVar("interp_shared_options", default=None)


def shared() -> Shared:
    """The shared options of the running command (defaults outside the CLI, e.g. in a notebook)."""
    return _SHARED.get() or Shared()


def takes_quick(command: tuple[str, str]) -> bool:
    """Whether the command has ``--quick``: every ``score`` and ``patch`` command and ``atlas``."""
    return command[0] in ("score", "patch") or command == ("app", "atlas")


def _added(names: set[str], quick: bool) -> list[inspect.Parameter]:
    """The shared parameters a command's own signature lacks."""
    kw = inspect.Parameter.KEYWORD_ONLY
    out = []
    if "progress" not in names:
        option = typer.Option(True, "--progress/--no-progress", help="Show progress bars.")
        out.append(inspect.Parameter("progress", kw, default=option, annotation=bool))
    option = typer.Option(
        None,
        "--image",
        help="Also write each figure as PNG, SVG and/or PDF beside its HTML, e.g. --image png,svg,pdf "
        "(plotly's static export: kaleido and a Chromium) (default: HTML only).",
    )
    out.append(inspect.Parameter("image", kw, default=option, annotation=Optional[str]))
    if quick:
        option = typer.Option(
            False, "--quick", help="The small sizes the report runs this at (a flag you give still wins)."
        )
        out.append(inspect.Parameter("quick", kw, default=option, annotation=bool))
    return out


def with_common_options(cli: Callable[..., Any], command: tuple[str, str]) -> Callable[..., Any]:
    """``cli`` with the shared options its signature lacks (see the module docstring).

    Raises (when called):
        InterpError: ``--image`` names an unknown format, or no image backend works here.
    """
    from interp.plots.export import image_backend_problem, parse_image_formats

    own = inspect.signature(cli, eval_str=True)
    added = _added(set(own.parameters), takes_quick(command))
    names = {p.name for p in added}

    @functools.wraps(cli)
    def command_fn(*args: Any, interp_ctx: Any, **kwargs: Any) -> Any:
        images = parse_image_formats(kwargs.pop("image", None) if "image" in names else None)
        if images:
            problem = image_backend_problem()
            if problem is not None:
                from interp.errors import InterpError

                raise InterpError(f"--image {','.join(images)}: {problem}")
        progress = kwargs.pop("progress") if "progress" in names else kwargs.get("progress", True)
        quick = kwargs.pop("quick") if "quick" in names else False
        sources = {n: interp_ctx.get_parameter_source(n) for n in interp_ctx.params}
        given = frozenset(n for n, source in sources.items() if getattr(source, "name", "") == "COMMANDLINE")
        token = _SHARED.set(Shared(progress=bool(progress), images=images, quick=bool(quick), given=given))
        try:
            return cli(*args, **kwargs)
        finally:
            _SHARED.reset(token)

    context = inspect.Parameter("interp_ctx", inspect.Parameter.KEYWORD_ONLY, annotation=_CONTEXT)
    params = list(own.parameters.values()) + added + [context]
    command_fn.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
    command_fn.__annotations__ = {p.name: p.annotation for p in params}
    return command_fn


def apply_quick(config: Any, quick: dict[str, Any], given: frozenset[str] = frozenset()) -> Any:
    """``config`` with the fields of ``quick`` that it has and that were not ``given`` replaced
    (the replaced config is validated again as it is built)."""
    fields = {f.name for f in dataclasses.fields(config)}
    changes = {k: v for k, v in quick.items() if k in fields and k not in given}
    return dataclasses.replace(config, **changes) if changes else config
