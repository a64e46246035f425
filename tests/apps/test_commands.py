"""The commands as a user meets them: console scripts that name themselves in --help, tab
completion, and each job's folder holding its log lines and the id of its run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, clean_env
from test_hardening import TINY, cli_run

from ohlora_eval.apps import screen

BIN = Path(sys.executable).parent
COMMANDS = {
    "ohlora-eval": "screen latent vectors",
    "ohlora-eval-directions": "fit the eyes/mouth/pose edit directions",
    "ohlora-eval-select": "record chosen vectors",
    "ohlora-eval-verify": "re-measure a recorded selection",
    "ohlora-eval-alias": "point an alias",
    "ohlora-eval-choose": "tag the screening run",
    "ohlora-eval-sheets": "render and log contact sheets",
    "ohlora-eval-import": "import the original Oh-LoRA test results",
    "ohlora-eval-rejudge": "judge a run's measured correlations again",
    "ohlora-eval-retest": "re-measure a run's passed vectors",
    "ohlora-eval-frontier": "how many vectors every triple of cutoffs",
    "ohlora-eval-compare": "compare two finished runs",
}


def _script(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{path} is not installed (pip install -e . makes the console scripts)")
    return path


def declared_scripts() -> dict[str, str]:
    """pyproject.toml's ``[project.scripts]``: {command: "module:function"}."""
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the table's lines are `name = "module:function"`
        table = text.split("\n[project.scripts]\n", 1)[1].split("\n[", 1)[0]
        return dict(re.findall(r'^([\w.-]+)\s*=\s*"([^"]+)"', table, re.MULTILINE))
    return tomllib.loads(text)["project"]["scripts"]


def help_command(name: str, target: str) -> list[str]:
    """``<name> --help``: the installed console script where it runs the declared entry point,
    else that entry point itself (a stale or missing install still tests the declaration)."""
    from importlib.metadata import entry_points

    installed = [ep.value for ep in entry_points(group="console_scripts", name=name)]
    if (BIN / name).exists() and installed == [target]:
        return [str(BIN / name), "--help"]
    module, _, function = target.partition(":")
    code = f"import sys; sys.argv[0] = {name!r}; from {module} import {function}; {function}()"
    return [sys.executable, "-c", code, "--help"]


@pytest.fixture(scope="module")
def helps() -> dict[str, subprocess.CompletedProcess]:
    """Every declared command's ``--help``, run in parallel (each starts Python and imports
    its app: seconds apiece)."""
    env = clean_env()
    procs = {
        name: subprocess.Popen(
            help_command(name, target),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for name, target in declared_scripts().items()
    }
    done = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return done


@pytest.mark.parametrize("name", ["ohlora-eval", "ohlora-eval-verify"])
def test_help_names_the_command_and_only_groups_that_work(name, helps):
    out = helps[name]
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith(f"{name}: {COMMANDS[name]}")
    assert "powered by Hydra" not in out.stdout and "preset" not in out.stdout
    groups = out.stdout.split("== Configuration groups (group=option) ==")[1].split("==")[0]
    listed = {ln.split(":")[0] for ln in groups.strip().splitlines()}
    if name == "ohlora-eval":
        assert {"cutoff", "generator", "scorer", "sampling", "experiment"} <= listed
    else:
        assert listed == {"tracking"}


def test_every_stage_is_a_command(helps):
    """Every console script pyproject.toml declares is a stage here (and every stage is
    declared), runs, and answers --help with its name, its purpose and its usage."""
    declared = declared_scripts()
    assert set(declared) == set(COMMANDS)
    for name, target in declared.items():
        assert target.startswith("ohlora_eval.apps.commands:"), target
        out = helps[name]
        assert out.returncode == 0, f"{name} --help exited {out.returncode}:\n{out.stderr}"
        assert out.stdout.startswith(f"{name}: {COMMANDS[name]}"), out.stdout[:300]
        assert f"\nusage: {name} [group=option ...] [key=value ...]\n" in out.stdout, name
        assert "== Config (override any key as key=value) ==" in out.stdout, name


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``argv`` from the project's root with the test environment, its output as text."""
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=clean_env() if env is None else env,
        cwd=ROOT,
        timeout=120,
    )


