"""The same command gives the same numbers (issue 32 item 8): a real-faces screening's
``per_vector.csv`` is the same bytes on any number of torch threads and landmark workers.

Torch's CPU kernels split a sum over threads from some count on (MKL's matrix products
at 4, oneDNN's convolutions of a small batch at 2), so the gradient fit, the gradient
field and the identity ResNet run on a fixed thread count (``pipeline.device.fixed_cpu_threads``).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from helpers import compose_app, real_faces_or_skip

from ohlora_eval.apps.screen import evaluate
from ohlora_eval.directions.gradient import fit_regressor, gradient_field
from ohlora_eval.directions.spec import GradientSpec

SMALL_RUN = [
    "experiment=real_faces",
    "sampling.n_vectors=4",
    "directions.n=400",
    "directions.gradient.epochs=2",
    "identity.scope=all",  # every vector's identity columns filled
    "tracking.grids.passed=0",
    "tracking.grids.best=0",
    "tracking.progress=false",
    "cache.enabled=false",
    "device=cpu",
]


@contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_the_gradient_fit_and_its_field_are_the_same_bits_on_any_thread_count():
    """MKL splits a product's inner sum (the batch of 256 of a weight gradient) from 4
    threads on; on a fixed count the regressor and its gradients are those of any machine."""
    rng = np.random.default_rng(0)
    mid = rng.standard_normal((600, 100)).astype(np.float32)
    scores = np.tanh(mid[:, :3].sum(1)).astype(np.float32)
    spec = GradientSpec(hidden=[256, 64], epochs=1)
    got = []
    for threads in (1, 4):
        with torch_threads(threads):
            model, mse = fit_regressor(mid, scores, spec, 0.1, seed=3)
            grads = gradient_field(model)(torch.from_numpy(mid[:40])).numpy()
            assert torch.get_num_threads() == threads  # the caller's count is left as it was
        params = np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
        got.append((params.tobytes(), grads.tobytes(), mse))
    assert got[0] == got[1]


def test_identity_descriptors_are_the_same_bits_on_any_thread_count():
    """oneDNN's convolutions of a few chips give other bits on 2 or 8 threads than on 1."""
    real_faces_or_skip()
    from ohlora_eval.models.generators.dcgan_digiface import DCGANFaceGenerator
    from ohlora_eval.models.identity.dlib_resnet import DlibResNetIdentity

    generator = DCGANFaceGenerator(device="cpu")
    with torch.inference_mode():
        faces = generator.synthesize(generator.sample_latents(64, 3), "z")[:6]
    model = DlibResNetIdentity(device="cpu")
    got = []
    for threads in (1, 2, 8):
        with torch_threads(threads):
            got.append(model.embed(faces).tobytes())
    assert got[0] == got[1] == got[2]


def test_a_real_faces_screening_is_the_same_bytes_on_any_threads_and_workers(tmp_path):
    """The whole command twice on new stores (its own direction fit each time): one torch
    thread and the landmarks in this process, then 4 threads (as on a 4-core machine) and
    3 landmark processes. ``per_vector.csv`` and ``per_image.csv`` are the same bytes."""
    real_faces_or_skip()

    def screen(name: str, n_threads: int, n_workers: int) -> dict[str, bytes]:
        store = tmp_path / name / "mlruns"
        cfg = compose_app("config", store, *SMALL_RUN, f"scorer.workers={n_workers}")
        with torch_threads(n_threads):
            evaluate(cfg)
        return {
            f: next((store / "artifacts").rglob(f)).read_bytes()
            for f in ("per_vector.csv", "per_image.csv")
        }

    one = screen("one", 1, 0)
    many = screen("many", 4, 3)
    assert one["per_image.csv"] == many["per_image.csv"]
    assert one["per_vector.csv"] == many["per_vector.csv"]
