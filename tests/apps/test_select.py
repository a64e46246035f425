"""Recording a selection in the Model Registry and re-evaluating it exactly."""

from __future__ import annotations

import shutil
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from helpers import CONF_DIR, ROOT, SMALL, clean_env, reference_file
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from ohlora_eval.apps.cli import UserError
from ohlora_eval.apps.screen import evaluate
from ohlora_eval.apps.select import select
from ohlora_eval.apps.verify import verify
from ohlora_eval.tracking import store as tracking

LOOSE = ["cutoff.eyes=0.5", "cutoff.mouth=0.5", "cutoff.pose=0.3"]


def _cfg(name: str, store, *overrides: str):
    base = SMALL if name == "select" else []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(name, overrides=[*base, f"tracking.root={store}", *overrides])


@pytest.fixture(scope="module")
def screened(make_cfg_module):
    res = evaluate(make_cfg_module(*LOOSE))
    passed = res.per_vector.loc[res.per_vector["passed"] == "O", "case"].tolist()
    failed = res.per_vector.loc[res.per_vector["passed"] == "X", "case"].tolist()
    assert len(passed) >= 5 and failed, "the loose cutoffs should pass some and fail some"
    return res, passed, failed


def test_select_registers_loads_and_verifies_exactly(screened, store):
    res, passed, _ = screened
    chosen = passed[:5]
    sel = select(
        _cfg(
            "select",
            store,
            f"run_id={res.run_id}",
            f"cases={chosen}",
            "name=sel-exact",
            "note=five good ones",
        )
    )
    uri = tracking.resolve_uri(None, store)
    client = MlflowClient(uri, registry_uri=uri)
    mv = client.get_model_version_by_alias("sel-exact", "final")
    assert str(mv.version) == sel.version
    assert mv.tags["source_run_id"] == res.run_id and mv.tags["n_selected"] == "5"
    assert mv.tags["source_pass_rate"] == f"{res.metrics['pass_rate']:.4g}"  # rounded
    assert '"eyes": 0.5' in mv.tags["cutoffs"]
    src = client.get_run(res.run_id).data.tags
    assert src["ohlora.selected"] == "true" and src["ohlora.selection"] == f"sel-exact/{mv.version}"

    mlflow.set_tracking_uri(uri)
    vectors = mlflow.pyfunc.load_model("models:/sel-exact@final").predict(None)
    assert vectors.shape == (5, 519)
    rows = [list(res.per_vector["case"]).index(c) for c in chosen]
    assert np.array_equal(vectors.to_numpy(np.float32), res.latents[rows])
    assert list(vectors.index) == chosen

    check = verify(_cfg("verify", store, "model=sel-exact@final", "tracking.progress=false"))
    assert check.max_abs_diff == 0.0 and check.all_pass
    assert list(check.table["case"]) == chosen


def test_select_and_verify_as_a_user_types_them(screened, store):
    """The entry points themselves (python -m), not just the functions behind them."""
    res, passed, _ = screened

    def cli(module: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", module, f"tracking.root={store}", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env=clean_env(),
        )

    sel = cli(
        "ohlora_eval.select", *SMALL, f"run_id={res.run_id}", f"cases=[{passed[0]}]", "name=sel-cli"
    )
    assert sel.returncode == 0, sel.stderr[-3000:]
    assert "recorded 1 vector(s)" in sel.stdout and "alias 'final'" in sel.stdout
    # The wrapper takes no input on purpose; MLflow's schema warnings about it are noise.
    assert "type hint" not in sel.stderr.lower(), sel.stderr[-3000:]
    check = cli("ohlora_eval.verify", "model=sel-cli@final", "tracking.progress=false")
    assert check.returncode == 0, check.stderr[-3000:]
    assert "max |recorded r - re-measured r| = 0" in check.stdout


