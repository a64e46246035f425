"""The direction-finding stage, its files, and how evaluations pick directions."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import CONF_DIR, SMALL, composer
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from ohlora_eval.apps.find_directions import find_directions
from ohlora_eval.apps.screen import evaluate
from ohlora_eval.directions.spec import resolve_methods
from ohlora_eval.directions.stage import load_run
from ohlora_eval.directions.store import read_directions, read_vector_csv
from ohlora_eval.errors import UserError
from ohlora_eval.pipeline.groups import all_group_names
from ohlora_eval.tracking import store as tracking

FAST_FIT = ["directions.n=1600", "directions.gradient.epochs=2", "device=cpu"]


def _stage_cfg(store, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "find_directions", overrides=[*FAST_FIT, f"tracking.root={store}", *overrides]
        )


@pytest.fixture(scope="module")
def mixed_run(store):
    cfg = _stage_cfg(store, "experiment=mixed")
    return cfg, find_directions(cfg)


def _client(store) -> MlflowClient:
    return MlflowClient(tracking.resolve_uri(None, store))


def test_stage_logs_a_direction_run(mixed_run, store):
    cfg, run_id = mixed_run
    client = _client(store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "ohlora-directions"
    assert run.data.tags["method"] == "mixed" and run.data.tags["layer"] == "mapping_split1"
    m = run.data.metrics
    assert "gradient_val_mse_eyes" in m and m["gradient_val_mse_eyes"] > 0
    accs = [k for k in m if k.startswith("svm_val_acc_mouth_")]
    assert "svm_val_acc_mouth_hhhh" in accs or m["fallback_groups"] > 0
    for prop in ("hair_color", "hair_length", "background_mean", "hairstyle"):
        assert f"median_{prop}" in m
    files = {a.path for a in client.list_artifacts(run_id, "property_score_vectors")}
    expected = {
        f"property_score_vectors/{p}_change_mapping_split1_vector_{g}.csv"
        for p in ("mouth", "pose")
        for g in all_group_names()
    }
    assert files == expected  # eyes comes from the gradient regressor
    models = {a.path for a in client.list_artifacts(run_id, "gradient_models")}
    assert "gradient_models/eyes_mapping_split1.pt" in models
    sizes = pd.read_csv(client.download_artifacts(run_id, "group_sizes.csv"))
    assert sizes["size"].sum() == 1600 and len(sizes) == 16


def test_files_read_back_bit_identical_and_evaluate_the_same(mixed_run, store, make_cfg, tmp_path):
    _, run_id = mixed_run
    client = _client(store)
    local = client.download_artifacts(run_id, "", str(tmp_path))
    from_run = load_run(client, run_id, "mapping_split1")
    from_files = read_directions(local, "mapping_split1")
    for p in ("mouth", "pose"):
        for g in all_group_names():
            a, b = from_run.vectors[p][g], from_files.vectors[p][g]
            assert a.dtype == b.dtype == np.float64 and a.tobytes() == b.tobytes()
            assert np.isclose(np.linalg.norm(a), 1.0, atol=1e-6)
    a = evaluate(make_cfg(f"directions.run_id={run_id}"))
    b = evaluate(make_cfg("directions=files", f"directions.path={local}"))
    assert np.array_equal(a.scores, b.scores)
    assert (a.per_vector["svm_group_name"].str.fullmatch("[hl]{4}")).all()
    tags = client.get_run(a.run_id).data.tags
    assert tags["directions.run_id"] == run_id


def test_fitted_vectors_survive_the_oh_lora_csv_layout(tmp_path):
    v = np.random.default_rng(0).normal(size=2560).astype(np.float32)
    v /= np.linalg.norm(v)
    path = tmp_path / "mouth_change_mapping_split1_vector_hhhh.csv"
    pd.DataFrame(v[None, :]).to_csv(path)  # how Oh-LoRA writes them
    assert path.read_text().startswith(",0,1,2,")
    assert read_vector_csv(path).astype(np.float32).tobytes() == v.tobytes()


def test_latest_reuses_a_matching_run_and_fits_when_none(store, make_cfg):
    first = evaluate(make_cfg("directions.method=svm", "directions.grouped=false"))
    second = evaluate(
        make_cfg("directions.method=svm", "directions.grouped=false", "sampling.seed=5")
    )
    client = _client(store)
    tag = lambda r: client.get_run(r.run_id).data.tags["directions.run_id"]  # noqa: E731
    assert tag(first) == tag(second) != "none"
    other = evaluate(
        make_cfg("directions.method=svm", "directions.grouped=false", "directions.n=1700")
    )
    assert tag(other) != tag(first)


def test_layer_mismatch_names_both(mixed_run, store, make_cfg, tmp_path):
    _, run_id = mixed_run
    with pytest.raises(
        ValueError, match="layer 'mapping_split1' but the evaluation uses layer 'w'"
    ):
        evaluate(make_cfg(f"directions.run_id={run_id}", "layer=w"))
    local = _client(store).download_artifacts(run_id, "", str(tmp_path))
    with pytest.raises(ValueError, match=r"no 'eyes' direction for layer 'w'.*mapping_split1"):
        evaluate(make_cfg("directions=files", f"directions.path={local}", "layer=w"))


def test_method_spellings():
    assert resolve_methods("mixed") == {"eyes": "gradient", "mouth": "svm", "pose": "svm"}
    assert (
        resolve_methods({"eyes": "svm", "mouth": "gradient", "pose": "svm"})["mouth"] == "gradient"
    )
    with pytest.raises(ValueError, match="method='boost' is not known"):
        resolve_methods("boost")


def test_default_find_directions_is_what_a_default_evaluation_uses(fresh_store):
    """One source for the fitting defaults: find_directions with no fitting overrides fits
    the run a default evaluation then finds (no second fit)."""
    same_size = [o for o in SMALL if o.startswith("directions.")] + ["device=cpu"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("find_directions", overrides=[*same_size, f"tracking.root={fresh_store}"])
    fitted = find_directions(cfg)
    result = evaluate(composer(fresh_store)())
    client = _client(fresh_store)
    exp = client.get_experiment_by_name("ohlora-directions")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [fitted]
    assert client.get_run(result.run_id).data.tags["directions.run_id"] == fitted


def test_find_directions_refuses_a_run_id(store):
    cfg = _stage_cfg(store, "directions.run_id=abc")
    with pytest.raises(ValueError, match="directions.run_id=abc: find_directions fits new"):
        find_directions(cfg)


def test_fitting_measures_with_the_measure_switches(store):
    """Direction fitting scores its sample the way the screening measures (here as published),
    and such a fit is a different spec from the clean one."""
    clean = find_directions(_stage_cfg(store, "directions.method=svm", "directions.grouped=false"))
    noisy = find_directions(
        _stage_cfg(
            store, "directions.method=svm", "directions.grouped=false", "measure=as_published"
        )
    )
    client = _client(store)
    a, b = client.get_run(clean), client.get_run(noisy)
    assert a.data.tags["directions.spec_hash"] != b.data.tags["directions.spec_hash"]
    assert "train" in b.data.params["spec.measure"] and "spec.measure" not in a.data.params
    va = load_run(client, clean, "mapping_split1").vectors["eyes"]["all"]
    vb = load_run(client, noisy, "mapping_split1").vectors["eyes"]["all"]
    assert not np.array_equal(va, vb)  # noisier scores, another direction


def test_a_direction_run_whose_files_were_deleted_names_the_run(fresh_store):
    run_id = find_directions(_stage_cfg(fresh_store, "directions.method=svm"))
    client = _client(fresh_store)
    folder = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
    shutil.rmtree(folder)
    with pytest.raises(UserError, match=rf"direction run {run_id} has no files .*deleted"):
        load_run(client, run_id, "mapping_split1")
