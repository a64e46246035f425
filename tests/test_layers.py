"""The layers of docs/architecture.md hold, and the contract really bites when broken."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

from helpers import ROOT

LINT = str(Path(ROOT / ".venv" / "bin" / "lint-imports"))


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    exe = LINT if Path(LINT).exists() else shutil.which("lint-imports")
    assert exe, "lint-imports (import-linter) is not installed: make setup"
    return subprocess.run(
        [exe, "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
    )


def test_the_package_keeps_its_layers():
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_an_import_up_the_layers_is_refused(tmp_path):
    """A copy of the package whose pipeline imports tracking (and so MLflow) must fail both
    contracts, naming the offending import."""
    shutil.copytree(ROOT / "ohlora_eval", tmp_path / "ohlora_eval")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    judge = tmp_path / "ohlora_eval" / "pipeline" / "judge.py"
    judge.write_text(judge.read_text() + "\nfrom ohlora_eval.tracking import store  # noqa\n")
    proc = _lint(tmp_path)
    assert proc.returncode != 0
    assert "ohlora_eval.pipeline.judge -> ohlora_eval.tracking.store" in proc.stdout
    assert "2 broken" in proc.stdout


def _module_names(package: Path) -> dict[str, Path]:
    names = {}
    for f in package.rglob("*.py"):
        parts = f.relative_to(package.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return names


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules ``name`` imports, wherever the import statement stands: at the
    top, inside a function, or under ``if TYPE_CHECKING:`` (two modules that need each other's
    types are one idea split in two, or share a type that belongs to neither). ``from a
    import b`` is an import of ``a.b`` where that is a module, else of ``a``."""
    tree = ast.parse(path.read_text())
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            wanted = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            wanted = [
                f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module
                for a in node.names
            ]
        else:
            continue
        for target in wanted:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _import_graph(package: Path) -> dict[str, set[str]]:
    modules = _module_names(package)
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_no_module_imports_itself_round_a_cycle():
    graph = _import_graph(ROOT / "ohlora_eval")
    assert len(graph) > 100 and sum(map(len, graph.values())) > 300  # it really read them
    assert _cycles(graph) == []


def test_a_cycle_through_an_import_inside_a_function_is_found(tmp_path):
    shutil.copytree(ROOT / "ohlora_eval", tmp_path / "ohlora_eval")
    judge = tmp_path / "ohlora_eval" / "pipeline" / "judge.py"
    judge.write_text(
        judge.read_text() + "\n\ndef _late():\n    from ohlora_eval.review import table  # noqa\n"
    )
    cycles = _cycles(_import_graph(tmp_path / "ohlora_eval"))
    assert any(
        "ohlora_eval.pipeline.judge" in c and "ohlora_eval.review.table" in c for c in cycles
    )


def test_a_cycle_through_an_import_for_types_only_is_found(tmp_path):
    shutil.copytree(ROOT / "ohlora_eval", tmp_path / "ohlora_eval")
    table = tmp_path / "ohlora_eval" / "review" / "table.py"
    table.write_text(
        table.read_text() + "\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
        "    from ohlora_eval.review.settings import ReviewSettings  # noqa\n"
    )
    cycles = _cycles(_import_graph(tmp_path / "ohlora_eval"))
    assert ["ohlora_eval.review.settings", "ohlora_eval.review.table"] in cycles
