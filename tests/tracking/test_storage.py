"""A run that re-uses a measurement stores no second copy of its latents and per-image
scores (nor its sheets): it points to the run that stores them, and every reader follows."""

from __future__ import annotations

from helpers import compose_app
from mlflow.tracking import MlflowClient

from ohlora_eval.apps.screen import evaluate
from ohlora_eval.apps.select import select
from ohlora_eval.tracking import store as tracking
from ohlora_eval.tracking.read_back import FILES_TAG


def _artifact_bytes(client: MlflowClient, run_id: str, path: str = "") -> int:
    total = 0
    for a in client.list_artifacts(run_id, path):
        total += _artifact_bytes(client, run_id, a.path) if a.is_dir else int(a.file_size or 0)
    return total


def test_a_rejudging_point_links_the_measurement_files(fresh_store):
    from helpers import composer

    make = composer(fresh_store)
    first = evaluate(make("cutoff.eyes=0.5", "cutoff.mouth=0.5", "cutoff.pose=0.3"))
    second = evaluate(make("cutoff.eyes=0.6", "cutoff.mouth=0.5", "cutoff.pose=0.3"))
    client = MlflowClient(tracking.resolve_uri(None, fresh_store))
    assert second.metrics["reused_chunks"] > 0
    names = {a.path for a in client.list_artifacts(second.run_id)}
    assert "latents.npy" not in names and "per_image.csv" not in names
    assert "per_vector.csv" in names
    assert client.get_run(second.run_id).data.tags[FILES_TAG] == first.run_id
    assert "latents.npy" in {a.path for a in client.list_artifacts(first.run_id)}
    # The second point adds a small part of the first's bytes.
    assert _artifact_bytes(client, second.run_id) < 0.25 * _artifact_bytes(client, first.run_id)
    # Readers follow the link: select records the vectors of the re-using run.
    passed = second.per_vector.loc[second.per_vector["passed"] == "O", "case"].tolist()[:2]
    cfg = compose_app("select", fresh_store, f"run_id={second.run_id}", f"cases={passed}")
    sel = select(cfg)
    assert sel.cases == passed


def test_the_local_review_copy_forwards_to_the_logged_page(fresh_store):
    from helpers import composer

    res = evaluate(composer(fresh_store)())
    local = fresh_store / "review" / res.run_id / "index.html"
    text = local.read_text()
    target = text.split("url=", 1)[1].split('"', 1)[0]
    page = (local.parent / target).resolve()
    assert page.name == "index.html" and page.parent.name == "review" and page.is_file()
    assert res.run_id in str(page) and len(text) < 1000
