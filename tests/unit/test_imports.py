"""The import structure of `interp`: no import circles, imports only down the declared layers, no
experiment importing another, no private names taken across packages.

The graph is read statically (`ast`, no import runs): an edge A -> B for every module-level
``import B`` / ``from B import x`` in A (statements in the module body, also under ``if`` / ``try``
and in class bodies; not inside functions, which run later). ``from P import x`` where ``P.x`` is
a module is an edge to ``P.x``; otherwise to ``P``. A second graph adds the imports inside
functions, so a circle deferred into a function body is found too. Each check is first shown to
fire on a planted package, so a pass means something.

The layers (`LAYERS`, lowest first; a module may import its own layer and the ones below, never
one above; imports under ``if TYPE_CHECKING:`` are annotations and do not count):

0. ``errors``, ``protocols``, ``config``, ``digest``: no interp imports (protocols name the
   hooks' types for annotations only).
1. ``kernels``, ``hooks``, ``datasets``: statistics, instrumentation, inputs.
2. ``analyses``: pure functions over statistics; never a model, a run folder or a launcher.
3. ``models`` and its loading (``loading``, ``loaded``, ``_embedded``, ``_gguf``, ``_bridge``,
   ``_identity``), ``runs`` (``_runmeta``, ``_runlog``): weights into memory, run folders, resume logs.
4. ``distributed``: ranks, logs, the launch options (`rank_model` loads a rank's model).
5. ``plots``: figures from results (and the atomic writes of ``runs``).
6. ``experiments``: each analysis joined to a model. One experiment (``interp.experiments.<name>``)
   never imports another: what several share lives in the shared modules (``_base``, ``flags``,
   ``options``, a private module that is no experiment's such as ``_needles``), in a lower layer,
   or comes through the registry; ``_<name>_<part>`` modules are experiment ``<name>``'s.
7. ``report``, ``commands``, ``cli``, ``__main__`` and the package itself (``interp``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import interp

ROOT = Path(interp.__file__).resolve().parent


def _modules(root: Path, package: str) -> dict[str, Path]:
    """Module name -> file for every ``.py`` under ``root`` (a package named ``package``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join([package, *parts])] = path
    return out


