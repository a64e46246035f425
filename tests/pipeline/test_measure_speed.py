"""The measuring step's work plan and speed switches: steps sized in images, each model padded
to its own multiple, scores copied once, worker threads, precision/layout/compile switches in
the measurement key, and the CUDA exactness flags (set and restored; a no-op on a CPU)."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

from ohlora_eval.models.generators.synthetic import SyntheticFaceGenerator
from ohlora_eval.models.scorers.synthetic import SyntheticScorer
from ohlora_eval.pipeline import device as dev
from ohlora_eval.pipeline.cache import measurement_key
from ohlora_eval.pipeline.context import MeasureContext
from ohlora_eval.pipeline.directions import ALL_GROUPS, Directions
from ohlora_eval.pipeline.edit import EditSetup, grid_points
from ohlora_eval.pipeline.measure import measure, measure_chunk
from ohlora_eval.pipeline.measure_settings import MeasureSettings
from ohlora_eval.pipeline.model_calls import step_vectors
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES

GRID = {"eyes": [-1.2, 1.2], "mouth": [-1.8, 0.0, 1.8], "pose": [-1.2, 0.0, 1.2]}  # 18 images


def _directions(dim: int, seed: int = 0) -> Directions:
    gen = torch.Generator().manual_seed(seed)
    vectors = {}
    for p in CORE_PROPERTIES:
        v = torch.randn(dim, generator=gen)
        vectors[p] = {ALL_GROUPS: (v / v.norm()).numpy()}
    return Directions(
        layer="w", dim=dim, vectors=vectors, method=dict.fromkeys(CORE_PROPERTIES, "random")
    )


@pytest.fixture(scope="module")
def synthetic_setup() -> EditSetup:
    generator = SyntheticFaceGenerator(resolution=32)
    scorer = SyntheticScorer(resolution=32, calibration_n=200)
    return EditSetup(generator, scorer, _directions(512), grid_points(GRID), "w")


class Recorder:
    """A fake model pair that records the rows of every call (images are tiny constants)."""

    def __init__(self, batch: int, multiple: int, device: str = "cpu") -> None:
        self.batch_size, self.pad_multiple, self.device = batch, multiple, torch.device(device)
        self.calls: list[int] = []


class FakeGenerator(Recorder):
    latent_dim, layers, mid_dims = 4, ("w",), {"w": 4}

    def sample_latents(self, n, seed):
        return torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))

    def to_mid(self, z, layer):
        return z.float()

    def synthesize(self, mid, layer):
        self.calls.append(mid.shape[0])
        return mid.sum(1)[:, None, None, None].expand(-1, 3, 2, 2).clone()


class FakeScorer(Recorder):
    properties = CORE_PROPERTIES

    def score(self, images):
        self.calls.append(images.shape[0])
        x = images.mean((1, 2, 3))
        return {"eyes": x, "mouth": 2 * x, "pose": -x}


def _fake_setup(g_mult: int, s_mult: int) -> EditSetup:
    generator, scorer = FakeGenerator(g_mult, g_mult), FakeScorer(s_mult, s_mult)
    return EditSetup(generator, scorer, _directions(4), grid_points(GRID), "w")


def test_steps_are_sized_in_images_and_keep_the_cpu_plan():
    gen, scorer = FakeGenerator(256, 64), FakeScorer(512, 64)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    # A CPU step is about the generator's batch_size images, as before: 256 // 50 = 5.
    assert step_vectors(40, 50, gen, scorer, cpu) == 5
    assert step_vectors(3, 50, gen, scorer, cpu) == 3  # never more than the chunk
    # A GPU step holds thousands of images, not one vector of 50.
    gpu_gen, gpu_scorer = FakeGenerator(128, 128), FakeScorer(256, 256)
    k = step_vectors(400, 50, gpu_gen, gpu_scorer, cuda)
    assert k * 50 >= 1024
    rows = k * 50
    waste = (-(-rows // 128) * 128 + -(-rows // 256) * 256) / rows
    assert waste < 2.1  # at most 5% padding on average per model, vs 2.5x for one vector


def test_each_model_is_padded_to_its_own_multiple(synthetic_setup):
    setup = _fake_setup(16, 48)  # lcm 48: the old joint padding would pad the generator to 48
    z = setup.generator.sample_latents(3, 0)
    scores, _, _ = measure_chunk(setup, z)
    gen_calls, scorer_calls = setup.generator.calls, setup.scorer.calls
    assert gen_calls and all(c % 16 == 0 for c in gen_calls)
    assert scorer_calls and all(c % 48 == 0 for c in scorer_calls)
    assert sum(gen_calls) < sum(scorer_calls)  # the generator did not pay for the scorer
    assert scores.shape == (3, 18, 3) and scores.dtype == np.float32


def test_step_size_does_not_change_the_numbers(synthetic_setup, monkeypatch):
    z = synthetic_setup.generator.sample_latents(6, 3)
    base, _, _ = measure_chunk(synthetic_setup, z)
    import ohlora_eval.pipeline.measure as measure_module

    monkeypatch.setattr(measure_module, "step_vectors", lambda v, *a: 1)
    one_by_one, _, _ = measure_chunk(synthetic_setup, z)
    assert np.array_equal(base, one_by_one)


@pytest.mark.parametrize("trip", ["png", "jpeg"])
def test_round_trip_on_the_worker_thread_gives_the_sequential_result(synthetic_setup, trip):
    pytest.importorskip("cv2") if trip == "jpeg" else None
    from ohlora_eval.pipeline.fidelity import round_trip
    from ohlora_eval.pipeline.model_calls import score, synthesize, to_mid

    settings = MeasureSettings(round_trip=trip).checked()
    setup = dataclasses.replace(synthetic_setup, measure_settings=settings)
    z = setup.generator.sample_latents(3, 5)
    got, _, _ = measure_chunk(setup, z)
    from ohlora_eval.pipeline.edit import edited_mids

    mid = to_mid(setup.generator, z, "w")
    images = synthesize(
        setup.generator, edited_mids(mid, setup.directions.for_vectors(mid), setup.grid), "w"
    )
    s = score(setup.scorer, round_trip(images, settings))
    want = np.stack([s[p].numpy() for p in CORE_PROPERTIES], -1).reshape(3, -1, 3)
    assert np.array_equal(got, want)


def test_cache_writes_on_the_worker_match_and_their_errors_surface(synthetic_setup, tmp_path):
    from ohlora_eval.pipeline.cache import MeasurementCache

    z = synthetic_setup.generator.sample_latents(5, 1)
    plain = measure(synthetic_setup, z, 2)
    cache = MeasurementCache(tmp_path, "k", {"t": 1})
    first = measure(synthetic_setup, z, 2, context=MeasureContext(cache=cache))
    assert len(list(cache.dir.glob("chunk_*.npz"))) == 3  # every write finished
    again = measure(synthetic_setup, z, 2, context=MeasureContext(cache=cache))
    assert again.reused == 3 and again.computed == 0
    assert np.array_equal(plain.scores, first.scores)
    assert np.array_equal(plain.scores, again.scores)

    class Broken(MeasurementCache):
        def save(self, lo, hi, arrays):
            raise OSError("disk full")

    broken = MeasureContext(cache=Broken(tmp_path, "b", {"t": 2}))
    with pytest.raises(OSError, match="disk full"):
        measure(synthetic_setup, z, 2, context=broken)


def test_the_local_executor_takes_each_chunk_when_the_last_is_done(synthetic_setup, tmp_path):
    """measure hands its chunks to the executor as a lazy job list: a chunk's job (its
    latents) is made only when the last one is done, cached chunks are never handed out,
    and an explicit LocalExecutor gives the numbers of the default."""
    from ohlora_eval.pipeline.cache import MeasurementCache
    from ohlora_eval.pipeline.executor import LocalExecutor
    from ohlora_eval.pipeline.measure import ScreenState

    class Watched(LocalExecutor):
        def run(self, jobs):
            self.taken = []

            def watch():
                for job in jobs:
                    self.taken.append(job.lo)
                    yield job

            for done in super().run(watch()):
                assert self.taken[-1] == done[0], "a job was made before the last was done"
                yield done

    z = synthetic_setup.generator.sample_latents(7, 1)
    plain = measure(synthetic_setup, z, 2)
    cache = MeasurementCache(tmp_path, "k", {"t": 1})
    measure(synthetic_setup, z[:2], 2, context=MeasureContext(cache=cache))  # chunk 0 cached
    ex = Watched(ScreenState(synthetic_setup))
    got = measure(synthetic_setup, z, 2, context=MeasureContext(executor=ex, cache=cache))
    assert ex.taken == [2, 4, 6] and ex.stats.chunks == {"here": 3}
    assert (got.reused, got.computed) == (1, 3)
    assert np.array_equal(got.scores, plain.scores)


def test_images_per_second_counts_only_what_was_measured_now(synthetic_setup, tmp_path):
    """A run whose chunks all come from the cache measured nothing: it says so, and logs
    no images/s (the cached chunks' old seconds are not a speed of this run); a half-cached
    run's figure counts only its own chunks."""
    from ohlora_eval.pipeline.cache import MeasurementCache

    m = synthetic_setup.m
    z = synthetic_setup.generator.sample_latents(6, 1)
    cache = MeasurementCache(tmp_path, "k", {"t": 1})
    half = MeasurementCache(tmp_path, "h", {"t": 1})
    first = measure(synthetic_setup, z, 2, context=MeasureContext(cache=cache))
    assert first.metrics(m)["measured_images"] == 6 * m
    # One definition of images/s: images measured now over the measuring step's wall time.
    assert first.measured_seconds <= first.wall_seconds
    assert first.metrics(m)["images_per_sec"] == pytest.approx(6 * m / first.wall_seconds)
    assert first.metrics(m)["measure_wall_seconds"] == first.wall_seconds
    assert first.speed_line(m).startswith(f"{6 * m:,} images generated and scored at")
    assert "the measuring step's wall time" in first.speed_line(m)
    again = measure(synthetic_setup, z, 2, context=MeasureContext(cache=cache))
    assert np.isnan(again.metrics(m)["images_per_sec"]) and again.metrics(m)["measured_images"] == 0
    assert again.speed_line(m) == "no images measured (all 3 chunks re-used from the cache)"
    measure(synthetic_setup, z[:2], 2, context=MeasureContext(cache=half))  # chunk 0 cached
    part = measure(synthetic_setup, z, 2, context=MeasureContext(cache=half))
    assert part.reused == 1 and part.metrics(m)["measured_images"] == 4 * m
    assert part.measured_seconds < part.compute_seconds  # the cached chunk's seconds left out
    assert part.speed_line(m).endswith("; 1 of 3 chunks re-used from the cache")


def test_speed_switches_are_checked_and_default_off():
    s = MeasureSettings().checked()
    assert (s.precision, s.channels_last, s.compile, s.tf32, s.deterministic) == (
        "fp32",
        False,
        False,
        False,
        None,
    )
    assert s.speed_identity() is None and s.identity() is None
    with pytest.raises(ValueError, match=r"measure\.precision='fp8'"):
        MeasureSettings(precision="fp8").checked()
    with pytest.raises(ValueError, match=r"measure\.channels_last"):
        MeasureSettings(channels_last="yes").checked()
    with pytest.raises(ValueError, match=r"measure\.deterministic"):
        MeasureSettings(deterministic="auto").checked()
    bf16 = MeasureSettings(precision="bf16", channels_last=True).checked()
    assert bf16.speed_identity() == {"precision": "bf16", "channels_last": True}
    # A direction fit (float32 always) is not told about the speed switches.
    assert bf16.identity() is None


def test_a_switch_that_changes_numbers_changes_the_measurement_key(synthetic_setup):
    z = synthetic_setup.generator.sample_latents(2, 0)
    keys = set()
    for settings in (
        MeasureSettings(),
        MeasureSettings(precision="bf16"),
        MeasureSettings(precision="fp16"),
        MeasureSettings(channels_last=True),
        MeasureSettings(compile=True),
        MeasureSettings(tf32=True),
        MeasureSettings(deterministic=False),
    ):
        setup = dataclasses.replace(synthetic_setup, measure_settings=settings)
        keys.add(measurement_key(setup, z, 8, {})[0])
    assert len(keys) == 7
    same = measurement_key(synthetic_setup, z, 8, {})[0]
    assert (
        same
        == measurement_key(
            dataclasses.replace(
                synthetic_setup, measure_settings=MeasureSettings(deterministic=None)
            ),
            z,
            8,
            {},
        )[0]
    )


def test_bf16_autocast_runs_on_cpu_and_moves_the_scores_a_little(synthetic_setup):
    z = synthetic_setup.generator.sample_latents(3, 2)
    fp32, _, _ = measure_chunk(synthetic_setup, z)
    setup = dataclasses.replace(synthetic_setup, measure_settings=MeasureSettings(precision="bf16"))
    bf16, _, _ = measure_chunk(setup, z)
    assert np.isfinite(bf16).all()
    diff = np.abs(bf16 - fp32)
    assert diff.max() > 0  # autocast really ran ...
    assert np.median(diff) < 0.25  # ... and the scores (about N(0, 1)) are still near


def test_precision_errors_name_the_setting():
    with pytest.raises(ValueError, match=r"measure\.precision"):
        dev.check_precision("int4", torch.device("cpu"))
    dev.check_precision("bf16", torch.device("cpu"))  # supported by every recent torch


def test_exactness_flags_are_a_no_op_on_cpu():
    before = dev.cuda_flags()
    with dev.exact_cuda(
        torch.device("cpu"), deterministic=True, precision="fp32", tf32=True
    ) as applied:
        assert applied == {}
        assert dev.cuda_flags() == before


def test_exactness_flags_on_cuda_are_set_and_restored(monkeypatch):
    # Setting these flags touches no GPU, so the CUDA branch can be checked on a CPU.
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)  # set when CUDA is used
    before = dev.cuda_flags()
    torch.backends.cudnn.benchmark = True
    try:
        with dev.exact_cuda(
            torch.device("cuda"), deterministic=None, precision="fp32", tf32=False
        ) as applied:
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == dev.CUBLAS_WORKSPACE
            assert applied == {"deterministic": True, "tf32": False}
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
            assert not torch.backends.cuda.matmul.allow_tf32
            assert not torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.benchmark  # restored
        with dev.exact_cuda(
            torch.device("cuda"), deterministic=None, precision="bf16", tf32=True
        ) as applied:
            assert applied == {"deterministic": False, "tf32": True}
            assert not torch.are_deterministic_algorithms_enabled()
            assert torch.backends.cuda.matmul.allow_tf32
    finally:
        dev.restore_cuda_flags(before)
    assert dev.cuda_flags() == before


