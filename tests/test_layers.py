"""The layer rule (docs/layout.md) on the real import graph: every import of every module, function-level
lazy imports included, may only reach the layers its own layer is allowed to import."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "covid_sweep"

# the top-level package only sets an environment variable and holds __version__: it counts as core
TOP_LEVEL = {"covid_sweep": "core", "covid_sweep.__main__": "entry", "covid_sweep.agent": "entry",
             "covid_sweep.sweep": "store"}  # the sweep package itself holds only its docstring
# sweep/ is three layers: storage at the bottom, control and views beside each other on it
SWEEP_LAYERS = ("store", "control", "views")

ALLOWED = {
    "core": set(),
    "data": {"core"},
    "model": {"core", "data"},
    "tracking": {"core", "data"},
    "training": {"core", "data", "model", "tracking"},
    "inference": {"core", "data", "model"},
    "store": {"core"},
    "control": {"core", "data", "model", "tracking", "training", "inference", "store"},
    "views": {"core", "data", "model", "tracking", "inference", "store"},
    "cli": {"core", "data", "model", "tracking", "training", "inference", "store", "control", "views"},
    "entry": {"core", "cli", "control"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer_of(name: str) -> str | None:
    """The layer of covid_sweep module `name`; None for a module outside the package."""
    if name != "covid_sweep" and not name.startswith("covid_sweep."):
        return None
    if name in TOP_LEVEL:
        return TOP_LEVEL[name]
    parts = name.split(".")
    layer = parts[2] if parts[1] == "sweep" and len(parts) > 2 else parts[1]
    return layer if layer in ALLOWED else f"unplaced:{name}"


def imported_modules(source: str, name: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) for every import anywhere in the source: `from A import b` counts as A.b where that is a module."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[:len(package) - node.level + 1]
                base = ".".join(package + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.append((node.lineno, full if is_module(full) else base))
    return found


def violations(source: str, name: str, is_package: bool = False) -> list[str]:
    own = layer_of(name)
    bad = []
    for line, target in imported_modules(source, name, is_package):
        layer = layer_of(target)
        if layer is None or layer == own:
            continue
        if layer not in ALLOWED.get(own, set()):
            bad.append(f"{name}:{line} imports {target} ({own} may not import {layer})")
    return bad


def package_modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield module_name(path), path


def layer_edges() -> set[tuple[str, str]]:
    edges = set()
    for name, path in package_modules():
        for _, target in imported_modules(path.read_text(), name, path.name == "__init__.py"):
            source_layer, target_layer = layer_of(name), layer_of(target)
            if target_layer is not None and target_layer != source_layer:
                edges.add((source_layer, target_layer))
    return edges


def cycle(edges: set[tuple[str, str]]) -> list[str] | None:
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                path = trail + [node]
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, trail + [node])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [])):
            return found
    return None


def test_every_module_is_in_a_layer():
    unplaced = [name for name, _ in package_modules() if not layer_of(name) or layer_of(name).startswith("unplaced")]
    assert unplaced == [], f"modules outside every layer (add them to a layer package or TOP_LEVEL): {unplaced}"


def test_each_layer_imports_only_the_layers_below_it():
    bad = [v for name, path in package_modules() for v in violations(path.read_text(), name, path.name == "__init__.py")]
    assert bad == [], "\n".join(bad)


def test_no_import_cycles_between_layers():
    assert cycle(layer_edges()) is None, f"layers import each other in a cycle: {' -> '.join(cycle(layer_edges()))}"
    assert cycle({(a, b) for a, allowed in ALLOWED.items() for b in allowed}) is None  # the rule itself is a stack


def test_the_checker_sees_lazy_and_package_relative_imports():
    lazy = "def score():\n    from covid_sweep.training.train import fit\n"
    assert violations(lazy, "covid_sweep.inference.predict") == [
        "covid_sweep.inference.predict:2 imports covid_sweep.training.train (inference may not import training)"]
    via_package = "from covid_sweep.training import trial\n"
    assert violations(via_package, "covid_sweep.core.config") == [
        "covid_sweep.core.config:1 imports covid_sweep.training.trial (core may not import training)"]
    relative = "from ..sweep import store\n"
    assert violations(relative, "covid_sweep.model.artifact") == [
        "covid_sweep.model.artifact:1 imports covid_sweep.sweep.store (model may not import store)"]
    assert violations("import numpy\nfrom covid_sweep.core import files\n", "covid_sweep.data.layout") == []


def test_the_cycle_finder_finds_one():
    assert cycle({("control", "entry"), ("entry", "control")}) is not None
    assert cycle({("cli", "control"), ("control", "core")}) is None


def test_control_and_views_stand_on_the_store_and_never_import_each_other():
    assert "store" in ALLOWED["control"] and "store" in ALLOWED["views"]
    assert "views" not in ALLOWED["control"] and "control" not in ALLOWED["views"]
    assert ALLOWED["store"] == {"core"}
    assert layer_of("covid_sweep.sweep.views.status") == "views" and layer_of("covid_sweep.sweep.store") == "store"
    assert violations("from covid_sweep.sweep.views.status import ranked\n", "covid_sweep.sweep.control.promote") == [
        "covid_sweep.sweep.control.promote:1 imports covid_sweep.sweep.views.status (control may not import views)"]


def module_cycle() -> list[str] | None:
    """A cycle among the package's modules themselves (not only among layers), lazy imports included."""
    edges = set()
    for name, path in package_modules():
        for _, target in imported_modules(path.read_text(), name, path.name == "__init__.py"):
            if layer_of(target) is not None and target != name and is_module(target):
                edges.add((name, target))
    return cycle(edges)


def test_no_import_cycle_anywhere_in_the_package():
    """Issue 28: not between layers only, between any two modules (lazy imports count: they run too)."""
    found = module_cycle()
    assert found is None, f"modules import each other in a cycle: {' -> '.join(found)}"


def test_the_trial_entry_is_started_by_the_launcher_and_the_public_agent_only():
    """One trial entry: the launcher (embedded) and covid_sweep.agent (`wandb agent`) run trial_entry.main; the
    protocol it parses imports neither."""
    entry = "covid_sweep.sweep.control.trial_entry"
    importers = sorted(name for name, path in package_modules()
                       if any(target == entry for _, target in imported_modules(path.read_text(), name,
                                                                               path.name == "__init__.py")))
    assert importers == ["covid_sweep.agent", "covid_sweep.sweep.control.launcher"]
