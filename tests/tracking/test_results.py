"""The results in Python (``ohlora_eval.runs``, ``per_vector``, ``selection``), against a
small store of two screening runs and one recorded selection; the example of docs/mlflow.md
("Results in Python") runs here exactly as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import CONF_DIR, ROOT, SMALL, clean_env, composer
from hydra import compose, initialize_config_dir
from mlflow.tracking._model_registry import utils as registry_utils
from mlflow.tracking._tracking_service import utils as tracking_utils

import ohlora_eval
from ohlora_eval.apps.screen import evaluate
from ohlora_eval.apps.select import select
from ohlora_eval.errors import UserError
from ohlora_eval.tracking import store as tracking

LOOSE = ["cutoff.eyes=0.5", "cutoff.mouth=0.5", "cutoff.pose=0.3"]
STRICT = ["cutoff.eyes=0.999", "cutoff.mouth=0.999", "cutoff.pose=0.999"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A store of its own: a loose and a strict screening run (the strict one re-uses the
    loose one's measurements), and a selection of the loose run's first three passes under
    the default name and alias."""
    root = tmp_path_factory.mktemp("results") / "mlruns"
    make = composer(root)
    with pytest.MonkeyPatch.context() as mp:  # runs before the per-test autouse fixture
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        loose = evaluate(make(*LOOSE))
        strict = evaluate(make(*STRICT))
        passed = loose.per_vector.loc[loose.per_vector["passed"] == "O", "case"].tolist()
        assert len(passed) >= 3 and strict.metrics["passed"] < loose.metrics["passed"]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                "select",
                overrides=[
                    *SMALL,
                    f"tracking.root={root}",
                    f"run_id={loose.run_id}",
                    f"cases={passed[:3]}",
                ],
            )
        sel = select(cfg)
    return root, loose, strict, sel, passed[:3]


# The page that documents the results in Python (the README links to it).
RESULTS_PAGE = "docs/mlflow.md"


def readme_example() -> str:
    """The first ```python block after the "## Results in Python" heading of docs/mlflow.md."""
    text = (ROOT / RESULTS_PAGE).read_text()
    section = text.split("\n## Results in Python\n", 1)
    assert len(section) == 2, f"{RESULTS_PAGE} has no '## Results in Python' section"
    block = re.search(r"```python\n(.*?)```", section[1].split("\n## ", 1)[0], re.S)
    assert block, f"the 'Results in Python' section of {RESULTS_PAGE} has no ```python block"
    return block.group(1)


def test_the_readme_example_runs_as_written(made, monkeypatch, capsys):
    root, loose, strict, sel, chosen = made
    code = readme_example()
    assert "root=" not in code and "uri=" not in code  # it shows the default store
    monkeypatch.chdir(root.parent)  # the default store: ./mlruns
    names: dict = {}
    exec(compile(code, f"{RESULTS_PAGE} (Results in Python)", "exec"), names)
    # The filter keeps the runs that passed vectors: the loose run only, when the strict
    # one passed none; newest first either way.
    expected = [r.run_id for r in (strict, loose) if r.metrics["passed"] > 0]
    assert list(names["runs"]["run_id"]) == expected
    table = names["table"]
    assert (
        table[table.passed]["case"].tolist()
        == (strict if strict.metrics["passed"] > 0 else loose)
        .per_vector.query("passed == 'O'")["case"]
        .tolist()
    )
    assert names["picked"].cases == chosen and names["picked"].source_run_id == loose.run_id
    out = capsys.readouterr().out
    assert loose.run_id in out and "metrics.passed" in out