def test_deterministic_cuda_needs_the_cublas_workspace(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":0:0")
    before = dev.cuda_flags()
    with (
        pytest.raises(ValueError, match="CUBLAS_WORKSPACE_CONFIG=:4096:8"),
        dev.exact_cuda(torch.device("cuda"), deterministic=True, precision="fp32", tf32=False),
    ):
        pass
    assert dev.cuda_flags() == before


def test_real_scorer_speed_hook_and_device_scores():
    from ohlora_eval.models.scorers.ohlora_cnn import OhLoRACNNScorer

    scorer = OhLoRACNNScorer(checkpoint=None, device="cpu", allow_random_init=True)
    images = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    plain = scorer.score_matrix(images)
    on_device = scorer.score_on_device(images)
    assert torch.equal(torch.stack([on_device[p] for p in scorer.properties], 1), plain)
    assert scorer.set_speed(channels_last=True) == ["channels_last"]
    assert scorer.speed == {"channels_last": True, "compile": False}
    assert any(
        p.dim() == 4
        and p.is_contiguous(memory_format=torch.channels_last)
        and not p.is_contiguous()
        for p in scorer.network.parameters()
    )
    nhwc = scorer.score_matrix(images)
    assert torch.allclose(nhwc, plain, rtol=1e-4, atol=1e-4)
    assert scorer.set_speed() == []
    assert torch.equal(scorer.score_matrix(images), plain)


def test_measure_restores_the_models_speed_state():
    setup = _fake_setup(8, 8)

    class Hooked(FakeScorer):
        speed = {"channels_last": False, "compile": False}

        def set_speed(self, *, channels_last=False, compile=False):
            self.speed = {"channels_last": channels_last, "compile": compile}
            self.seen.append(dict(self.speed))
            return [k for k, v in self.speed.items() if v]

    scorer = Hooked(8, 8)
    scorer.seen = []
    setup = dataclasses.replace(
        setup, scorer=scorer, measure_settings=MeasureSettings(channels_last=True)
    )
    measure(setup, setup.generator.sample_latents(2, 0), 1)
    assert {"channels_last": True, "compile": False} in scorer.seen
    assert scorer.speed == {"channels_last": False, "compile": False}
    assert scorer.calls  # it measured
