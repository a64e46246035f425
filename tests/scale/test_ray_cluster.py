"""A 2-node Ray cluster (``ray.cluster_utils.Cluster``, 1 CPU a node): one worker lands on
each node, and the screening's per_vector.csv is the one measured in this process."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ohlora_eval.apps.screen import evaluate
from ohlora_eval.tracking import store as tracking

ray = pytest.importorskip("ray", reason="Ray missing: pip install -e '.[scale]'")
from ray.cluster_utils import Cluster  # noqa: E402

import ohlora_eval.pipeline.executor as executor_module  # noqa: E402


@pytest.fixture(scope="module")
def two_nodes():
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _csv(store: Path, run_id: str) -> bytes:
    client = MlflowClient(tracking.resolve_uri(None, store))
    return Path(client.download_artifacts(run_id, "per_vector.csv")).read_bytes()


def test_two_nodes_give_the_local_result(two_nodes, make_scale_cfg, scale_store, tmp_path):
    local = evaluate(make_scale_cfg(f"cache.dir={tmp_path / 'local'}"))
    seen: list[dict] = []

    class Watched(executor_module.RayExecutor):
        def start(self):
            super().start()
            seen.append(dict(self.places))

    real = executor_module.RayExecutor
    executor_module.RayExecutor = Watched
    try:
        far = evaluate(
            make_scale_cfg(
                f"cache.dir={tmp_path / 'ray'}",
                "execution=ray",
                f"execution.address={two_nodes.address}",
            )
        )
    finally:
        executor_module.RayExecutor = real
    nodes = {node for _, node in seen[0].values()}
    assert len(nodes) == 2, f"the workers did not spread over both nodes: {seen[0]}"
    assert far.metrics["measured_chunks"] == 12
    assert _csv(scale_store, far.run_id) == _csv(scale_store, local.run_id)