def test_tab_completion_offers_the_keys():
    env = {**clean_env(), "COMP_LINE": "ohlora-eval cutoff.", "COMP_POINT": "19"}
    out = _run([str(_script("ohlora-eval")), "-sc", "query=bash"], env=env)
    want = ["cutoff.eyes=", "cutoff.identity=", "cutoff.mouth=", "cutoff.pose="]
    assert out.stdout.split() == want


def test_the_job_folder_holds_the_log_and_names_the_run(tmp_path):
    code, err = cli_run(screen.main, [*TINY, f"tracking.root={tmp_path}", "review.page=false"])
    assert code == 0, err
    (folder,) = [p.parent for p in (tmp_path / "hydra").rglob("mlflow_run.txt")]
    run_id = (folder / "mlflow_run.txt").read_text().split()[0]
    log = (folder / "ohlora-eval.log").read_text()
    assert f"run {run_id} (" in log and "in experiment 'ohlora-eval'" in log
    assert "ohlora_eval: passed" in log and "fitting one now" in log
    assert "\r" not in log


def test_shims_and_scripts_run_the_same_entry(helps):
    """python -m ohlora_eval.choose and ohlora-eval-choose: one entry point."""
    a = _run([sys.executable, "-m", "ohlora_eval.choose", "--help"])
    b = helps["ohlora-eval-choose"]
    assert a.stdout == b.stdout and a.returncode == b.returncode == 0
    assert os.path.basename(a.stdout.split(":")[0]) == "ohlora-eval-choose"


LIGHT_CHECK = """
import sys
sys.argv = ["ohlora-eval", "--help"]
from ohlora_eval.apps import commands
for name in ("screen", "alias", "choose", "retest"):
    try:
        getattr(commands, name)()
    except SystemExit as exc:
        assert exc.code in (0, None), (name, exc.code)
help_loaded = sorted(m for m in HEAVY if m in sys.modules)
import ohlora_eval
from ohlora_eval.apps import alias, choose  # the whole commands, not only their --help
ohlora_eval.runs  # the results API (loaded on first use)
print(help_loaded, sorted(m for m in HEAVY if m in sys.modules and m != "mlflow"))
"""


def test_help_and_the_light_commands_load_no_torch_and_no_models():
    """``--help`` of every command loads neither torch, MLflow, pandas nor the models (the
    app is imported when its job runs); ``alias``, ``choose`` and ``ohlora_eval.runs()``
    load MLflow, but neither torch nor the models."""
    heavy = ["torch", "mlflow", "pandas", "ohlora_eval.models", "ohlora_eval.apps.screen"]
    code = f"HEAVY = {heavy!r}\n{LIGHT_CHECK}"
    out = _run([sys.executable, "-c", code])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[] ['pandas']", out.stdout[-2000:]


def test_a_typo_names_the_nearest_key_for_every_command():
    """A misspelt key gives "unknown key ...; did you mean ...?" and exit 2 in every
    command (Hydra's own advice, "To append to your config use +key=...", is wrong for a
    typo); a misspelt group option names the nearest option."""
    typos = {name: "tracking.rooot=/tmp/x" for name in declared_scripts()}
    typos["ohlora-eval"] = "cutoff.eyse=0.9"
    typos["ohlora-eval-retest"] = "kk=3"
    wanted = {"tracking.rooot=/tmp/x": "tracking.root", "cutoff.eyse=0.9": "cutoff.eyes"}
    wanted["kk=3"] = "k"
    procs = {}
    for name, target in declared_scripts().items():
        module, _, function = target.partition(":")
        code = f"import sys; sys.argv[0] = {name!r}; from {module} import {function}; {function}()"
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", code, typos[name]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
            cwd=ROOT,
        )
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        typo = typos[name]
        line = f"ohlora_eval: error: unknown key {typo.split('=')[0]}; did you mean {wanted[typo]}?"
        assert proc.returncode == 2 and err.strip().splitlines()[-1] == line, (name, err[-800:])
    out = _run([sys.executable, "-m", "ohlora_eval", "generator=synthetc"])
    assert out.returncode == 2
    assert "did you mean generator=synthetic" in out.stderr.strip().splitlines()[-1], out.stderr
