"""The code's shape: one import name, layers that only import downwards, no import circles.

The layers follow the pipeline (DESIGN.md, "Layout"): the ways in (CLI, dashboard) on top,
then the service, the cycle, the read models, recording a version, configuration, alert
delivery, storage, the sources, the diff and, at the bottom, the record and its events.
A module may import its own layer and the layers below it, never one above; within a layer
no modules import each other in a circle. Every import counts: at the top of a module,
inside a function or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"monitor": "trialwatch.monitor", "storage": "trialwatch.storage",
           "notifiers": "trialwatch.notifiers"}

# Top first. A module belongs to the layer of the longest prefix naming it.
LAYERS: list[tuple[str, ...]] = [
    ("trialwatch.monitor.cli",),
    ("trialwatch.monitor.web",),
    ("trialwatch.monitor.service",),
    ("trialwatch.monitor.cycle", "trialwatch.monitor.backfill"),
    ("trialwatch.monitor.views", "trialwatch.monitor.feeds", "trialwatch.monitor.trial_table"),
    ("trialwatch.monitor.digests",),
    ("trialwatch.monitor.versioning", "trialwatch.monitor.health"),
    ("trialwatch.monitor.config", "trialwatch.monitor.errors"),
    ("trialwatch.notifiers",),
    ("trialwatch.storage",),
    ("trialwatch.monitor.sources",),
    ("trialwatch.monitor.diff",),
    ("trialwatch.monitor.record", "trialwatch.monitor.events", "trialwatch.monitor"),
]


def module_files() -> dict[str, Path]:
    modules = {}
    for folder, package in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            if "versions" in path.parts:  # Alembic revisions: loaded by Alembic, not imported
                continue
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports, wherever in the file the import stands."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("trialwatch") and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def layer_of(module: str) -> int:
    best = max((prefix for layer in LAYERS for prefix in layer
                if module == prefix or module.startswith(prefix + ".")), key=len)
    return next(i for i, layer in enumerate(LAYERS) if best in layer)


def test_every_module_belongs_to_a_layer() -> None:
    for module in import_graph():
        assert layer_of(module) is not None, module


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = [f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
              for module, targets in sorted(import_graph().items())
              for target in sorted(targets) if layer_of(target) < layer_of(module)]
    assert upward == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    graph = import_graph()
    circles = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:  # Tarjan: strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert circles == []


def test_the_layer_check_sees_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text("from typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from trialwatch.monitor.cli import cli\n"
                      "def f():\n    from trialwatch.storage import repository\n")
    modules = module_files()
    assert imports_of(source, "trialwatch.monitor.record", modules) == {
        "trialwatch.monitor.cli", "trialwatch.storage.repository"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel pip builds from a copy of the sources (so no build/ is left in the checkout)."""
    import shutil
    import subprocess
    import sys

    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in FOLDERS:
        shutil.copytree(REPO / folder, source / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True)
    return next(out.glob("trialwatch-*.whl"))


def test_the_wheel_installs_one_top_level_name_trialwatch(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"trialwatch"}


def test_the_wheel_carries_every_module_templates_and_migrations(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for module, path in module_files().items():
        expected = module.replace(".", "/") + ("/__init__.py" if path.name == "__init__.py"
                                               else ".py")
        assert expected in names, module
    assert "trialwatch/monitor/web/templates/trial.html" in names
    assert "trialwatch/storage/migrations/env.py" in names
    assert "trialwatch/storage/migrations/versions/0001_initial_schema.py" in names