def test_failed_case_is_refused_with_its_reason_and_versions_count_up(screened, store):
    res, passed, failed = screened
    with pytest.raises(UserError, match=rf"case {failed[0]}: .*(< |undefined)"):
        select(
            _cfg(
                "select",
                store,
                f"run_id={res.run_id}",
                f"cases=[{passed[0]},{failed[0]}]",
                "name=sel-two",
            )
        )
    with pytest.raises(UserError, match=r"cases \[99999\] are not in the run"):
        select(_cfg("select", store, f"run_id={res.run_id}", "cases=[99999]", "name=sel-two"))
    first = select(
        _cfg("select", store, f"run_id={res.run_id}", f"cases=[{passed[0]}]", "name=sel-two")
    )
    second = select(
        _cfg(
            "select",
            store,
            f"run_id={res.run_id}",
            f"cases=[{passed[1]},{failed[0]}]",
            "name=sel-two",
            "allow_failed=true",
        )
    )
    assert (first.version, second.version) == ("1", "2")
    uri = tracking.resolve_uri(None, store)
    client = MlflowClient(uri, registry_uri=uri)
    assert client.get_model_version("sel-two", "2").tags["allow_failed"] == "true"
    # No alias given: the first version got "final", the second left it there and said so.
    assert first.alias == "final" and "set on version 1" in first.alias_note
    assert second.alias is None and "'final' stays on version 1" in second.alias_note
    assert str(client.get_model_version_by_alias("sel-two", "final").version) == "1"
    third = select(
        _cfg(
            "select",
            store,
            f"run_id={res.run_id}",
            f"cases=[{passed[2]}]",
            "name=sel-two",
            "alias=final",
            "choose=true",
        )
    )
    assert third.alias_note == "alias 'final' moved to version 3 (was on version 1)"
    assert str(client.get_model_version_by_alias("sel-two", "final").version) == "3"
    assert client.get_run(res.run_id).data.tags["chosen"] == "true"


def test_alias_and_choose_commands_say_what_they_moved(screened, store, make_cfg):
    from ohlora_eval.apps.alias import set_alias
    from ohlora_eval.apps.choose import choose

    res, passed, _ = screened
    for case in passed[:2]:
        select(_cfg("select", store, f"run_id={res.run_id}", f"cases=[{case}]", "name=sel-mv"))
    assert set_alias(_cfg("alias", store, "model=sel-mv/2")) == (
        "alias 'final' moved to version 2 (was on version 1)"
    )
    assert set_alias(_cfg("alias", store, "model=sel-mv/2")) == "alias 'final' already on version 2"
    with pytest.raises(UserError, match=r"model=sel-mv/9: no such registered model version"):
        set_alias(_cfg("alias", store, "model=sel-mv/9"))
    other = evaluate(make_cfg(*LOOSE, "sampling.seed=5"))
    assert choose(_cfg("choose", store, f"run_id={other.run_id}")).startswith(
        f"run {other.run_id} is now the chosen run"
    )
    said = choose(_cfg("choose", store, f"run_id={res.run_id}"))
    assert said.endswith(f"(was run {other.run_id})")
    uri = tracking.resolve_uri(None, store)
    client = MlflowClient(uri)
    assert "chosen" not in client.get_run(other.run_id).data.tags
    assert client.get_run(res.run_id).data.tags["chosen"] == "true"


def test_a_selection_whose_files_were_deleted_says_so(screened, store):
    res, passed, _ = screened
    sel = select(
        _cfg("select", store, f"run_id={res.run_id}", f"cases=[{passed[0]}]", "name=sel-gone")
    )
    uri = tracking.resolve_uri(None, store)
    client = MlflowClient(uri, registry_uri=uri)
    model_id = client.get_model_version("sel-gone", sel.version).source.split("/")[-1]
    files = store / "artifacts" / "ohlora-selections" / "models" / model_id
    assert (files / "artifacts").is_dir()
    shutil.rmtree(files)  # what a cleanup script or a full disk does
    with pytest.raises(UserError, match=r"model=sel-gone@final \(version 1, run .*: its files"):
        verify(_cfg("verify", store, "model=sel-gone@final"))


def test_oh_lora_z_vectors_load_intact_through_z_csv(store):
    path = reference_file("ohlora_z_vectors_mixed.csv")
    sel = select(_cfg("select", store, f"z_csv={path}", "name=sel-ohlora", "allow_failed=true"))
    uri = tracking.resolve_uri(None, store)
    mlflow.set_tracking_uri(uri)
    got = mlflow.pyfunc.load_model(f"models:/sel-ohlora/{sel.version}").predict(None)
    want = pd.read_csv(path)
    assert got.shape == want.shape == (22, 519)
    assert list(got.columns) == list(want.columns)
    assert np.array_equal(got.to_numpy(np.float32), want.to_numpy(np.float64).astype(np.float32))
    # Written back at full precision: the 4-decimal values come back as written.
    assert np.allclose(got.to_numpy(np.float64), want.to_numpy(), atol=5e-8)


