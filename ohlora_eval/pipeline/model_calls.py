"""The models' calls as every measuring step makes them: padded, sized per step, with the
speed switches in force.

``to_mid``, ``synthesize`` and ``score`` pad each call to the model's own ``pad_multiple``
(``pipeline/batching.py``); ``step_vectors`` decides how many vectors a step of the hot loop
holds (``pipeline/measure.py``); ``computing`` puts the speed switches of ``setup.measure_settings``
in force (``pipeline/device.py``); ``group_fn`` is the look-alike grouping hook built from
these calls. Used by the hot loop, by the sampling of faces (``pipeline/sample.py``) and by
the contact sheets (``tracking/contact_sheets.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from ohlora_eval.errors import ConfigError
from ohlora_eval.pipeline import device as dev
from ohlora_eval.pipeline.batching import ROW_MULTIPLE, padded_call
from ohlora_eval.pipeline.edit import EditSetup
from ohlora_eval.pipeline.fidelity import seeded
from ohlora_eval.pipeline.groups import can_group, group_names, group_properties
from ohlora_eval.pipeline.protocols import Generator, PropertyScorer

# unedited mid vectors of a chunk -> each vector's look-alike group name
GroupFn = Callable[..., list[str]]  # (mid, seeds=None) -> each vector's group name

# Images per step on a GPU at least (and at least 4 of the larger model batch): enough
# that the models run full batches back to back and the per-step costs (launches, the
# edit, the copies) are small next to the forwards.
CUDA_STEP_IMAGES = 2048


def to_mid(generator: Generator, latents: Tensor, layer: str) -> Tensor:
    return padded_call(lambda z: generator.to_mid(z, layer), latents)


def pad_multiple(model: object) -> int:
    """How a model wants its calls padded (``pad_multiple`` attribute; default 64 rows)."""
    return max(1, int(getattr(model, "pad_multiple", ROW_MULTIPLE)))


def padded_rows(rows: int, multiple: int) -> int:
    """The rows a call of ``rows`` rows computes once padded to ``multiple``."""
    return max(multiple, -(-rows // multiple) * multiple)


def step_vectors(
    v: int, m: int, generator: Generator, scorer: PropertyScorer, device: torch.device
) -> int:
    """Vectors edited, generated and scored per step of a chunk of ``v`` vectors.

    A step holds about ``target`` images: the generator's ``batch_size`` on a CPU, on a
    GPU ``CUDA_STEP_IMAGES`` or 4 of the larger model batch. Between half that and all
    of it, the step with the least padding wins (each model pads to its own multiple;
    ties go to the larger step). A function of the config only, never of timings.
    """
    g_batch = int(getattr(generator, "batch_size", 512))
    s_batch = int(getattr(scorer, "batch_size", 512))
    target = g_batch
    if device.type == "cuda":
        target = max(CUDA_STEP_IMAGES, 4 * max(g_batch, s_batch))
    most = max(1, min(v, target // max(m, 1)))
    multiples = (pad_multiple(generator), pad_multiple(scorer))

    def waste(k: int) -> float:
        return sum(padded_rows(k * m, q) for q in multiples) / (k * m)

    return min(range(max(1, -(-most // 2)), most + 1), key=lambda k: (waste(k), -k))


def synthesize(generator: Generator, mid: Tensor, layer: str) -> Tensor:
    return padded_call(lambda m: generator.synthesize(m, layer), mid, pad_multiple(generator))


def score(scorer: PropertyScorer, images: Tensor) -> dict[str, Tensor]:
    return padded_call(scorer.score, images, pad_multiple(scorer))


def score_on_device(scorer: PropertyScorer, images: Tensor) -> dict[str, Tensor]:
    """``score``, leaving the scores where they were computed when the scorer can
    (optional ``score_on_device`` method; else its ``score``)."""
    fn = getattr(scorer, "score_on_device", scorer.score)
    return padded_call(fn, images, pad_multiple(scorer))


@contextlib.contextmanager
def computing(setup: EditSetup) -> Iterator[torch.device]:
    """The speed switches of ``setup.measure_settings`` in force for a block; yields the device.

    Checks the precision against the device, sets the models' memory layout and
    compilation (restored afterwards) and, on CUDA, the exactness flags.
    """
    settings = setup.measure_settings
    device = dev.model_device(setup.generator, setup.scorer)
    dev.check_precision(settings.precision, device)
    models = (setup.generator, setup.scorer)
    before = [getattr(mdl, "speed", None) for mdl in models]
    try:
        for mdl in models:
            dev.apply_speed(mdl, channels_last=settings.channels_last, compile=settings.compile)
        with dev.exact_cuda(
            device,
            deterministic=settings.deterministic,
            precision=settings.precision,
            tf32=settings.tf32,
        ):
            yield device
    finally:
        for mdl, was in zip(models, before):
            if was is not None:
                dev.apply_speed(mdl, **was)


def group_fn(setup: EditSetup) -> GroupFn | None:
    """Each vector's look-alike group, from scoring its unedited image (as the original).

    None when the scorer cannot group (then the directions must not be grouped).
    """
    scorer, directions = setup.scorer, setup.directions
    med = getattr(scorer, "group_medians", None) or directions.medians
    props = group_properties(scorer)
    if med is None or not can_group(scorer) or any(p not in med for p in props):
        if directions.grouped:
            raise ConfigError(
                "grouped directions need a scorer that measures the grouping properties"
                f" {list(props)} and grouping medians"
            )
        return None

    def groups(mid: Tensor, seeds: Sequence[int] | None = None) -> list[str]:
        """The groups of ``mid``'s unedited images, synthesized in one call (synthesis
        draws no random numbers). ``seeds``: each image is scored alone under its own
        seeded dropout draws (train mode; the same bits as synthesizing it alone)."""
        images = synthesize(setup.generator, mid, setup.layer)
        if seeds is None:
            s = score(scorer, images)
        else:
            parts = []
            for i, seed in enumerate(seeds):
                with seeded(seed):
                    parts.append(score(scorer, images[i : i + 1]))
            s = {p: torch.cat([x[p] for x in parts]) for p in props}
        return group_names({p: s[p].float().cpu().numpy() for p in props}, med, props)

    return groups
