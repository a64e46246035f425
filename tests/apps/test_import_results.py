"""Importing Oh-LoRA test-result CSVs as finished runs (python -m ohlora_eval.import_results)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import CONF_DIR, ROOT, clean_env, conf_cutoffs, reference_file
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from test_hardening import cli_run

from ohlora_eval.apps.cli import terminal
from ohlora_eval.apps.import_results import import_results
from ohlora_eval.apps.import_results import main as import_main
from ohlora_eval.formats import ohlora_results as results_io
from ohlora_eval.pipeline import judge
from ohlora_eval.tracking import store as tracking

RESULT = "test_result_mapping_split1_160K_final_mixed.csv"
STATISTICS = "test_statistics_mapping_split1_160K_final_mixed.csv"
NATIVE_METRICS = {
    "passed",
    "pass_rate",
    "eyes_corr_mean",
    "mouth_corr_mean",
    "pose_corr_mean",
    "sum_abs_corr_mean",
    "eyes_pass_rate",
    "mouth_pass_rate",
    "pose_pass_rate",
}

# The two older layouts, as Oh-LoRA v2-v4 and the v3.1 ungrouped tests wrote them (cutoffs
# 0.92 / 0.88 / 0.88): case 1 fails on mouth, case 2 on eyes.
VECTOR_NO_LAYOUT = """\
case,vector_no,passed,group_name,eyes_corr,mouth_corr,pose_corr,sum_abs_corr,passed_rechecked
0,0,O,hhh,-0.9236,-0.9028,-0.9317,2.7581,O
1,0,X,lhh,-0.9184,-0.8791,-0.8877,2.6852,X
2,0,X,hhl,-0.9106,-0.8918,-0.9382,2.7406,O
"""
UNGROUPED_LAYOUT = """\
case,passed,eyes_corr,mouth_corr,pose_corr,sum_abs_corr
0,O,0.9507,0.8861,0.9010,2.7378
1,X,0.6984,0.8383,0.8675,2.4042
2,X,0.9593,0.8629,0.8524,2.6746
"""


def compose_import(store: Path, *overrides: str):
    """compose("import_results", overrides) as the app composes it, with the given store."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "import_results",
            overrides=[f"tracking.root={store}", "tracking.progress=false", *overrides],
        )


def client_for(store: Path) -> MlflowClient:
    return MlflowClient(tracking.resolve_uri(None, store))


def artifact_csv(client: MlflowClient, run_id: str, path: str, **kwargs) -> pd.DataFrame:
    return pd.read_csv(client.download_artifacts(run_id, path), **kwargs)