def _is_type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``): imports for annotations only."""
    test = getattr(node, "test", None) if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _typing_only(tree: ast.AST) -> set[int]:
    """ids of the import statements inside ``if TYPE_CHECKING:`` blocks."""
    return {
        id(inner)
        for node in ast.walk(tree)
        if _is_type_checking(node)
        for stmt in node.body
        for inner in ast.walk(stmt)
        if isinstance(inner, (ast.Import, ast.ImportFrom))
    }


def _top_level(body: list[ast.stmt]):
    """Import statements that run when the module is imported (not those inside functions)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    yield from _top_level([n for n in inner if isinstance(n, ast.AST)])


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(
    root: Path, package: str, *, everywhere: bool = False, typing: bool = True
) -> dict[str, set[tuple[str, str]]]:
    """``{module: {(imported module, name or "")}}`` inside ``package`` (module-level imports, or
    every import with ``everywhere``; without ``typing``, not those under ``if TYPE_CHECKING:``)."""
    modules = _modules(root, package)
    graph: dict[str, set[tuple[str, str]]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = (
            [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
            if everywhere
            else _top_level(tree.body)
        )
        edges: set[tuple[str, str]] = set()
        skip = set() if typing else _typing_only(tree)
        for node in nodes:
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                edges.update((a.name, "") for a in node.names if a.name in modules)
                continue
            target = _resolve(name, path.name == "__init__.py", node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:
                    edges.add((sub, ""))
                elif target in modules:
                    edges.add((target, alias.name))
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[tuple[str, str]]]) -> list[str]:
    """One import circle as [a, b, ..., a], or [] when there is none (depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt, _ in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def _area(module: str, packages: set[str], layers: tuple[tuple[str, ...], ...] = ()) -> str:
    """Where a module's private names may be used: its subpackage ``interp.<sub>``; for a
    top-level module, the top-level modules of its layer (``layers``; each alone when in none)."""
    parts = module.split(".")
    top = ".".join(parts[:2])
    if top in packages or len(parts) < 2:
        return top
    return next((f"layer {i}" for i, names in enumerate(layers) if parts[1] in names), top)


def private_crossings(graph: dict[str, set[tuple[str, str]]], layers: tuple[tuple[str, ...], ...] = ()) -> list[str]:
    """Imports of a private module or name (``_x``) of another package, or of a top-level module
    of another layer: "a -> b.name"."""
    packages = {m for m in graph if any(other.startswith(m + ".") for other in graph)}
    out = []
    for module, edges in graph.items():
        for target, name in edges:
            area = _area(target, packages, layers)
            if area == _area(module, packages, layers):
                continue
            inner = target.split(".")[2:] if area.startswith("layer ") else target[len(area) :].split(".")[1:]
            if any(p.startswith("_") and p != "__init__" for p in inner) or (
                name.startswith("_") and not name.startswith("__")
            ):
                out.append(f"{module} -> {target}{'.' + name if name else ''}")
    return sorted(out)


LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "protocols", "config", "digest"),
    ("kernels", "hooks", "datasets"),
    ("analyses",),
    ("models", "loading", "loaded", "_embedded", "_gguf", "_bridge", "_identity", "runs", "_runmeta", "_runlog"),
    ("distributed",),
    ("plots",),
    ("experiments",),
    ("report", "commands", "cli", "__main__", ""),  # "": the package itself (interp/__init__.py)
)
SHARED_EXPERIMENT_MODULES = ("_base", "flags", "options")  # what every experiment may import


def _top(module: str) -> str:
    """The top-level module or package below the root: ``interp.hooks.edits`` -> ``hooks``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def upward_imports(graph: dict[str, set[tuple[str, str]]], layers=LAYERS) -> list[str]:
    """Imports of a higher layer than the importer's ("a -> b"), and modules in no layer
    ("a: in no layer"). The package itself is no target: importing ``interp.x`` has run it already."""
    level = {name: i for i, names in enumerate(layers) for name in names}
    out = []
    for module, edges in graph.items():
        if _top(module) not in level:
            out.append(f"{module}: in no layer")
            continue
        for target, _ in edges:
            if _top(target) and level.get(_top(target), -1) > level[_top(module)]:
                out.append(f"{module} -> {target}")
    return sorted(set(out))


def sideways_experiments(
    graph: dict[str, set[tuple[str, str]]], package: str = "experiments", shared=SHARED_EXPERIMENT_MODULES
) -> list[str]:
    """Imports from one experiment (``<root>.experiments.<name>...``) of another ("a -> b").

    The shared modules (``shared``, and private modules ``_x`` that are no experiment's) belong to
    none; a private module ``_<name>_<part>`` belongs to experiment ``<name>`` (e.g. ``_atlas_policy``).
    """
    names = {m.split(".")[2] for m in graph if len(m.split(".")) >= 3 and m.split(".")[1] == package}

    def owner(module: str) -> str | None:
        parts = module.split(".")
        if len(parts) < 3 or parts[1] != package or parts[2] in shared:
            return None
        own = parts[2]
        if own.startswith("_"):
            return next((n for n in names if not n.startswith("_") and own.startswith(f"_{n}_")), None)
        return own

    out = []
    for module, edges in graph.items():
        mine = owner(module)
        if mine is None:
            continue
        for target, _ in edges:
            theirs = owner(target)
            if theirs is not None and theirs != mine:
                out.append(f"{module} -> {target}")
    return sorted(set(out))


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_planted_circle_is_found(tmp_path):
    root = _plant(tmp_path, {
        "__init__.py": "",
        "a/__init__.py": "",
        "a/x.py": "import os\nfrom pkg.b.y import f\n",
        "b/__init__.py": "",
        "b/y.py": "from pkg.c import g\ndef f():\n    from pkg.a import x  # inside a function: no edge\n",
        "c.py": "if True:\n    from .a import x\ng = 1\n",  # relative, under an if
    })  # fmt: skip
    cycle = find_cycle(import_graph(root, "pkg"))
    assert cycle[0] == cycle[-1] and set(cycle) == {"pkg.a.x", "pkg.b.y", "pkg.c"}
    root_ok = _plant(
        tmp_path / "ok",
        {"__init__.py": "", "a.py": "from pkg.b import f\n", "b.py": "def f():\n    from pkg import a\n"},
    )
    assert find_cycle(import_graph(root_ok, "pkg")) == []
    assert find_cycle(import_graph(root_ok, "pkg", everywhere=True)) == ["pkg.a", "pkg.b", "pkg.a"]


def test_planted_private_import_is_found(tmp_path):
    root = _plant(tmp_path, {
        "__init__.py": "",
        "a/__init__.py": "",
        "a/_cfg.py": "class Config: ...\n",
        "a/helpers.py": "_secret = 1\n",
        "a/own.py": "from pkg.a._cfg import Config\n",  # inside its own package: fine
        "b/__init__.py": "",
        "b/user.py": "from pkg.a._cfg import Config\nfrom pkg.a.helpers import _secret\n",
    })  # fmt: skip
    assert private_crossings(import_graph(root, "pkg")) == [
        "pkg.b.user -> pkg.a._cfg.Config",
        "pkg.b.user -> pkg.a.helpers._secret",
    ]


def test_interp_has_no_import_circle():
    cycle = find_cycle(import_graph(ROOT, "interp"))
    assert cycle == [], "import circle: " + " -> ".join(cycle)


def test_interp_has_no_circle_through_deferred_imports():
    """Imports inside functions too: a circle hidden in a function is still two modules that
    need each other (e.g. a result type and the helper that ranks it)."""
    cycle = find_cycle(import_graph(ROOT, "interp", everywhere=True))
    assert cycle == [], "import circle: " + " -> ".join(cycle)


def test_interp_takes_no_private_name_across_packages():
    assert private_crossings(import_graph(ROOT, "interp", everywhere=True), LAYERS) == []


def test_planted_private_name_across_top_level_modules_is_found(tmp_path):
    root = _plant(tmp_path, {
        "__init__.py": "",
        "models.py": "_ALIASES = {None}\n",
        "_impl.py": "def _helper(): ...\n",
        "loading.py": "from pkg.models import _ALIASES\nfrom pkg._impl import _helper\n",  # same layer: fine
        "report.py": "def f():\n    from pkg.models import _ALIASES\n",  # another layer: not fine
    })  # fmt: skip
    layers = (("models", "loading", "_impl"), ("report",))
    assert private_crossings(import_graph(root, "pkg", everywhere=True), layers) == [
        "pkg.report -> pkg.models._ALIASES"
    ]


def test_planted_upward_and_sideways_imports_are_found(tmp_path):
    root = _plant(tmp_path, {
        "__init__.py": "",
        "errors.py": "",
        "kernels/__init__.py": "from pkg import errors\n",  # down: fine
        "analyses/__init__.py": "def f():\n    from pkg.experiments import a  # up, even deferred\n",
        "hooks.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.analyses import f\n",
        "experiments/__init__.py": "",
        "experiments/_base.py": "",
        "experiments/a.py": "from pkg.experiments import _base\nfrom pkg.experiments.b.run import g\n",
        "experiments/b/__init__.py": "",
        "experiments/b/run.py": "from pkg.experiments.b import helpers\ng = 1\n",  # its own package: fine
        "experiments/b/helpers.py": "",
        "experiments/_shared.py": "",  # no experiment's: shared
        "experiments/_b_part.py": "from pkg.experiments import _shared\nfrom pkg.experiments.b import helpers\n",  # b's own
        "experiments/c.py": "from pkg.experiments import _shared, _b_part\n",  # b's private part: sideways
        "stray.py": "",
    })  # fmt: skip
    layers = (("errors",), ("kernels", "hooks"), ("analyses",), ("experiments",), ("",))
    graph = import_graph(root, "pkg", everywhere=True, typing=False)
    assert upward_imports(graph, layers) == ["pkg.analyses -> pkg.experiments.a", "pkg.stray: in no layer"]
    assert "pkg.hooks -> pkg.analyses" in upward_imports(import_graph(root, "pkg", everywhere=True), layers)
    assert sideways_experiments(graph, shared=("_base",)) == [
        "pkg.experiments.a -> pkg.experiments.b.run",
        "pkg.experiments.c -> pkg.experiments._b_part",
    ]


def test_interp_imports_only_down_its_layers():
    bad = upward_imports(import_graph(ROOT, "interp", everywhere=True, typing=False))
    assert bad == [], "imports against the layers (tests/unit/test_imports.py LAYERS):\n" + "\n".join(bad)


def test_no_experiment_imports_another():
    bad = sideways_experiments(import_graph(ROOT, "interp", everywhere=True))
    assert bad == [], "an experiment imports another (share it through a lower layer):\n" + "\n".join(bad)
