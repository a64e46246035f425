"""Checking a run's config and building its models, before anything heavy happens."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from ohlora_eval.apps.config import Settings, settings
from ohlora_eval.errors import ConfigError, UserError
from ohlora_eval.pipeline import judge
from ohlora_eval.pipeline.context import MeasureContext
from ohlora_eval.pipeline.device import check_device
from ohlora_eval.pipeline.edit import EditSetup
from ohlora_eval.pipeline.fidelity import seeded
from ohlora_eval.pipeline.measure_settings import MeasureSettings
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES, Generator, PropertyScorer
from ohlora_eval.pipeline.sample import FaceSetup
from ohlora_eval.review import ReviewSettings

# What a screening holds per image and per vector at its peak (the judging and review step
# at the end: the float32 scores, their float64 working copies, the per-vector table). The
# latents are drawn block by block and per_image.csv written block by block: neither grows
# with n. Measured: docs/scaling.md ("Memory").
BYTES_PER_IMAGE = 60
BYTES_PER_VECTOR = 900
BASE_BYTES = 1.5e9  # the process with its libraries, models and one chunk


def memory_needed(n_vectors: int, images_per_vector: int) -> float:
    """Bytes a screening of ``n_vectors`` needs at its peak (an estimate, on the high side)."""
    return BASE_BYTES + n_vectors * (images_per_vector * BYTES_PER_IMAGE + BYTES_PER_VECTOR)


def available_memory() -> float | None:
    """Bytes this machine can still give (Linux MemAvailable), or None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(n_vectors: int, images_per_vector: int) -> None:
    """A screening that cannot fit in this machine's memory is refused before it starts,
    with the estimate (not a crash hours later)."""
    need, have = memory_needed(n_vectors, images_per_vector), available_memory()
    if have is None or need <= have:
        return
    fits = int((have - BASE_BYTES) / (images_per_vector * BYTES_PER_IMAGE + BYTES_PER_VECTOR))
    raise ConfigError(
        f"sampling.n_vectors={n_vectors:,} needs about {need / 1e9:.1f} GB of memory"
        f" ({n_vectors * images_per_vector:,} per-image scores and their statistics, the"
        f" per-vector table); {have / 1e9:.1f} GB are available here: screen at most about"
        f" {max(fits, 0):,} vectors per run (several runs with other sampling.seed)"
    )


def int_list(key: str, value: Any) -> list[int]:
    """A command-line list of case numbers (``cases=[39,269]``) as ints, or a ConfigError
    naming ``key`` and the entry that is not one."""
    if isinstance(value, (str, bytes, int)) or not hasattr(value, "__iter__"):
        raise ConfigError(f"{key}={value!r} must be a list of case numbers, e.g. {key}=[39,269]")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, str)) or not str(v).lstrip("-").isdigit():
            raise ConfigError(f"{key}[{i}]={v!r} is not a case number (an integer)")
        out.append(int(v))
    return out


@dataclass
class Checked:
    """What ``preflight`` read from a run's config: the settings the run works with."""

    cutoffs: dict[str, float]
    grid: np.ndarray
    review: ReviewSettings
    measure_settings: MeasureSettings
    settings: Settings  # all of them, typed (apps/config.settings)


def preflight(cfg: DictConfig, resolved: Mapping[str, Any]) -> Checked:
    """Every cheap check of an evaluation's config, before a run is opened (a typo in the
    command line makes no FAILED run): cutoffs, sampling, review, measure and the
    direction spec. The layer is checked when the generator is built."""
    typed = settings(cfg)
    cutoffs, grid = typed.cutoff.as_dict(), typed.sampling.points()
    check_memory(typed.sampling.n_vectors, int(grid.shape[0]))
    spec = getattr(instantiate_node(cfg.directions), "spec", None)
    if spec is not None:
        spec().check()
    if not isinstance(cfg.get("layer"), str):
        raise ConfigError(f"layer={cfg.get('layer')!r} must be the name of a layer, e.g. layer=w")
    check_devices(resolved)
    check_writable_cache(resolved)
    check_installed(resolved)
    check_identity(resolved, cutoffs)
    return Checked(cutoffs, grid, typed.review, typed.measure, typed)


