"""The layers of docs/architecture.md hold, and the contract really bites when broken."""

from __future__ import annotations

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
