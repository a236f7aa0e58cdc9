"""The import structure of `interp`: no import circles, no private names taken across packages.

The graph is read statically (`ast`, no import runs): an edge A -> B for every module-level
``import B`` / ``from B import x`` in A (statements in the module body, also under ``if`` / ``try``
and in class bodies; not inside functions, which run later). ``from P import x`` where ``P.x`` is
a module is an edge to ``P.x``; otherwise to ``P``. A second graph adds the imports inside
functions, so a circle deferred into a function body is found too. Each check is first shown to
fire on a planted package, so a pass means something.
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


def import_graph(root: Path, package: str, *, everywhere: bool = False) -> dict[str, set[tuple[str, str]]]:
    """``{module: {(imported module, name or "")}}`` inside ``package`` (module-level imports, or
    every import with ``everywhere``)."""
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
        for node in nodes:
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


def _area(module: str, packages: set[str]) -> str:
    """The package a module belongs to: ``interp.<sub>`` for a subpackage, else ``interp``."""
    parts = module.split(".")
    return ".".join(parts[:2]) if ".".join(parts[:2]) in packages else parts[0]


def private_crossings(graph: dict[str, set[tuple[str, str]]]) -> list[str]:
    """Imports of a private module or name (``_x``) of another package: "a -> b.name"."""
    packages = {m for m in graph if any(other.startswith(m + ".") for other in graph)}
    out = []
    for module, edges in graph.items():
        for target, name in edges:
            area = _area(target, packages)
            if area == _area(module, packages):
                continue
            inner = target[len(area) :].split(".")[1:]  # below its package
            if any(p.startswith("_") and p != "__init__" for p in inner) or (
                name.startswith("_") and not name.startswith("__")
            ):
                out.append(f"{module} -> {target}{'.' + name if name else ''}")
    return sorted(out)


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
    assert private_crossings(import_graph(ROOT, "interp", everywhere=True)) == []
