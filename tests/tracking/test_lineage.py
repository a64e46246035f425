"""Lineage as MLflow datasets (``mlflow.log_input``): a screening's candidate vectors, the
directions it used, and the vectors a selection holds, read back from the runs' inputs."""

from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest
from helpers import SMALL, compose_app
from mlflow.tracking import MlflowClient

from ohlora_eval.apps.screen import evaluate
from ohlora_eval.apps.select import select
from ohlora_eval.apps.verify import verify
from ohlora_eval.pipeline import fingerprint
from ohlora_eval.tracking import lineage
from ohlora_eval.tracking import store as tracking
from ohlora_eval.tracking.read_back import run_file

LOOSE = ["cutoff.eyes=0.5", "cutoff.mouth=0.5", "cutoff.pose=0.3"]


def _client(store) -> MlflowClient:
    uri = tracking.resolve_uri(None, store)
    return MlflowClient(uri, registry_uri=uri)


def _inputs(client: MlflowClient, run_id: str) -> dict[str, object]:
    """{context: dataset} of a run's dataset inputs (each context once)."""
    found: dict[str, object] = {}
    for item in client.get_run(run_id).inputs.dataset_inputs:
        (context,) = [t.value for t in item.tags if t.key == lineage.CONTEXT_TAG]
        assert context not in found, f"two {context} datasets"
        found[context] = item.dataset
    return found


@pytest.fixture(scope="module")
def screened(make_cfg_module):
    return evaluate(make_cfg_module(*LOOSE))


def test_a_screening_logs_its_candidates_and_directions(screened, store):
    client = _client(store)
    inputs = _inputs(client, screened.run_id)
    assert set(inputs) == {"candidates", "directions"}

    cand = inputs["candidates"]
    # The digest of the latents as stored, computed here from the file itself (stored by this
    # run, or by the run of the same measurement it re-used: run_file follows the tag).
    with tempfile.TemporaryDirectory() as tmp:
        z = np.load(run_file(client, screened.run_id, "latents.npy", tmp))
    assert z.shape == (24, 519) and z.dtype == np.float32
    want = fingerprint.digest(z)
    assert cand.digest == want[: lineage.DIGEST_CHARS]
    assert cand.name == f"candidates-{want[:12]}"
    profile, source = json.loads(cand.profile), json.loads(cand.source)
    assert profile["count"] == 24 and profile["dim"] == 519 and profile["seed"] == 0
    assert source["seed"] == 0 and source["count"] == 24
    assert "Synthetic" in source["generator"]

    dirs = inputs["directions"]
    tags = client.get_run(screened.run_id).data.tags
    assert tags["directions.run_id"] != "none"
    assert json.loads(dirs.source)["run_id"] == tags["directions.run_id"]
    assert json.loads(dirs.profile)["run_id"] == tags["directions.run_id"]
    assert dirs.name == f"directions-{dirs.digest[:12]}"


def test_another_seed_is_another_dataset_and_a_pinned_direction_run_is_logged(
    screened, store, make_cfg
):
    client = _client(store)
    direction_run = client.get_run(screened.run_id).data.tags["directions.run_id"]
    other = evaluate(
        make_cfg(
            *LOOSE, "sampling.seed=1", f"directions.run_id={direction_run}", "review.page=false"
        )
    )
    first, second = _inputs(client, screened.run_id), _inputs(client, other.run_id)
    assert second["candidates"].digest != first["candidates"].digest
    assert json.loads(second["candidates"].profile)["seed"] == 1
    # The same recorded directions: the same dataset, naming the run.
    assert second["directions"].digest == first["directions"].digest
    assert json.loads(second["directions"].source)["run_id"] == direction_run


def test_a_selection_logs_the_vectors_it_holds(screened, store):
    passed = screened.per_vector.loc[screened.per_vector["passed"] == "O", "case"].tolist()
    chosen = passed[:3]
    assert len(chosen) == 3
    sel = select(
        compose_app(
            "select",
            store,
            *SMALL,
            f"run_id={screened.run_id}",
            f"cases={chosen}",
            "name=lineage-test",
        )
    )
    client = _client(store)
    inputs = _inputs(client, sel.run_id)
    assert set(inputs) == {"selection"}
    held = inputs["selection"]
    rows = [list(screened.per_vector["case"]).index(c) for c in chosen]
    with tempfile.TemporaryDirectory() as tmp:  # the vectors as stored (as select reads them)
        z = np.load(run_file(client, screened.run_id, "latents.npy", tmp))[rows]
    assert held.digest == fingerprint.digest(z)[: lineage.DIGEST_CHARS]
    assert json.loads(held.profile)["cases"] == chosen
    assert json.loads(held.source)["run_id"] == screened.run_id
    assert held.name == f"selection-{held.digest[:12]}-from-{screened.run_id[:8]}"

    mv = client.get_model_version("lineage-test", sel.version)
    assert mv.tags["ohlora.dataset"] == held.name
    assert mv.tags["ohlora.dataset_digest"] == held.digest
    assert mv.source.startswith("models:/m-")  # the logged model the version was made from
    model = client.get_logged_model(mv.source.removeprefix("models:/"))
    (metric,) = [m for m in model.metrics if m.key == "n_selected"]
    assert metric.value == 3 and metric.dataset_digest == held.digest

    # Re-measuring the selection screens the very vectors it holds: given, not drawn.
    check = verify(compose_app("verify", store, "model=lineage-test/1", "tracking.progress=false"))
    given = _inputs(client, check.run_id)["candidates"]
    assert given.digest == held.digest
    assert json.loads(given.source)["given"] is True and json.loads(given.profile)["seed"] is None


def test_the_same_vectors_selected_from_two_runs_name_each_run(screened, store, make_cfg):
    """MLflow keeps one dataset record per name and digest, with the first source logged: two
    selections of the same vectors (from two runs of one measurement) each name their own run."""
    other = evaluate(make_cfg("cutoff.eyes=0.4", "cutoff.mouth=0.4", "cutoff.pose=0.2"))
    both = set(screened.per_vector.loc[screened.per_vector["passed"] == "O", "case"]) & set(
        other.per_vector.loc[other.per_vector["passed"] == "O", "case"]
    )
    chosen = sorted(both)[:2]
    client = _client(store)
    held = {}
    for run in (screened, other):
        sel = select(
            compose_app(
                "select",
                store,
                *SMALL,
                f"run_id={run.run_id}",
                f"cases={chosen}",
                "name=lineage-twice",
            )
        )
        held[run.run_id] = _inputs(client, sel.run_id)["selection"]
    first, second = held[screened.run_id], held[other.run_id]
    assert first.digest == second.digest  # the same vectors ...
    for run_id, dataset in held.items():  # ... each recorded as selected from its own run
        assert json.loads(dataset.source)["run_id"] == run_id
