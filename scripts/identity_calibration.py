"""How far apart dlib's descriptors put *different* faces of the real-faces generator: the
unedited faces of the first N vectors a real-faces screening draws (sampling.seed=0), every
pair of them. The distances of edits from their own face (a run's identity_max) read
against this: a distance near the typical one between two random faces is another person.

    PYTHONPATH=. python scripts/identity_calibration.py [--vectors 1000]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import ohlora_eval.apps  # noqa: F401 - registers the config schemas
from ohlora_eval.apps.config import CONFIG_DIR
from ohlora_eval.pipeline.identity import pairwise


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vectors", type=int, default=1000)
    a = p.parse_args()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=real_faces", "device=cpu"])
    generator, model = instantiate(cfg.generator), instantiate(cfg.identity)
    z = generator.sample_latents(a.vectors, int(cfg.sampling.seed))
    with torch.inference_mode():
        faces = torch.cat(
            [generator.synthesize(z[i : i + 256], "z") for i in range(0, a.vectors, 256)]
        )
    got = model.embed_detailed(faces)
    ok = np.isfinite(got.vectors).all(axis=1)
    d = pairwise(got.vectors[ok])[np.triu_indices(int(ok.sum()), 1)]
    qs = [0.01, 0.05, 0.1, 0.25, 0.5]
    print(f"{int(ok.sum())} of {a.vectors} faces embedded; {len(d):,} pairs of different faces")
    print("quantiles: " + ", ".join(f"{q:.0%} {np.quantile(d, q):.3f}" for q in qs))
    for t in (0.4, 0.5, 0.6):
        print(f"pairs closer than {t}: {np.mean(d < t):.1%}")


if __name__ == "__main__":
    main()
