"""Hostile input: every bad value, file and store is one line that names it (issue 14).

The commands are driven in-process through their real entry points (``cli_run``):
Hydra composes the command line exactly as in a terminal, in a fraction of the time of a
new process; two tests start real processes to show the same from a shell.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import CONF_DIR, ROOT, clean_env
from hydra import compose, initialize_config_dir

from ohlora_eval.apps import screen
from ohlora_eval.apps import select as select_app
from ohlora_eval.apps.build import instantiate_node
from ohlora_eval.directions.store import read_directions
from ohlora_eval.errors import UserError
from ohlora_eval.tracking import store as tracking
from ohlora_eval.tracking.runs import tracked_run

# Tiny and fast; directions fitted once per store and then found again.
TINY = [
    "sampling.n_vectors=4",
    "sampling.vectors_per_batch=4",
    "directions.n=1500",
    "directions.gradient.epochs=3",
    "tracking.grids.passed=1",
    "tracking.grids.best=1",
    "tracking.progress=false",
    "review.n_boot=20",
    "device=cpu",
]


def cli_run(main, argv: list[str]) -> tuple[int, str]:
    """Run a command's entry point as ``python -m ... argv`` would: (exit status, stderr)."""
    err = io.StringIO()
    saved = sys.argv
    sys.argv = ["ohlora_eval", *argv]
    code: int | str | None = 0
    try:
        with contextlib.redirect_stderr(err):
            main()
    except SystemExit as stop:
        code = stop.code
    finally:
        sys.argv = saved
    return (0 if code is None else code), err.getvalue()


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("ohlora_eval: error:")]


def running_runs(root: Path) -> list[str]:
    if not (root / "mlflow.db").is_file():
        return []
    client = tracking.StoreRef(tracking.resolve_uri(None, root), str(root)).client()
    return [
        r.info.run_id
        for exp in client.search_experiments()
        for r in client.search_runs([exp.experiment_id])
        if r.info.status == "RUNNING"
    ]