def test_runs_gives_one_row_per_run_with_prefixed_columns(made):
    root, loose, strict, _, _ = made
    table = ohlora_eval.runs(root=root)
    assert list(table.columns[:5]) == ["run_id", "run_name", "status", "start_time", "end_time"]
    assert list(table["run_id"]) == [strict.run_id, loose.run_id]  # newest first
    assert set(table["status"]) == {"FINISHED"}
    assert str(table["start_time"].dt.tz) == "UTC" and table["start_time"].is_monotonic_decreasing
    rows = table.set_index("run_id")
    for res, cut in ((loose, LOOSE), (strict, STRICT)):
        row = rows.loc[res.run_id]
        assert row["metrics.passed"] == res.metrics["passed"]
        assert row["metrics.pass_rate"] == res.metrics["pass_rate"]
        assert row["params.cutoff.eyes"] == cut[0].split("=")[1]  # a string, as MLflow keeps it
        assert row["params.sampling.n_vectors"] == "24"
        assert row["tags.layer"] == "mapping_split1"
    groups = [c.split(".", 1)[0] for c in table.columns[5:]]
    assert groups == sorted(groups, key=["params", "metrics", "tags"].index)
    assert table.equals(ohlora_eval.runs(root=root))  # the same table every time


def test_runs_filters_with_mlflow_syntax(made):
    root, loose, strict, _, _ = made
    by_metric = ohlora_eval.runs(filter=f"metrics.passed > {strict.metrics['passed']}", root=root)
    assert list(by_metric["run_id"]) == [loose.run_id]
    by_param = ohlora_eval.runs(filter="params.`cutoff.eyes` = '0.999'", root=root)
    assert list(by_param["run_id"]) == [strict.run_id]
    none = ohlora_eval.runs(filter="metrics.passed > 1e9", root=root)
    full = ohlora_eval.runs(root=root)
    assert none.empty and list(none.columns) == list(full.columns[:5])
    assert none.dtypes.equals(full.dtypes[:5])
    with pytest.raises(UserError, match=r"filter='passed >>> 3' is not an MLflow search filter"):
        ohlora_eval.runs(filter="passed >>> 3", root=root)


def test_runs_names_an_unknown_experiment_and_a_missing_store(made, tmp_path):
    root = made[0]
    with pytest.raises(
        UserError, match=r"experiment='nope' is not in the store .*it has: .*ohlora-eval"
    ):
        ohlora_eval.runs("nope", root=root)
    selections = ohlora_eval.runs("ohlora-selections", root=root)
    assert list(selections["run_id"]) == [made[3].run_id]
    empty = tmp_path / "elsewhere"
    with pytest.raises(UserError, match=rf"no MLflow store at {re.escape(str(empty))}.*root="):
        ohlora_eval.runs(root=empty)
    assert not empty.exists()  # reading never creates a store


def test_per_vector_has_boolean_passed_and_keeps_the_ox(made):
    root, loose, _, _, _ = made
    table = ohlora_eval.per_vector(loose.run_id, root=root)
    original = loose.per_vector
    assert table["case"].dtype == np.int64 and table["passed"].dtype == bool
    assert table["passed"].tolist() == (original["passed"] == "O").tolist()
    assert table["passed_ox"].tolist() == original["passed"].tolist()
    cols = list(original.columns)
    cols.insert(cols.index("passed") + 1, "passed_ox")
    assert list(table.columns) == cols
    assert table[table.passed]["case"].tolist() == original.query("passed == 'O'")["case"].tolist()
    np.testing.assert_allclose(table["eyes_corr"], original["eyes_corr"], rtol=0, atol=1e-12)


def test_per_vector_names_an_unknown_run_and_a_run_without_the_table(made):
    root, _, _, sel, _ = made
    with pytest.raises(UserError, match=r"run_id=0123abc: no such run in .*ohlora_eval.runs\(\)"):
        ohlora_eval.per_vector("0123abc", root=root)
    # The selection run logged the model, not a per_vector.csv.
    with pytest.raises(UserError, match=rf"run_id={sel.run_id} .*has no per_vector.csv"):
        ohlora_eval.per_vector(sel.run_id, root=root)