def test_z_csv_with_a_case_column_keeps_the_case_numbers(screened, store, tmp_path):
    res, passed, _ = screened
    chosen = passed[:3]
    index = {int(c): i for i, c in enumerate(res.per_vector["case"])}
    z = res.latents[[index[c] for c in chosen]]
    table = pd.DataFrame(z, columns=[str(i) for i in range(z.shape[1])])
    table.insert(0, "case", chosen)
    path = tmp_path / "picked.csv"
    table.to_csv(path, index=False)
    sel = select(
        _cfg("select", store, *LOOSE, f"z_csv={path}", "name=sel-zcase", "allow_failed=true")
    )
    assert sel.cases == chosen
    uri = tracking.resolve_uri(None, store)
    client = MlflowClient(uri, registry_uri=uri)
    check = verify(_cfg("verify", store, "model=sel-zcase@final"))
    recorded = check.table.set_index("case")
    original = res.per_vector.set_index("case").loc[chosen]
    assert check.max_abs_diff == 0.0
    for p in ("eyes", "mouth", "pose"):  # the same vectors measured alone: the same r
        assert np.array_equal(recorded.loc[chosen, f"{p}_recorded"], original[f"{p}_corr"])
    assert client.get_model_version("sel-zcase", sel.version).tags["cases"] == str(chosen)


# --- issue 32: select killed, stopped, run at once, odd names ----------------------------------

_KILLED_WHILE_LOGGING = """
import os, signal, sys
import mlflow.pyfunc
def die(*a, **k):
    os.kill(os.getpid(), signal.{sig})
    import time; time.sleep(30)
mlflow.pyfunc.log_model = die
from ohlora_eval.apps.select import main
sys.argv = ["select", *sys.argv[1:]]
main()
"""


def _selection_runs(store) -> list:
    client = MlflowClient(tracking.resolve_uri(None, store))
    exp = client.get_experiment_by_name("ohlora-selections")
    return client.search_runs([exp.experiment_id]) if exp else []


def _select_dying(store, res, passed, sig: str, name: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _KILLED_WHILE_LOGGING.format(sig=sig), f"tracking.root={store}",
         f"run_id={res.run_id}", f"cases=[{passed[0]}]", f"name={name}"],
        cwd=ROOT, env={**clean_env(), "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def test_a_select_killed_or_stopped_leaves_no_running_run(screened, store):
    """SIGKILL while the model is logged: the selection run is RUNNING until the next
    command opens a run, which marks it FAILED (before: RUNNING for good, its runs had no
    process tags). SIGTERM: KILLED with the reason (before: FAILED, no reason)."""
    res, passed, _ = screened
    killed = _select_dying(store, res, passed, "SIGKILL", "sel-killed")
    assert killed.returncode == -9, killed.stderr[-2000:]
    left = [r for r in _selection_runs(store) if r.info.status == "RUNNING"]
    assert len(left) == 1 and left[0].data.tags.get("ohlora.pid"), left
    select(_cfg("select", store, f"run_id={res.run_id}", f"cases=[{passed[0]}]", "name=sel-next"))
    closed = MlflowClient(tracking.resolve_uri(None, store)).get_run(left[0].info.run_id)
    assert closed.info.status == "FAILED"
    assert "died before it ended the run" in closed.data.tags["ohlora.failure_reason"]

    stopped = _select_dying(store, res, passed, "SIGTERM", "sel-stopped")
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    run = next(r for r in _selection_runs(store) if r.info.run_name == "select sel-stopped")
    assert run.info.status == "KILLED"
    assert run.data.tags["ohlora.end_reason"] == "stopped by SIGTERM"


def test_concurrent_selects_number_versions_and_move_no_alias_unasked(screened, store):
    """Three selects of a new model at once: one version each, "final" on version 1 only,
    and every other one says it was not moved (before: version 2 moved "final" too)."""
    res, passed, _ = screened
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ohlora_eval.select",
                f"tracking.root={store}",
                f"run_id={res.run_id}",
                f"cases=[{c}]",
                "name=sel-race",
            ],
            cwd=ROOT,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for c in passed[:3]
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    uri = tracking.resolve_uri(None, store)
    client = MlflowClient(uri, registry_uri=uri)
    versions = sorted(int(v.version) for v in client.search_model_versions("name = 'sel-race'"))
    assert versions == [1, 2, 3]
    assert str(client.get_model_version_by_alias("sel-race", "final").version) == "1"
    said = "\n".join(o[0] for o in outs)
    assert said.count("alias 'final' set on version 1") == 1, said
    assert said.count("is not the model's first") == 2, said


def test_a_model_name_with_an_at_sign_is_refused(screened, store):
    """``name=a@b`` was accepted, then its own printed ``verify model=a@b@final`` failed."""
    res, passed, _ = screened
    with pytest.raises(UserError, match=r"name='a@b' holds @"):
        select(_cfg("select", store, f"run_id={res.run_id}", f"cases=[{passed[0]}]", "name=a@b"))