class _Marker:
    """Unpickling this would run code: it creates the file ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _evil(path: Path, marker: Path) -> Path:
    torch.save({"weight": _Marker(marker)}, path)
    return path


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


# --- 3. checkpoints ---------------------------------------------------------------------


@pytest.mark.parametrize("what", ["code", "csv"])
def test_bad_checkpoint_is_one_line_naming_file_and_key(tmp_path, what):
    marker = tmp_path / "pwned"
    if what == "code":
        path = _evil(tmp_path / "evil.pt", marker)
        cfg = _compose("scorer=ohlora_cnn", f"scorer.checkpoint={path}", "device=cpu")
        node, key = cfg.scorer, "scorer.checkpoint"
    else:
        path = tmp_path / "weights.csv"
        path.write_text("a,b\n1,2\n")
        cfg = _compose("generator=stylegan_v9", f"generator.checkpoint={path}", "device=cpu")
        node, key = cfg.generator, "generator.checkpoint"
    with pytest.raises(UserError) as err:
        instantiate_node(node)
    msg = str(err.value)
    assert str(path) in msg and key in msg, msg
    assert "\n" not in msg and "weights_only" not in msg, msg
    assert not marker.exists(), "the pickled code ran"


def _direction_folder(folder: Path, layer: str = "w", dim: int = 8) -> Path:
    vec = folder / "property_score_vectors"
    vec.mkdir(parents=True)
    for p in ("eyes", "mouth", "pose"):
        pd.DataFrame([[0.1] * dim]).to_csv(vec / f"{p}_change_{layer}_vector_all.csv")
    return folder


def test_gradient_model_that_holds_code_is_refused_naming_the_file(tmp_path):
    folder = _direction_folder(tmp_path / "dirs")
    (folder / "property_score_vectors" / "eyes_change_w_vector_all.csv").unlink()
    models = folder / "gradient_models"
    models.mkdir()
    _evil(models / "eyes_w.pt", tmp_path / "pwned")
    (models / "eyes_w.json").write_text('{"dim": 8, "hidden": [4]}')
    with pytest.raises(UserError, match=r"eyes_w\.pt .*gradient model") as err:
        read_directions(folder, "w")
    assert "weights_only" not in str(err.value)
    assert not (tmp_path / "pwned").exists()


def test_direction_csv_with_text_names_the_file_and_column(tmp_path):
    folder = _direction_folder(tmp_path / "dirs")
    bad = folder / "property_score_vectors" / "mouth_change_w_vector_all.csv"
    bad.write_text(",0,1,2\n0,0.1,oops,0.3\n")
    with pytest.raises(UserError, match=r"mouth_change_w_vector_all\.csv.*column 1 holds 'oops'"):
        read_directions(folder, "w")


# --- 4. stores ----------------------------------------------------------------------------


def test_read_only_store_is_one_line_naming_it(tmp_path):
    root = tmp_path / "mlruns"
    uri, exp_id = tracking.setup("ohlora-eval", None, root)  # creates the store
    ro = f"sqlite:///file:{root / 'mlflow.db'}?mode=ro&uri=true"
    tracking.setup("ohlora-eval", ro, root)
    try:
        with pytest.raises(
            UserError, match=r"MLflow store .*m?lflow\.db.* cannot be used: .*readonly"
        ):
            with tracked_run({}):
                pass
    finally:
        tracking.setup("ohlora-eval", uri, root)


@pytest.mark.parametrize("where", ["file", "proc"])
def test_unusable_store_folder_is_one_line_from_a_shell(tmp_path, where):
    if where == "file":
        root = tmp_path / "a_file"
        root.write_text("not a folder")
        expected = f"tracking.root={root} is a file, not a folder"
    else:
        root = Path("/proc/ohlora_eval_store")
        expected = f"tracking.root={root} cannot be made"
    proc = subprocess.run(
        [sys.executable, "-m", "ohlora_eval", f"tracking.root={root}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"ohlora_eval: error: {expected}"), lines


# --- 5. values that name their field ---------------------------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("cutoff.eyes=abc", "cutoff.eyes='abc' is not a number"),
        ("cutoff.eyes=null", "cutoff.eyes=null is not allowed: cutoff.eyes needs a value"),
        ("sampling.grid.eyes=[a,b]", "sampling.grid.eyes[0]='a' is not a number"),
        ("sampling.seed=abc", "sampling.seed='abc' must be an integer"),
        ("review.top=3", "review.top"),
        ("review.n_boot=abc", "review.n_boot='abc' must be an integer"),
        ("directions.gradient.epochs=0", "directions.gradient.epochs=0 must be an integer"),
        ("generator=nope", "generator=nope is not an option of generator"),
        ("cutoff.eyes=[", "cutoff.eyes=["),
        # the models' own settings are typed too (apps/schemas.py)
        ("generator.seed=abc", "generator.seed='abc' must be an integer"),
        ("experiment=real_faces scorer.workers=x", "scorer.workers='x' must be an integer"),
        ("tracking.progress=maybe", "tracking.progress='maybe' must be true or false"),
        ("execution=ray execution.workers=0", "execution.workers=0 must be an integer >= 1"),
    ],
)
def test_bad_values_name_their_field(tmp_path, override, message):
    code, err = cli_run(screen.main, [*TINY, f"tracking.root={tmp_path}", *override.split()])
    assert code == 2 and "Traceback" not in err, err
    lines = error_lines(err)
    assert len(lines) == 1 and message in lines[0], err
    assert not running_runs(tmp_path)


def test_a_file_as_tracking_root_is_named_even_with_hydra_run_dir_set(tmp_path):
    afile = tmp_path / "not-a-folder"
    afile.write_text("")
    argv = [*TINY, f"tracking.root={afile}", f"hydra.run.dir={tmp_path / 'job'}"]
    code, err = cli_run(screen.main, argv)
    assert code == 2 and "Traceback" not in err, err
    assert error_lines(err) == [
        f"ohlora_eval: error: tracking.root={afile} is a file, not a folder; set"
        " tracking.root=<a writable folder> (made if missing)"
    ]


def test_select_cases_that_are_not_numbers(tmp_path):
    code, err = cli_run(
        select_app.main, ["run_id=0123", "cases=[abc]", f"tracking.root={tmp_path}"]
    )
    assert code == 2
    assert error_lines(err) == [
        "ohlora_eval: error: cases[0]='abc' is not a case number (an integer)"
    ]


# --- 6. messages that point at the right thing --------------------------------------------------


def test_stylegan_with_the_synthetic_scorer_says_which_scorer(tmp_path):
    cfg = _compose("generator=stylegan_v9", "device=cpu")
    with pytest.raises(UserError, match="set scorer=ohlora_cnn"):
        instantiate_node(cfg.scorer)
