"""Loading published Oh-LoRA checkpoints safely, and placing networks on a device.

Why a shared helper: the generator and the scorer must fail the same way when a
checkpoint is missing or does not fit, and the message must tell the user the
one config key to set and where the file comes from. Files are only ever read
with ``weights_only=True`` (no pickled code runs) and loaded strictly, so a
wrong file can never silently produce a half-initialised network.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from ohlora_eval.errors import ConfigError, UserError
from ohlora_eval.pipeline.device import cuda_environment
from ohlora_eval.pipeline.fingerprint import file_digest

OHLORA_V3_1_RELEASE_URL = "https://huggingface.co/daebakgazua/250607_OhLoRA_StyleGAN_all"
"""Where the Oh-LoRA v3.1 release publishes all its model files (see the original README)."""

RANDOM_INIT_ID = "random-init"

# Wrapper keys under which some training scripts nest the actual state dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "generator", "net")


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable, or does not fit the network."""


_BLOCKED_GLOBAL = re.compile(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL)\s+([\w.]+)")


def _why_unreadable(exc: Exception) -> str:
    """What is wrong with a file ``torch.load(weights_only=True)`` refused, in a few words.

    Never torch's own advice to load with ``weights_only=False``: for a file that holds code
    that advice is exactly wrong, and for a file that is not a checkpoint it does not help."""
    text = str(exc)
    blocked = _BLOCKED_GLOBAL.search(text)
    if blocked:
        return (
            f"it holds Python objects ({blocked.group(1)}), not only tensors; such code is"
            " never run: use a file of tensors (a state dict)"
        )
    if "weights only load failed" in text.lower():
        return "it holds Python objects, not only tensors: use a file of tensors (a state dict)"
    first = text.strip().splitlines()[0] if text.strip() else "unreadable"
    return f"not a PyTorch checkpoint ({type(exc).__name__}: {first})"


def read_state_file(path: str | Path, *, config_key: str) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU; any failure is one
    ``CheckpointError`` line naming the file and the config key that set it."""
    path = Path(path).expanduser()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refusals, truncated files, non-torch files
        raise CheckpointError(
            f"cannot read checkpoint {path} ({config_key}): {_why_unreadable(exc)}"
        ) from None


def _hint(config_key: str, published_name: str) -> str:
    return (
        f"set {config_key}=<path to {published_name}> "
        f"(file {published_name} of the Oh-LoRA v3.1 release, {OHLORA_V3_1_RELEASE_URL})"
    )


def file_weights_id(path: str | Path) -> str:
    """First 16 hex digits of the sha256 of the file bytes (stable lineage/cache key)."""
    return file_digest(path)[:16]


def _unwrap(obj: object, path: str) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or one nested under a usual wrapper key."""
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    state = {str(k): v for k, v in obj.items()}
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def check_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming the first missing/unexpected key or shape mismatch."""
    expected = module.state_dict()
    for key in expected:
        if key not in state:
            raise CheckpointError(f"{source}: missing key {key!r}; is this the right file?")
    for key in state:
        if key not in expected:
            raise CheckpointError(f"{source}: unexpected key {key!r}; is this the right file?")
    for key, tensor in expected.items():
        got = tuple(state[key].shape)
        if got != tuple(tensor.shape):
            raise CheckpointError(
                f"{source}: key {key!r} has shape {list(got)}, "
                f"the network expects {list(tensor.shape)}"
            )


def load_checkpoint(
    module: nn.Module,
    checkpoint: str | Path | None,
    *,
    config_key: str,
    published_name: str,
    allow_random_init: bool = False,
) -> str:
    """Load ``checkpoint`` into ``module`` strictly; return its weights id.

    ``checkpoint=None`` is an error (naming ``config_key``) unless
    ``allow_random_init`` is set, in which case the module keeps its own
    initialisation and the id is ``"random-init"``.
    """
    if checkpoint is None or str(checkpoint).strip() == "":
        if allow_random_init:
            return RANDOM_INIT_ID
        raise CheckpointError(f"no checkpoint given: {_hint(config_key, published_name)}")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint file not found: {path}; {_hint(config_key, published_name)}"
        )
    obj = read_state_file(path, config_key=config_key)
    state = _unwrap(obj, f"{path} ({config_key})")
    check_state_dict(module, state, f"{path} ({config_key})")
    module.load_state_dict(state, strict=True)
    return file_weights_id(path)


def packaged_file(distribution: str, path_in_wheel: str, config_key: str, install: str) -> Path:
    """A data file shipped inside an installed wheel, found through the distribution's
    file list (the package is not imported). A ConfigError with the install command when
    the distribution or the file is missing."""
    from importlib import metadata

    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise ConfigError(
            f"{config_key}=null needs the package {distribution}, which is not installed: {install}"
        ) from None
    listed = [f for f in (dist.files or []) if str(f).replace("\\", "/") == path_in_wheel]
    path = Path(dist.locate_file(listed[0] if listed else path_in_wheel))
    if not path.is_file():
        raise ConfigError(
            f"{distribution} is installed but has no {path_in_wheel}; reinstall it: {install}"
        )
    return path


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` means CUDA when available, else CPU. A CUDA device gets the environment
    CUDA computing reads (``pipeline.device.cuda_environment``)."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return cuda_environment(torch.device(device))


def chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices covering range(n) in pieces of at most ``size``."""
    size = max(1, int(size))
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))
