"""Screening on a real local Ray (2 CPU workers): the same per_vector.csv as in one process,
whatever the order chunks come back in, resuming from the cache, and surviving a worker
killed mid-run. The 2-node cluster is in test_ray_cluster.py (it needs its own Ray)."""

from __future__ import annotations

import os
import signal
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ohlora_eval.apps import execution
from ohlora_eval.apps.build import edit_setup, preflight
from ohlora_eval.apps.screen import evaluate
from ohlora_eval.errors import ConfigError
from ohlora_eval.pipeline.context import MeasureContext
from ohlora_eval.pipeline.measure import measure
from ohlora_eval.tracking import store as tracking

ray = pytest.importorskip("ray", reason="Ray missing: pip install -e '.[scale]'")
from ohlora_eval.pipeline.executor import RayExecutor  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One Ray of 2 CPUs for the module (starting one costs seconds on a 2-core CPU)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def per_vector_csv(store: Path, run_id: str) -> bytes:
    client = MlflowClient(tracking.resolve_uri(None, store))
    return Path(client.download_artifacts(run_id, "per_vector.csv")).read_bytes()


@pytest.fixture(scope="module")
def local_run(make_scale_cfg, scale_store, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache_local")
    run = evaluate(make_scale_cfg(f"cache.dir={cache}"))
    return run, per_vector_csv(scale_store, run.run_id)


def test_ray_gives_the_local_per_vector_csv(make_scale_cfg, scale_store, local_run, tmp_path):
    run, local_csv = local_run
    ray_run = evaluate(make_scale_cfg(f"cache.dir={tmp_path}", "execution=ray"))  # 2 workers
    assert ray_run.metrics["measured_chunks"] == 12 and ray_run.metrics["reused_chunks"] == 0
    assert np.array_equal(ray_run.scores, run.scores)
    assert per_vector_csv(scale_store, ray_run.run_id) == local_csv


def _setup(make_scale_cfg, scale_store):
    """The models, directions and hooks of a small screening, as screen builds them."""
    from ohlora_eval import review
    from ohlora_eval.pipeline.model_calls import group_fn

    cfg = make_scale_cfg()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    checked = preflight(cfg, resolved)
    uri, _ = tracking.setup(cfg.tracking.experiment, cfg.tracking.uri, cfg.tracking.root)
    setup = edit_setup(cfg, checked, tracking.StoreRef(uri, cfg.tracking.root))
    latents = setup.generator.sample_latents(cfg.sampling.n_vectors, cfg.sampling.seed)
    stats = review.image_stats(checked.review)
    build = partial(
        execution.worker_build,
        resolved,
        setup.directions,
        setup.grid,
        setup.measure_settings,
        checked.review,
    )
    return setup, latents, group_fn(setup), stats, build


class ReversedAndKilled(RayExecutor):
    """Sends the chunks last first (so they come back in another order than local), and
    SIGKILLs one worker's process as soon as the first chunk is back: the chunks it holds
    (each worker holds two) are lost mid-measurement and must be measured again."""

    def run(self, jobs):
        self.order, self.victim = [], None
        for out in super().run(list(jobs)[::-1]):
            if self.victim is None:
                self.victim = next(n for n in self.places if n != out[3])
                os.kill(self.places[self.victim][0], signal.SIGKILL)
            self.order.append(out[0])
            yield out


def test_order_and_a_killed_worker_do_not_change_the_numbers(make_scale_cfg, scale_store):
    setup, latents, groups_of, stats, build = _setup(make_scale_cfg, scale_store)
    chunk = 4
    local = measure(setup, latents, chunk, groups_of=groups_of, image_stats=stats)
    with ReversedAndKilled(build, workers=2, restarts=1) as ex:
        on_ray = MeasureContext(executor=ex)
        got = measure(setup, latents, chunk, groups_of=groups_of, image_stats=stats, context=on_ray)
    assert ex.order != sorted(ex.order)  # they really came back in another order
    assert ex.stats.retried >= 1, "no chunk was lost: the worker was not killed mid-run"
    assert sum(ex.stats.chunks.values()) == 12 and ex.stats.replaced == 1
    # (the victim may have finished one chunk whose result was already on its way when it was
    # killed: that one counts; the ones it still held are the retried ones)
    assert np.array_equal(got.scores, local.scores)
    assert got.groups == local.groups
    assert got.extras.keys() == local.extras.keys()
    for k in local.extras:
        assert np.array_equal(got.extras[k], local.extras[k], equal_nan=True)


def test_every_worker_dead_fails_the_run(make_scale_cfg, scale_store):
    setup, latents, groups_of, stats, build = _setup(make_scale_cfg, scale_store)

    class KillsAll(RayExecutor):
        def start(self):
            super().start()
            for pid, _ in self.places.values():
                os.kill(pid, signal.SIGKILL)

    with pytest.raises(RuntimeError, match="every Ray worker died"):
        with KillsAll(build, workers=1, restarts=0) as ex:
            measure(
                setup,
                latents,
                4,
                groups_of=groups_of,
                image_stats=stats,
                context=MeasureContext(executor=ex),
            )


def test_ray_resumes_from_the_cache(make_scale_cfg, scale_store, local_run, tmp_path):
    """Chunks already measured are read here and not sent out; the rest go to the workers."""
    first = evaluate(make_scale_cfg(f"cache.dir={tmp_path}"))
    key = MlflowClient(tracking.resolve_uri(None, scale_store)).get_run(first.run_id)
    chunks = sorted((tmp_path / key.data.tags["ohlora.measure_key"]).glob("chunk_*.npz"))
    for c in chunks[3:8]:
        c.unlink()
    again = evaluate(
        make_scale_cfg(f"cache.dir={tmp_path}", "execution=ray", "execution.workers=1")
    )
    assert again.metrics["reused_chunks"] == 7 and again.metrics["measured_chunks"] == 5
    assert per_vector_csv(scale_store, again.run_id) == local_run[1]


@pytest.mark.parametrize(
    "override, key",
    [
        ("execution.workers=0", "execution.workers"),
        ("execution.cpus_per_worker=abc", "execution.cpus_per_worker"),
        ("execution.address=nowhere", "execution.address"),
    ],
)
def test_bad_execution_settings_name_the_key(make_scale_cfg, override, key):
    """A wrong value is refused by the typed config: a wrong type while composing (the one
    line the command prints names the key), a wrong range before the run opens."""
    from hydra.errors import ConfigCompositionException

    from ohlora_eval.apps.cli import config_error_line

    with pytest.raises((ConfigError, ConfigCompositionException)) as err:
        evaluate(make_scale_cfg("execution=ray", override))
    line = config_error_line(err.value)
    assert line.startswith(key) and "\n" not in line, line


# -- direction fitting: the sampled faces scored on the workers ----------------------------


def test_fit_faces_on_ray_are_the_local_faces(make_scale_cfg):
    """A fit's faces measured as Oh-LoRA did (dropout on, seeded by the batch's position; a
    JPEG round trip), in 5 batches sent last first to 2 workers, one of them killed: the
    mid vectors and scores are the ones measured in this process."""
    from ohlora_eval.pipeline.measure_settings import MeasureSettings
    from ohlora_eval.pipeline.sample import FaceSetup, sample_and_score

    resolved = OmegaConf.to_container(make_scale_cfg(), resolve=True)
    as_published = MeasureSettings(scorer_mode="train", round_trip="jpeg")
    generator, scorer, _ = execution.models(resolved)
    faces = FaceSetup(generator, scorer, resolved["layer"], as_published)
    z, mid, scores = sample_and_score(faces, 1500, 11, batch=300)
    build = partial(execution.face_build, resolved, as_published)
    with ReversedAndKilled(build, workers=2, restarts=1) as ex:
        on_ray = MeasureContext(executor=ex)
        z2, mid2, scores2 = sample_and_score(faces, 1500, 11, batch=300, context=on_ray)
    assert ex.order != sorted(ex.order) and ex.stats.retried >= 1
    assert sum(ex.stats.chunks.values()) == 5
    assert torch.equal(z2, z) and torch.equal(mid2, mid.cpu())
    assert scores2.keys() == scores.keys()
    for p in scores:
        assert np.array_equal(scores2[p], scores[p]), p
    # the dropout draws really depend on the batch's position (else the check above is weak)
    _, _, shifted = sample_and_score(faces, 1500, 11, batch=500)
    assert not np.array_equal(shifted["eyes"], scores["eyes"])


def _directions_json(store: Path, run_id: str) -> bytes:
    client = MlflowClient(tracking.resolve_uri(None, store))
    return Path(client.download_artifacts(run_id, "directions.json")).read_bytes()


@pytest.mark.slow  # the faces' path on Ray: test_fit_faces_on_ray_are_the_local_faces (faster)
def test_find_directions_and_a_screening_fit_on_ray_as_here(tmp_path):
    """find_directions with execution=ray logs the directions it logs in one process, and a
    screening that must fit its directions first fits them on its workers too, the same."""
    from hydra import compose, initialize_config_dir

    from ohlora_eval.apps.find_directions import find_directions

    from .scale_common import CONF, SMALL

    fit = [o for o in SMALL if o.startswith(("directions.", "device="))]
    fit = [o for o in fit if not o.startswith("directions.n=")] + ["directions.n=2500"]
    runs = {}
    for kind in ("local", "ray"):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(
                "find_directions",
                overrides=[*fit, f"tracking.root={tmp_path / kind}", f"execution={kind}"],
            )
        runs[kind] = find_directions(cfg)
    local = _directions_json(tmp_path / "local", runs["local"])
    assert _directions_json(tmp_path / "ray", runs["ray"]) == local
    on = MlflowClient(tracking.resolve_uri(None, tmp_path / "ray")).get_run(runs["ray"])
    assert on.data.tags["faces_scored_on"].startswith("face batches per worker w")

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                *SMALL,
                "directions.n=2500",
                "sampling.n_vectors=8",
                f"tracking.root={tmp_path / 'screen'}",
                f"cache.dir={tmp_path / 'cache'}",
                "execution=ray",
            ],
        )
    run = evaluate(cfg)
    tags = MlflowClient(tracking.resolve_uri(None, tmp_path / "screen")).get_run(run.run_id)
    fitted = tags.data.tags["directions.run_id"]
    assert _directions_json(tmp_path / "screen", fitted) == local
    on = MlflowClient(tracking.resolve_uri(None, tmp_path / "screen")).get_run(fitted)
    assert on.data.tags["faces_scored_on"].startswith("face batches per worker w")