def check_identity(resolved: Mapping[str, Any], cutoffs: Mapping[str, float]) -> None:
    """An identity cutoff, or a ranking by an identity column, needs an identity model to
    measure the distances."""
    if resolved.get("identity"):
        return
    if judge.identity_cutoff(cutoffs) is not None:
        raise ConfigError(
            f"cutoff.identity={cutoffs['identity']:g} needs an identity model to measure the"
            " distances: add identity=dlib_resnet (experiment=real_faces has it), or leave"
            " cutoff.identity=null"
        )
    rank = str((resolved.get("review") or {}).get("rank_by", ""))
    used = [c for c in judge.IDENTITY_COLUMNS if c in rank]
    if used:
        raise ConfigError(
            f"review.rank_by uses {used[0]}, which only a run with an identity model has: add"
            " identity=dlib_resnet, or rank by other columns"
        )


def build_identity(cfg: DictConfig) -> Any | None:
    """The configured identity model (``identity=...``), or None for ``identity=none``."""
    node = cfg.get("identity")
    if not node:
        return None
    model = instantiate_node(node)
    for attr in ("embed", "threshold"):
        if not hasattr(model, attr):
            raise ConfigError(
                f"identity model {type(model).__name__} lacks {attr!r} (IdentityModel protocol)"
            )
    return model


def check_writable_cache(resolved: Mapping[str, Any]) -> None:
    """The measurement cache's folder can be made and written (``cache.dir``), before a run
    opens: a run that measured for an hour must not die at its first chunk."""
    node = resolved.get("cache") or {}
    if not node.get("enabled") or not node.get("dir"):
        return
    folder = Path(str(node["dir"])).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cache.dir={folder}: cannot write there ({exc.strerror or exc}); give a folder"
            " you can write, or cache.enabled=false"
        ) from None


MODELS = ("generator", "scorer", "identity")
"""The config's model nodes (``identity`` is null without an identity model)."""