def test_selection_loads_the_recorded_vectors_and_leaves_mlflow_as_it_was(made, monkeypatch):
    root, loose, _, sel, chosen = made
    # MLflow's process-wide URIs point elsewhere (and the registry's at nothing): loading
    # reads this store and puts both back as they were, environment included.
    elsewhere = "sqlite:////nowhere/else.db"
    monkeypatch.setattr(tracking_utils, "_tracking_uri", elsewhere)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    picked = ohlora_eval.selection(root=root)  # default: ohlora-final-latents@final
    assert (tracking_utils._tracking_uri, registry_utils._registry_uri) == (elsewhere, None)
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
    assert picked.model == f"ohlora-final-latents/{sel.version}"
    assert picked.cases == chosen and picked.source_run_id == loose.run_id
    assert picked.cutoffs == {"eyes": 0.5, "mouth": 0.5, "pose": 0.3}
    rows = [list(loose.per_vector["case"]).index(c) for c in chosen]
    assert picked.z.dtype == np.float32 and np.array_equal(picked.z, loose.latents[rows])
    assert list(picked.vectors.index) == chosen and picked.vectors.shape == picked.z.shape
    assert picked.recorded["case"].tolist() == chosen and picked.recorded["passed"].all()
    assert set(picked.recorded["passed_ox"]) == {"O"}
    assert picked.manifest["layer"] == picked.layer == "mapping_split1"
    same = ohlora_eval.selection(f"ohlora-final-latents/{sel.version}", root=root)
    assert same.cases == picked.cases and np.array_equal(same.z, picked.z)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "no-such-model@final",
            r"no registered model 'no-such-model' .*registered: ohlora-final-latents"
            r".*ohlora_eval.select",
        ),
        (
            "ohlora-final-latents@nope",
            r"has no alias 'nope' \(aliases: final -> 1; versions: \[1\]\)",
        ),
        ("ohlora-final-latents/7", r"has no version '7' \(versions: \[1\]\)"),
        ("ohlora-final-latents", r"write <name>@<alias> or <name>/<version>"),
    ],
)
def test_selection_names_an_unknown_model_alias_or_version(made, spec, message):
    with pytest.raises(UserError, match=message):
        ohlora_eval.selection(spec, root=made[0])


def test_the_environment_is_honoured_and_explicit_arguments_win(made, monkeypatch, tmp_path):
    root, loose, strict, _, _ = made
    monkeypatch.chdir(tmp_path)  # no ./mlruns here
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.default_uri(root))
    assert list(ohlora_eval.runs()["run_id"]) == [strict.run_id, loose.run_id]
    assert len(ohlora_eval.per_vector(loose.run_id)) == 24
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.default_uri(tmp_path / "other"))
    with pytest.raises(UserError, match=r"no MLflow store at .*other"):
        ohlora_eval.runs()
    assert len(ohlora_eval.runs(root=root)) == 2
    assert len(ohlora_eval.runs(uri=tracking.default_uri(root))) == 2
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(UserError, match=rf"no MLflow store at {re.escape(str(tmp_path))}/mlruns"):
        ohlora_eval.runs()


def test_import_stays_cheap_and_the_api_loads_on_first_use():
    probe = (
        "import sys, ohlora_eval\n"
        "heavy = [m for m in ('mlflow', 'torch', 'pandas', 'hydra') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "api = {'runs', 'per_vector', 'selection', 'RecordedSelection'}\n"
        "assert api <= set(ohlora_eval.__all__) <= set(dir(ohlora_eval))\n"
        "from ohlora_eval import per_vector, runs, selection\n"
        "from ohlora_eval.tracking import results\n"
        "assert runs is results.runs and selection is results.selection\n"
        "assert 'mlflow' in sys.modules\n"
        "try:\n"
        "    ohlora_eval.nope\n"
        "except AttributeError as exc:\n"
        "    assert 'nope' in str(exc)\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean_env(), "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_the_readme_block_is_the_one_documented():
    """The extraction finds the code docs/mlflow.md shows (not an empty or foreign block)."""
    code = readme_example()
    assert code.startswith("import ohlora_eval\n")
    assert all(f"ohlora_eval.{f}(" in code for f in ("runs", "per_vector", "selection"))
    assert len(code.strip().splitlines()) == 5