def test_reference_import_reproduces_the_original_numbers(store, capsys):
    path, stats_path = reference_file(RESULT), reference_file(STATISTICS)
    with terminal():  # its summary shown as the command shows it (stdout)
        res = import_results(compose_import(store, f"path={path}", f"statistics={stats_path}"))
    client = client_for(store)
    run = client.get_run(res.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "ohlora-eval"
    assert run.info.run_name == Path(RESULT).stem
    tags = run.data.tags
    assert tags["source"] == "import" and tags["ohlora.kind"] == "imported"
    assert tags["import.path"] == str(path.resolve())
    assert tags["import.sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert tags["import.disagreements"] == "0" and tags["git_commit"]
    assert tags["import.statistics_check"] == "agrees" and res.statistics_differences == []
    assert run.data.params["cutoff.eyes"] == "0.92" and run.data.params["n_rows"] == "2000"

    metrics = run.data.metrics
    assert NATIVE_METRICS <= set(metrics) and "images_per_sec" not in metrics
    assert metrics["passed"] == 43 and metrics["pass_rate"] == 0.0215

    per_vector = artifact_csv(client, res.run_id, "per_vector.csv", keep_default_na=False)
    assert list(per_vector.columns) == judge.PER_VECTOR_COLUMNS
    original = pd.read_csv(path)
    for col in ["case", "svm_group_name", "passed", *judge.CORR_COLUMNS]:
        assert (per_vector[col] == original[col]).all(), col
    statistics = artifact_csv(client, res.run_id, "statistics.csv", index_col=0).iloc[0]
    expected = pd.read_csv(stats_path, index_col=0).iloc[0]
    for col, want in [
        ("eyes_corr_mean", 0.9198),
        ("mouth_corr_mean", -0.8159),
        ("pose_corr_mean", -0.8372),
        ("sum_abs_corr_mean", 2.5732),
        ("passed", 43),
        ("passed_ratio", 0.0215),
    ]:
        assert statistics[col] == want == expected[col], col

    names = {a.path for a in client.list_artifacts(res.run_id)}
    assert {"per_vector.csv", "statistics.csv", "summary.png", "config.yaml", "source"} <= names
    assert "disagreements.csv" not in names
    sources = {a.path for a in client.list_artifacts(res.run_id, "source")}
    assert sources == {f"source/{RESULT}", f"source/{STATISTICS}"}
    out = capsys.readouterr().out
    assert "passed 43 of 2000 (2.15%)" in out and res.run_id in out and "make ui" in out


@pytest.mark.parametrize(
    "text, layout, groups",
    [
        (VECTOR_NO_LAYOUT, "vector_no, group_name", ["hhh", "lhh", "hhl"]),
        (UNGROUPED_LAYOUT, "without groups", ["", "", ""]),
    ],
)
def test_older_layouts_read_as_native_tables(tmp_path, text, layout, groups):
    path = tmp_path / "test_result.csv"
    path.write_text(text)
    table = results_io.read_ohlora_results(path, conf_cutoffs())
    assert layout in table.attrs["layout"]
    assert list(table.columns[: len(judge.PER_VECTOR_COLUMNS)]) == judge.PER_VECTOR_COLUMNS
    assert table["svm_group_name"].tolist() == groups
    assert table["passed"].tolist() == ["O", "X", "X"]
    assert table["file_passed"].tolist() == ["O", "X", "X"]
    assert "mouth |r|=" in table.loc[1, "fail_reason"]
    if "vector_no" in text:  # the file's other columns are kept as they were
        assert table["vector_no"].tolist() == [0, 0, 0]
        assert table["passed_rechecked"].tolist() == ["O", "X", "O"]
    assert results_io.disagreements(table, conf_cutoffs()).empty


def test_group_names_file_without_verdict_is_read(tmp_path):
    path = tmp_path / "ohlora_w_group_names.csv"
    path.write_text(
        "case,vector_no,group_name,eyes_corr,mouth_corr,pose_corr\n"
        "127,0,hhh,-0.9205,-0.9101,-0.9243\n672,0,lhh,-0.9077,-0.9052,-0.8839\n"
    )
    table = results_io.read_ohlora_results(path, conf_cutoffs())
    assert table["passed"].tolist() == ["O", "X"]  # eyes 0.9077 < 0.92
    assert table["file_passed"].tolist() == ["", ""]
    assert results_io.disagreements(table, conf_cutoffs()).empty


def test_older_layout_imports_as_a_native_run(store, tmp_path):
    path = tmp_path / "test_result.csv"
    path.write_text(VECTOR_NO_LAYOUT)
    res = import_results(compose_import(store, f"path={path}", "name=v2 final vectors"))
    client = client_for(store)
    run = client.get_run(res.run_id)
    assert run.info.run_name == "v2 final vectors"
    assert run.data.metrics["passed"] == 1 and run.data.metrics["mouth_pass_rate"] == 2 / 3
    assert "vector_no" in run.data.tags["import.layout"]
    per_vector = artifact_csv(client, res.run_id, "per_vector.csv", keep_default_na=False)
    assert list(per_vector.columns) == judge.PER_VECTOR_COLUMNS
    assert per_vector["svm_group_name"].tolist() == ["hhh", "lhh", "hhl"]


def test_file_verdicts_that_disagree_are_reported(store, tmp_path, capsys):
    original = pd.read_csv(reference_file(RESULT))
    flipped = original.copy()
    i = flipped.index[flipped["case"] == 39][0]
    assert flipped.loc[i, "passed"] == "O"
    flipped.loc[i, "passed"] = "X"
    path = tmp_path / "flipped.csv"
    flipped.to_csv(path, index=False)

    with terminal():
        res = import_results(compose_import(store, f"path={path}"))
    client = client_for(store)
    run = client.get_run(res.run_id)
    assert run.data.metrics["passed"] == 43  # recomputed, not the file's word
    assert run.data.tags["import.disagreements"] == "1"
    report = artifact_csv(client, res.run_id, "disagreements.csv", keep_default_na=False)
    assert report["case"].tolist() == [39]
    assert report.loc[0, "file_passed"] == "X" and report.loc[0, "passed"] == "O"
    assert report.loc[0, "svm_group_name"] == original.loc[i, "svm_group_name"]
    assert "differs on 1 row(s): case 39 file X now O" in capsys.readouterr().out


def test_statistics_file_is_compared_with_the_recomputed_statistics(store):
    cfg = compose_import(
        store,
        f"path={reference_file(RESULT)}",
        f"statistics={reference_file(STATISTICS)}",
        "cutoff.eyes=0.88",
    )
    res = import_results(cfg)
    assert res.statistics_differences == [
        "passed: file 43, recomputed 62",
        "passed_ratio: file 0.0215, recomputed 0.031",
    ]
    tags = client_for(store).get_run(res.run_id).data.tags
    assert tags["import.statistics_check"] == "; ".join(res.statistics_differences)
    # The file was judged at eyes 0.92: its own verdicts differ where 0.88 <= |eyes r| < 0.92.
    assert len(res.disagreements) == 62 - 43
    assert set(res.disagreements["file_passed"]) == {"X"}


def test_a_verdict_at_the_cutoff_after_rounding_is_explained(tmp_path):
    path = tmp_path / "edge.csv"
    # 0.9200 is a rounded r: the original judged the unrounded one, e.g. 0.91996 (failed).
    path.write_text(UNGROUPED_LAYOUT.replace("0,O,0.9507", "0,X,0.9200"))
    table = results_io.read_ohlora_results(path, conf_cutoffs())
    report = results_io.disagreements(table, conf_cutoffs())
    assert report["case"].tolist() == [0]
    assert report.loc[0, "note"] == "|r| of eyes within rounding of its cutoff"


@pytest.mark.parametrize(
    "text, message",
    [
        (
            UNGROUPED_LAYOUT.replace("0.6984", ""),
            r"eyes_corr is missing: line 3 \(''\)",
        ),
        (
            UNGROUPED_LAYOUT.replace("0.8629", "n/a"),
            r"mouth_corr must be a number: line 4 \('n/a'\)",
        ),
        (UNGROUPED_LAYOUT.replace("0.8675", "1.5"), r"pose_corr is a correlation, in \[-1, 1\]"),
        (UNGROUPED_LAYOUT.replace("1,X", "1,?"), r"passed must be O or X: line 3 \('\?'\)"),
        (UNGROUPED_LAYOUT.replace("\n2,X", "\n1,X"), r"case must identify one row each"),
        (UNGROUPED_LAYOUT.replace("\n2,X", "\nfour,X"), r"case must be an integer"),
        (
            "case,eyes,mouth,pose\n0,0.9,0.9,0.9\n",
            r"not an Oh-LoRA test result: columns found case,eyes,mouth,pose; accepted layouts"
            r" .*case,svm_group_name,passed,eyes_corr,mouth_corr,pose_corr,sum_abs_corr",
        ),
        (UNGROUPED_LAYOUT.splitlines()[0] + "\n", r"no rows under the header"),
    ],
)
def test_bad_files_are_refused_with_the_reason(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        results_io.read_ohlora_results(path, conf_cutoffs())


def test_a_statistics_file_given_as_the_result_says_so(store):
    with pytest.raises(ValueError, match=r"columns found \(unnamed\),eyes_corr_mean.*statistics="):
        import_results(compose_import(store, f"path={reference_file(STATISTICS)}"))


def test_bad_input_logs_no_run(store, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(UNGROUPED_LAYOUT.replace("0.6984", "x"))
    with pytest.raises(ValueError, match="eyes_corr must be a number"):
        import_results(compose_import(store, f"path={path}"))
    with pytest.raises(FileNotFoundError, match=r"path=.*nowhere\.csv: no such file"):
        import_results(compose_import(store, f"path={tmp_path / 'nowhere.csv'}"))
    client = client_for(store)
    exp = client.get_experiment_by_name("ohlora-eval")
    if exp is not None:
        runs = client.search_runs([exp.experiment_id], f"tags.`import.path` = '{path}'")
        assert runs == []


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ohlora_eval.import_results", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
    )


def test_cli_imports_and_refuses_bad_input_in_one_line(tmp_path):
    store = tmp_path / "mlruns"
    path = tmp_path / "results.csv"
    shutil.copy(reference_file(RESULT), path)
    ok = _cli(f"path={path}", f"tracking.root={store}")
    assert ok.returncode == 0, ok.stderr
    assert "ohlora_eval: passed 43 of 2000 (2.15%)" in ok.stdout
    assert (store / "hydra").is_dir()  # Hydra's files follow the store

    # The refusals through the same entry point in this process (`python -m` start-up and exit
    # codes of the console scripts: tests/apps/test_commands.py)
    for args, expected in [
        ([f"path={tmp_path / 'missing.csv'}"], "missing.csv: no such file"),
        ([f"path={reference_file(STATISTICS)}"], "not an Oh-LoRA test result"),
        ([], "path=<csv> is required"),
    ]:
        code, err = cli_run(import_main, [*args, f"tracking.root={store}"])
        assert code == 2, err
        errors = [line for line in err.splitlines() if "ohlora_eval: error" in line]
        assert len(errors) == 1 and expected in errors[0], err
        assert "Traceback" not in err