def model_nodes(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The model nodes a config has: ``{"generator": ..., "scorer": ..., ["identity": ...]}``."""
    return {key: cfg[key] for key in MODELS if cfg.get(key)}


def check_devices(resolved: Mapping[str, Any]) -> None:
    """``device`` and the models' own ``device`` settings name a device this machine has."""
    if "device" in resolved:
        check_device("device", resolved["device"])
    for key, node in model_nodes(resolved).items():
        if "device" in node:
            check_device(f"{key}.device", node["device"])


def set_device(rec: DictConfig, device: Any) -> None:
    """A replayed config (verify, sheets) on ``device``: the models' settings too (a recorded
    config holds them as plain values, not as ``${device}``); checked here."""
    check_device("device", device)
    rec.device = str(device)
    for node in model_nodes(rec).values():
        if "device" in node:
            node.device = str(device)


def check_installed(resolved: Mapping[str, Any]) -> None:
    """The models' packages and files are there (their optional ``check_installed``), before
    a run opens: a model from a package that is not installed is one line with the command
    that installs it."""
    from hydra.utils import get_class

    for model in model_nodes(resolved).values():
        node = dict(model)
        target = node.pop("_target_", None)
        try:
            cls = get_class(target) if target else None
        except Exception:
            continue  # instantiating it later names the problem
        hook = getattr(cls, "check_installed", None)
        if hook is not None:
            hook(**node)


def build_models(cfg: DictConfig) -> tuple[Generator, PropertyScorer]:
    generator = instantiate_node(cfg.generator)
    for attr in ("latent_dim", "layers", "sample_latents", "to_mid", "synthesize"):
        if not hasattr(generator, attr):
            raise ConfigError(
                f"generator {type(generator).__name__} lacks {attr!r} (Generator protocol)"
            )
    if cfg.layer not in generator.layers:
        raise ConfigError(
            f"layer={cfg.layer!r} is not offered by {type(generator).__name__};"
            f" allowed: {', '.join(generator.layers)}"
        )
    scorer = instantiate_node(cfg.scorer)
    missing = [p for p in CORE_PROPERTIES if p not in getattr(scorer, "properties", ())]
    if missing:
        raise ConfigError(f"scorer {type(scorer).__name__} does not measure {missing}")
    return generator, scorer


def edit_setup(cfg: DictConfig, checked: Checked, where: Any, faces: Any = None) -> EditSetup:
    """The models, their directions (found, or fitted now) and the grid of a checked
    config: what measuring and contact sheets need. ``where``: the store (StoreRef);
    ``faces``: where a fit scores its sampled faces (``execution.face_executor``; None: here)."""
    layer = cfg.layer
    context = MeasureContext(bool(cfg.tracking.progress) and sys.stderr.isatty(), faces)
    with seeded(0):  # the global torch RNG seeded as ever, the caller's restored after
        generator, scorer = build_models(cfg)
        apply_noise_seed(generator, cfg.get("noise_seed"))
        sampled = FaceSetup(generator, scorer, layer, checked.measure_settings)
        directions = instantiate(cfg.directions).resolve(sampled, where, context)
    directions.check_compatible(layer, mid_dim(generator, layer))
    return EditSetup(generator, scorer, directions, checked.grid, layer, checked.measure_settings)


def apply_noise_seed(generator: Generator, seed: int | None) -> None:
    if seed is None:
        return
    if not hasattr(generator, "set_noise_seed"):
        raise ConfigError(
            f"noise_seed={seed} but {type(generator).__name__} has no noise; leave noise_seed=null"
        )
    generator.set_noise_seed(int(seed))


def mid_dim(generator: Generator, layer: str) -> int:
    dims = getattr(generator, "mid_dims", None)
    if dims and layer in dims:
        return int(dims[layer])
    return int(generator.to_mid(generator.sample_latents(1, 0), layer).shape[1])


def instantiate_node(node: Any) -> Any:
    """``hydra.utils.instantiate``, but raising the real error (Hydra wraps it): the first
    of our own errors in the chain (its message was written for the user), else the root
    cause."""
    try:
        return instantiate(node)
    except Exception as exc:
        chain = [exc]
        while chain[-1].__cause__ is not None:
            chain.append(chain[-1].__cause__)
        ours = [e for e in chain if isinstance(e, UserError)]
        raise (ours[0] if ours else chain[-1]) from None


def model_tags(cfg: DictConfig) -> dict[str, str]:
    """The generator's and scorer's class names as configured (run tags)."""
    return {k: str(cfg[k].get("_target_", "?")).rsplit(".", 1)[-1] for k in ("generator", "scorer")}


def replay_config(
    recorded: Any, tracking: Any, experiment: str, directions_run_id: str | None
) -> DictConfig:
    """A finished run's recorded config, set up to measure its vectors again: today's store
    (``tracking``) under ``experiment``, no measurement cache (it measures, it never reads
    earlier scores) and the directions pinned to the run that produced them."""
    from omegaconf import OmegaConf

    rec = OmegaConf.create(recorded)
    rec.tracking = OmegaConf.merge(rec.get("tracking", {}), tracking)
    rec.tracking.experiment = experiment
    if "cache" in rec:
        rec.cache.enabled = False
    if directions_run_id and directions_run_id != "none" and "run_id" in rec.directions:
        rec.directions.run_id = directions_run_id
    return rec


def has_noise(cfg: DictConfig) -> bool:
    """Whether the configured generator has per-layer noise (``set_noise_seed``)."""
    from hydra.utils import get_class

    return hasattr(get_class(cfg.generator._target_), "set_noise_seed")


def has_dropout(cfg: DictConfig) -> bool:
    """Whether the configured scorer has a train mode whose dropout makes its scores random
    (``set_train_mode``, used by ``measure.scorer_mode=train``)."""
    from hydra.utils import get_class

    return hasattr(get_class(cfg.scorer._target_), "set_train_mode")
