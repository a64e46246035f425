"""The typed form of the config groups that had none: sampling, tracking, cache, execution,
``directions=files`` and every shipped generator, scorer and identity model.

Each group's YAML file names its schema first in its defaults list
(``- /schema_<group>_<option>@_here_``, registered by ``apps/config.register``), so Hydra
composes the YAML's values onto typed fields: a value of the wrong type anywhere
(``generator.seed=abc``, ``scorer.workers=x``) or a key the group does not have is refused
when the command line is composed, in one line naming the key. The values themselves live
in the YAML files only (a field here has no default unless the YAML may leave it out), and
what a type cannot say (ranges, choices) is checked in ``__post_init__``, which runs when
``OmegaConf.to_object`` turns the composed config into these objects (``typed``).
A config group whose option names no schema (a user's own model) composes as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ohlora_eval.errors import ConfigError, int_in, number_in

MAX_VECTORS = 10_000_000
"""Latents are drawn at once (about 2 KB each): more than this does not fit in memory."""


# -- sampling, tracking, cache ------------------------------------------------------------


@dataclass
class Grid:
    """``sampling.grid``: the edit weights of each property (all combinations are made)."""

    eyes: list[float]
    mouth: list[float]
    pose: list[float]


@dataclass
class Sampling:
    """``sampling``: which vectors a screening measures, and how many at a time."""

    n_vectors: int
    seed: int
    vectors_per_batch: int
    grid: Grid

    def __post_init__(self) -> None:
        int_in("sampling.n_vectors", self.n_vectors, 1, MAX_VECTORS)
        int_in("sampling.vectors_per_batch", self.vectors_per_batch, 1, 1_000_000)
        int_in("sampling.seed", self.seed, 0, 2**32 - 1)
        self.points()  # at least 2 distinct finite weights each

    def points(self) -> Any:
        """The (m, 3) edit grid, eyes slowest and pose fastest (``edit.grid_points``)."""
        from ohlora_eval.pipeline.edit import grid_points  # torch: not while composing

        return grid_points(vars(self.grid))


@dataclass
class SheetCounts:
    """``tracking.grids``: how many contact sheets a run logs."""

    passed: int
    best: int


@dataclass
class Tracking:
    """``tracking``: where runs are recorded and what each logs."""

    uri: str | None
    root: str
    experiment: str
    grids: SheetCounts
    sheet_cell: int
    per_image: bool
    progress: bool
    store_wait_s: float
    system_metrics: bool
    system_metrics_interval_s: float

    def __post_init__(self) -> None:
        int_in("tracking.sheet_cell", self.sheet_cell, 16, 1024)
        for key in ("passed", "best"):
            int_in(f"tracking.grids.{key}", getattr(self.grids, key), 0, 100_000)
        number_in("tracking.store_wait_s", self.store_wait_s, 0, 1e9, low_open=True)
        # system_metrics and its interval: tracking/system_metrics.check, when a job starts
        if not str(self.experiment).strip():
            raise ConfigError("tracking.experiment is empty; name the MLflow experiment")
        root = Path(str(self.root)).expanduser()
        if root.exists() and not root.is_dir():  # found here even when hydra.run.dir is set
            raise ConfigError(
                f"tracking.root={self.root} is a file, not a folder; set tracking.root=<a"
                " writable folder> (made if missing)"
            )


@dataclass
class Cache:
    """``cache``: measured scores kept per measurement, re-used by runs that differ only in
    judging."""

    enabled: bool
    dir: str


# -- execution -------------------------------------------------------------------------


@dataclass
class LocalExecution:
    """``execution=local``: every chunk measured in this process."""

    kind: str

    def __post_init__(self) -> None:
        if self.kind != "local":
            raise ConfigError(f"execution.kind={self.kind!r} must be local here (execution=ray)")


@dataclass
class RayExecution:
    """``execution=ray``: chunks measured on a pool of Ray actors (docs/scaling.md)."""

    kind: str
    address: str | None
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    restarts: int
    start_timeout_s: float

    def __post_init__(self) -> None:
        if self.kind != "ray":
            raise ConfigError(f"execution.kind={self.kind!r} must be ray here (execution=local)")
        address = self.address
        if address is not None and address != "auto" and ":" not in address:
            raise ConfigError(
                f"execution.address={address!r} must be null (a local Ray), auto or ray://host:port"
            )
        int_in("execution.workers", self.workers, 1)
        int_in("execution.restarts", self.restarts, 0)
        for key, low in (("cpus_per_worker", 0), ("gpus_per_worker", 0), ("start_timeout_s", 1)):
            number_in(f"execution.{key}", getattr(self, key), low, 1e9)
        if self.cpus_per_worker == 0 and self.gpus_per_worker == 0:
            raise ConfigError("execution.cpus_per_worker=0 needs execution.gpus_per_worker > 0")


# -- directions read from files (directions=latest is directions/spec.py's) ---------------


@dataclass
class FileDirections:
    """``directions=files``: Oh-LoRA's vector CSVs in ``path`` (null: it says what to set)."""

    _target_: str
    path: str | None


# -- models: what every shipped generator, scorer and identity model takes ----------------


@dataclass
class Model:
    """What every model node has: the class to build (``_target_``)."""

    _target_: str


@dataclass
class SyntheticGenerator(Model):
    resolution: int
    seed: int
    device: str
    batch_size: int
    edit_scale: float


@dataclass
class DCGANGenerator(Model):
    checkpoint: str | None
    device: str
    batch_size: int
    edit_unit: dict[str, float] = field(default_factory=dict)


@dataclass
class StyleGANV9Generator(Model):
    checkpoint: str | None
    device: str
    batch_size: int | None
    truncation_psi: float
    truncation_layers: int | None
    postprocess: str
    mapping_batch: int
    allow_random_init: bool


@dataclass
class SyntheticScorer(Model):
    resolution: int | None
    calibration_n: int
    calibration_seed: int
    batch_size: int
    train_dropout: float


@dataclass
class DlibLandmarkScorer(Model):
    model: str | None
    upscale: int
    box: list[float]
    detect: bool
    workers: int | None
    batch_size: int


@dataclass
class OhLoRACNNScorer(Model):
    checkpoint: str | None
    device: str
    batch_size: int | None
    group_medians: Any  # null | "sample" | a mapping of group medians
    allow_random_init: bool


@dataclass
class DlibResNetIdentity(Model):
    model: str | None
    landmarks: int
    upscale: int
    box: list[float]
    detect: bool
    device: str
    batch_size: int
    scope: str


SCHEMAS: dict[str, type] = {
    "schema_sampling": Sampling,
    "schema_tracking": Tracking,
    "schema_cache": Cache,
    "schema_execution_local": LocalExecution,
    "schema_execution_ray": RayExecution,
    "schema_directions_files": FileDirections,
    "schema_generator_synthetic": SyntheticGenerator,
    "schema_generator_dcgan_digiface": DCGANGenerator,
    "schema_generator_stylegan_v9": StyleGANV9Generator,
    "schema_scorer_synthetic": SyntheticScorer,
    "schema_scorer_dlib_landmarks": DlibLandmarkScorer,
    "schema_scorer_ohlora_cnn": OhLoRACNNScorer,
    "schema_identity_dlib_resnet": DlibResNetIdentity,
}
"""Root-level ConfigStore names (not groups, so ``--help`` lists only the real options)."""
