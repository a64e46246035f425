"""What a run was made from, as MLflow datasets (``mlflow.log_input``): the runs table's
Datasets column then shows it, and ``run.inputs.dataset_inputs`` reads it back.

- a screening's candidate vectors (context ``candidates``);
- the directions it moved them along, when they are recorded (context ``directions``);
- the vectors a selection holds (context ``selection``, in the run that logs the model,
  and linked to that logged model through its ``n_selected`` metric).

Nothing is uploaded again: a dataset here is a name, a digest, a source (where the data is:
the seed that draws the vectors, the direction run, the source run and cases) and a profile
(count, dimension, the full SHA-256). The digest is ``pipeline.fingerprint.digest`` of the
float32 latents (the same for ``latents.npy`` read back), cut to ``DIGEST_CHARS`` (MLflow
keeps at most 36); the dataset's name carries its first 12 characters (a selection's also
the first 8 of the run it was selected from: ``selection-<digest>-from-<run>``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
from mlflow.entities import Dataset, DatasetInput, InputTag, Run
from mlflow.tracking import MlflowClient

from ohlora_eval.pipeline import fingerprint
from ohlora_eval.tracking import store

if TYPE_CHECKING:  # annotations only: a selection's registry loads no torch
    from ohlora_eval.pipeline.directions import Directions

CANDIDATES = "candidates"
DIRECTIONS = "directions"
SELECTION = "selection"
CONTEXT_TAG = "mlflow.data.context"  # MLflow's input tag for a dataset's role
SOURCE_TYPE = "ohlora_eval"
DIGEST_CHARS = 32


def latents_digest(latents: Any) -> str:
    """The candidates' digest: of a float32 array, or of ``SeededLatents`` block by block
    (the same bytes, so the same digest as ``np.load`` of the run's ``latents.npy``)."""
    if not hasattr(latents, "blocks"):
        latents = np.ascontiguousarray(np.asarray(latents, dtype=np.float32))
    return fingerprint.digest(latents)[:DIGEST_CHARS]


def _dataset(
    kind: str, digest: str, source: Mapping[str, Any], profile: Mapping, origin: str = ""
) -> Dataset:
    """MLflow keeps one record per name and digest in an experiment, with the source of the
    first run that logged it: where the same vectors can come from several places (a
    selection, from any run that measured them), ``origin`` goes into the name so that each
    place has its own record and its source stays true."""
    return Dataset(
        name=f"{kind}-{digest[:12]}" + (f"-{origin}" if origin else ""),
        digest=digest,
        source_type=SOURCE_TYPE,
        source=json.dumps(dict(source), sort_keys=True, default=str),
        profile=json.dumps(dict(profile), sort_keys=True, default=str),
    )


def model_name(model: object) -> str:
    """A generator as a dataset's source names it: class and weights id."""
    return f"{type(model).__qualname__} ({getattr(model, 'weights_id', 'unknown')})"


def candidates_dataset(latents: Any, seed: int | None, generator: str) -> Dataset:
    """The vectors a screening judges: drawn from ``seed`` by ``generator``, or given
    (``seed`` None: a z-vector file, a recorded selection re-measured)."""
    digest = latents_digest(latents)
    n, dim = (int(x) for x in latents.shape)
    drawn = {"generator": generator, "seed": seed} if seed is not None else {"given": True}
    source = {**drawn, "count": n, "file": "latents.npy of the run that measured them"}
    profile = {"count": n, "dim": dim, "seed": seed, "generator": generator, "digest": digest}
    return _dataset(CANDIDATES, digest, source, profile)


def directions_dataset(directions: Directions) -> Dataset | None:
    """The directions as a dataset (digest of ``Directions.identity``: vectors and regressor
    weights bit for bit), or None when they cannot be fingerprinted."""
    identity = directions.identity()
    if "uncacheable" in identity:
        return None
    digest = fingerprint.digest(identity)[:DIGEST_CHARS]
    source = {"run_id": directions.run_id, "source": directions.source}
    profile = {
        "run_id": directions.run_id,
        "layer": directions.layer,
        "dim": directions.dim,
        "method": directions.method,
        "digest": digest,
    }
    return _dataset(DIRECTIONS, digest, source, profile)


def _input(dataset: Dataset, context: str) -> DatasetInput:
    return DatasetInput(dataset, tags=[InputTag(CONTEXT_TAG, context)])


def _log_inputs(inputs: list[DatasetInput]) -> tuple[MlflowClient, str]:
    """``inputs`` into the active run; the client and the run's id, for more."""
    run_id = mlflow.active_run().info.run_id
    client = MlflowClient(mlflow.get_tracking_uri())
    store.retry(client.log_inputs, run_id, datasets=inputs)
    return client, run_id


def log_screening_inputs(
    latents: Any, directions: Directions, seed: int | None, generator: object
) -> None:
    """Into the active run: its candidates (drawn by ``generator`` from ``seed``; None: given
    vectors), and its directions when they are recorded (a direction run, or files)."""
    inputs = [_input(candidates_dataset(latents, seed, model_name(generator)), CANDIDATES)]
    found = directions_dataset(directions)
    if found is not None:
        inputs.append(_input(found, DIRECTIONS))
    _log_inputs(inputs)


def log_selection(
    vectors: np.ndarray, cases: Sequence[int], source_run_id: str, model_id: str | None
) -> dict[str, str]:
    """Into the active run (the one logging the selection's model): the chosen vectors as a
    dataset, linked to the logged model ``model_id`` through its ``n_selected`` metric. The
    model version's tags to add: {"ohlora.dataset": name, "ohlora.dataset_digest": digest}."""
    digest = latents_digest(vectors)
    n, dim = (int(x) for x in np.shape(vectors))
    cases = [int(c) for c in cases]
    source = {"run_id": source_run_id, "cases": cases, "file": "selection/ohlora_z_vectors.csv"}
    profile = {"count": n, "dim": dim, "cases": cases, "digest": digest}
    dataset = _dataset(SELECTION, digest, source, profile, origin=f"from-{source_run_id[:8]}")
    client, run_id = _log_inputs([_input(dataset, SELECTION)])
    if model_id:  # the logged model's metric names the dataset (the client's call: the fluent
        # one would also log the model as an input of the run that made it)
        store.retry(
            client.log_metric,
            run_id,
            "n_selected",
            float(n),
            model_id=model_id,
            dataset_name=dataset.name,
            dataset_digest=dataset.digest,
        )
    return {"ohlora.dataset": dataset.name, "ohlora.dataset_digest": digest}


def dataset_of(run: Run, context: str) -> Dataset | None:
    """The dataset ``run`` logged with ``context`` (the last one, if several), or None."""
    found = None
    for item in run.inputs.dataset_inputs if run.inputs else []:
        if any(t.key == CONTEXT_TAG and t.value == context for t in item.tags):
            found = item.dataset
    return found


def log_inputs_of(source: Run) -> None:
    """Into the active run: the datasets ``source`` logged (a re-judge judges the source
    run's candidates with its directions, so the runs table shows the same lineage)."""
    items = source.inputs.dataset_inputs if source.inputs else []
    if items:
        _log_inputs(list(items))
