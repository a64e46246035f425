"""The comparison baseline: the original Oh-LoRA v3.1 test's way, one image at a time
through a JPEG file (``original_style_scores``), timed as variant (b) / "loop".

Kept deliberately unbatched and unshared with the pipeline: it is what the
batched, in-memory pipeline is measured against, so it must stay the original's
arithmetic (8-bit conversion, JPEG round trip, one ``score`` call per image).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ohlora_eval.pipeline.edit import EditSetup
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES

# The original wrote JPEGs with OpenCV's ``cv2.imwrite`` defaults: quality 95, 4:2:0 chroma.
JPEG_QUALITY = 95
JPEG_SUBSAMPLING = "4:2:0"
JPEG_NOTE = f"PIL, quality {JPEG_QUALITY}, {JPEG_SUBSAMPLING}"


def to_uint8_hwc(image: Tensor) -> np.ndarray:
    """(1, 3, H, W) float image in [-1, 1] -> (H, W, 3) uint8, with the original's arithmetic.

    genforce ``postprocess_image``: float64 ``(x + 1) * 127.5 + 0.5`` clipped to
    [0, 255] and truncated.
    """
    x = image[0].detach().cpu().double().numpy()
    levels = np.clip((x + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return levels.transpose(1, 2, 0)


def jpeg_round_trip(pixels: np.ndarray, path: Path) -> Tensor:
    """Write ``pixels`` as a JPEG, read it back, normalise to [-1, 1]: (1, 3, H, W) float32.

    Read-back normalisation as the original's ``read_image`` + ``ToTensor`` +
    ``Normalize(0.5, 0.5)``: ``(q / 255 - 0.5) / 0.5``.
    """
    Image.fromarray(pixels).save(path, quality=JPEG_QUALITY, subsampling=JPEG_SUBSAMPLING)
    with Image.open(path) as img:
        back = np.asarray(img.convert("RGB"))
    q = torch.from_numpy(back.copy()).permute(2, 0, 1)[None].float()
    return (q / 255.0 - 0.5) / 0.5


def original_style_scores(setup: EditSetup, latents: Tensor, workdir: Path) -> np.ndarray:
    """Score every edit of every vector the way Oh-LoRA v3.1's test did: (v, m, 3) float32.

    Per vector: its mid vector, then per grid point: move it, synthesize one
    image, convert to 8 bits, save a JPEG (``case_{i}_{vi}_pm_{k}.jpg``), read
    it back, normalise, score it alone, keep eyes/mouth/pose rounded to 4
    decimals. The correlation and the per-case CSV are left out (cheap, and the
    batched path does not time them either). Ungrouped directions only.
    """
    generator, scorer, layer, grid = setup.generator, setup.scorer, setup.layer, setup.steps
    out = np.zeros((latents.shape[0], setup.m, len(CORE_PROPERTIES)), np.float32)
    weights = torch.as_tensor(grid, dtype=torch.float32)
    with torch.inference_mode():
        for i in range(latents.shape[0]):
            mid = generator.to_mid(latents[i : i + 1], layer).float().cpu()
            dirs = {p: d.cpu() for p, d in setup.directions.for_vectors(mid).items()}
            for k in range(setup.m):
                moved = mid.clone()
                for j, p in enumerate(CORE_PROPERTIES):
                    moved = moved + weights[k, j] * dirs[p]
                pixels = to_uint8_hwc(generator.synthesize(moved, layer))
                back = jpeg_round_trip(pixels, workdir / f"case_{i:03d}_000_pm_{k:03d}.jpg")
                scores = scorer.score(back)
                for j, p in enumerate(CORE_PROPERTIES):
                    out[i, k, j] = round(float(scores[p][0]), 4)
    return out
