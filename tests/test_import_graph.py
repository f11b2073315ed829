"""The package's import graph (issue #28, item 5): no circle among llara modules, function-local imports
counted too, and no module importing from a later stage.

Layers, lowest first: the top-level helpers (``llara.settings``, ``io``, ``errors``, ``text``, ``seeds``,
``runlog``, ``provenance``, ``cli_errors``, ``owned_folders``, ...) and ``llara.metrics``; then the stages
``data`` < ``seqrec`` < ``llm`` < ``evaluate`` < ``report``; ``llara.cli``, the entry point, above all. A module
may import from its own layer or a lower one. The one exception is :data:`UPWARD_ALLOWED`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
STAGES = ("data", "seqrec", "llm", "evaluate", "report")
ENTRY = "llara.cli"
# (importer, imported) pairs that run upward, each imported inside a function (never at import time):
# the config validation's cross-key rules look up the dataset registry (built-in sources, their item
# counts and pinnable files; llara.data.datasets.check_datasets), which belongs to the data stage.
UPWARD_ALLOWED = {("llara.settings", "llara.data.datasets"), ("llara.settings", "llara.data.sources")}


def modules(src: Path = SRC) -> dict[str, Path]:
    """Dotted name -> file of every module of the llara package (a package is its ``__init__``)."""
    out = {}
    for path in sorted((src / "llara").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(mods: Mapping[str, Path]) -> dict[tuple[str, str], bool]:
    """``{(importer, imported): at module level}`` over ``mods``, for every ``import`` / ``from ... import``
    anywhere in a file (inside functions too). ``from pkg import name`` counts as importing ``pkg.name``
    when that is a module, else ``pkg``; an edge imported both ways counts as module-level."""
    edges: dict[tuple[str, str], bool] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for target in targets:
                if target in mods and target != name:
                    edges[(name, target)] = edges.get((name, target), False) or id(node) in top_level
    return edges


def cycles(edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    graph: dict[str, list[str]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def layer(module: str) -> int:
    """0: top-level helpers and llara.metrics; 1..5: the stages in order; 6: the CLI entry point."""
    if module == ENTRY:
        return len(STAGES) + 1
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in STAGES:
        return STAGES.index(parts[1]) + 1
    return 0


@pytest.fixture(scope="module")
def edges() -> dict[tuple[str, str], bool]:
    return imports(modules())


def test_the_parser_sees_module_level_and_function_local_imports(edges):
    # not vacuous: known edges of both kinds are found
    assert edges[("llara.evaluate.aggregate", "llara.evaluate.compare")] is True
    assert edges[("llara.evaluate.run", "llara.settings")] is False  # inside evaluate_from_settings
    assert ("llara.evaluate.run", "llara.evaluate.workflow") in edges  # `from llara.evaluate.workflow import ...`
    assert ("llara.data.datasets", "llara.errors") in edges
    assert cycles([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]) == [["a", "b", "c"]]
    assert cycles([("a", "b"), ("b", "c")]) == []


def test_no_import_cycle(edges):
    assert cycles(edges) == [], "import cycles among llara modules (function-local imports included)"


def test_no_module_imports_from_a_later_stage(edges):
    upward = {(a, b) for a, b in edges if layer(b) > layer(a)}
    assert upward <= UPWARD_ALLOWED, f"imports from a later stage: {sorted(upward - UPWARD_ALLOWED)}"
    # the allowed ones stay out of import time, so importing llara.settings never loads the data stage
    assert not [e for e in upward if edges[e]], "an allowed upward import moved to module level"
    assert not [a for a, b in edges if b == ENTRY], "llara.cli is the entry point: nothing imports it"


def test_moved_names_are_the_same_objects_at_their_old_homes():
    from llara import errors, settings
    from llara.data import download, parse, safe_pickle
    from llara.evaluate import predictions, run

    assert settings.ConfigError is errors.ConfigError
    assert download.ChecksumError is errors.ChecksumError
    assert parse.MalformedInputError is errors.MalformedInputError
    assert safe_pickle.UnsafePickleError is errors.UnsafePickleError
    assert safe_pickle.PickleFormatError is errors.PickleFormatError
    assert run.PREDICTIONS is predictions.PREDICTIONS and run.read_predictions is predictions.read_predictions
