"""Experiments: each analysis joined to a model, behind one protocol and one store.

Every module ``interp.experiments.<name>`` (not starting with ``_``) that defines ``EXPERIMENT``
(or a tuple ``EXPERIMENTS``) is found by `registry`; the CLI registers each one's command and the
report runs each one that has a report setting. Adding an analysis = ``interp/analyses/<name>.py``
(pure) + ``interp/experiments/<name>.py`` (runner, command, tables, figures), plus tests.

In a notebook::

    from interp.experiments import Store, registry
    result = registry()["sinks"].run(lm, SinkConfig(length=128), Store())
"""

from __future__ import annotations

import importlib
import pkgutil

from interp.experiments._base import Experiment, InReport, Store, execute, finding, report_sizes

__all__ = ["Experiment", "InReport", "Store", "execute", "registry", "report_sizes", "finding"]

_NOT_EXPERIMENTS = frozenset({"flags"})


def registry() -> dict[str, Experiment]:
    """Every experiment by name, in report order (then by name).

    Raises:
        InterpError: two experiments with one name or one command.
    """
    from interp.errors import InterpError

    found: list[Experiment] = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _NOT_EXPERIMENTS:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.extend(getattr(module, "EXPERIMENTS", ()))
        if hasattr(module, "EXPERIMENT"):
            found.append(module.EXPERIMENT)
    out: dict[str, Experiment] = {}
    commands: set[tuple[str, str]] = set()
    for exp in sorted(found, key=lambda e: (e.report.order if e.report is not None else 100, e.name)):
        if exp.name in out or exp.command in commands:
            raise InterpError(f"two experiments are named {exp.name!r} or run as {' '.join(exp.command)!r}")
        out[exp.name] = exp
        commands.add(exp.command)
    return out
