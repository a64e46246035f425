"""How the models compute on their device: precision, memory layout, compilation, exactness.

The speed switches of the ``measure`` settings (``pipeline.measure_settings.MeasureSettings``:
``precision``, ``channels_last``, ``compile``, ``tf32``, ``deterministic``) are applied
here, once per measuring call:

- ``precision``: ``fp32`` (default) | ``bf16`` | ``fp16``: ``torch.autocast`` around the
  generator's synthesis and the scorer's forward (``forward_precision``). The mapping
  network and the edits stay float32: edits are made on the mapping's outputs.
- ``channels_last`` and ``compile``: passed to the models' optional ``set_speed`` hook
  (``apply_speed``); a model without the hook computes as before.
- CUDA exactness (``exact_cuda``): deterministic algorithms, cuDNN autotuning off and
  TF32 off, so the same config gives the same bits on the same GPU and ``verify``
  re-measures a recorded selection with ``max |recorded r - re-measured r| = 0``.
  ``deterministic=null`` means on for ``precision=fp32``. cuBLAS is deterministic only
  with ``CUBLAS_WORKSPACE_CONFIG`` set before its first call: ``cuda_environment`` sets
  it (``:4096:8``) unless the environment already has a value, when a model is set up on
  a CUDA device (before it computes) and when a measurement turns determinism on; never
  at import, and never for a CPU. On a CPU all of this is a no-op.
- CPU exactness (``fixed_cpu_threads``): a sum split over threads is added in another
  order, so its last bits follow torch's thread count (the machine's cores,
  ``OMP_NUM_THREADS``, ``taskset``). MKL splits a matrix product's inner sum from 4 threads
  on (the gradient regressor's weight gradients, the gradient field's backward pass), torch
  splits a reduction down a tall tensor from 8 on (the regressor's input means), and
  oneDNN's convolutions of a small batch differ already between 1 and 2 (the identity
  ResNet). Those run on exactly ``FIXED_THREADS`` (2) threads on any machine, so they add in
  the same order wherever the CPU takes the same kernels (another instruction set, AVX2
  against AVX-512, still rounds otherwise); 2, not 1, because one thread made the default
  run's direction fit 1.5x slower on this 2-core machine. The DCGAN gave the same bits on
  1 to 32 threads (measured) and keeps them all.

Pure computation (no MLflow, Hydra or OmegaConf); docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ohlora_eval.errors import ConfigError
from ohlora_eval.pipeline.measure_settings import PRECISIONS

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CUBLAS_WORKSPACE = ":4096:8"
CUBLAS_WORKSPACES = (":4096:8", ":16:8")  # the two values cuBLAS documents as deterministic


def cuda_environment(device: torch.device) -> torch.device:
    """``device``, after setting what CUDA computing reads from the environment: on a CUDA
    device, ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (deterministic cuBLAS) unless the
    environment has a value. Torch reads it at the first matrix product on a GPU, so the
    models call this when they are set up on one (``resolve_device``); a CPU device leaves
    the environment alone."""
    if torch.device(device).type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    return device


def check_device(key: str, value: object) -> str:
    """A device setting that this machine has: ``auto`` (CUDA when present, else the CPU),
    ``cpu``, ``cuda`` or ``cuda:<n>``. Anything else, or a GPU that is not here, is a
    ValueError naming ``key`` (an explicit device is never silently replaced)."""
    text = str(value).strip()
    if text in ("auto", "cpu"):
        return text
    if text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{key}={text}: this machine has no CUDA device (torch sees none);"
                f" use {key}=auto or {key}=cpu"
            )
        index = int(text[5:]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"{key}={text}: this machine has {torch.cuda.device_count()} CUDA device(s)"
                f" (cuda:0 .. cuda:{torch.cuda.device_count() - 1})"
            )
        return text
    raise ConfigError(f"{key}={text!r} is not a device; use auto, cpu, cuda or cuda:<n>")


def model_device(*models: object) -> torch.device:
    """The device the models compute on (their ``device`` attribute; CPU when they have none).

    The first model that names a device wins (the generator, whose images the scorer reads).
    """
    for model in models:
        device = getattr(model, "device", None)
        if device is not None:
            return torch.device(device)
    return torch.device("cpu")


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision the device's autocast cannot run, naming the setting and the fix."""
    if precision not in PRECISIONS:
        raise ConfigError(f"measure.precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return
    dtype = AUTOCAST_DTYPES[precision]
    if not torch.amp.is_autocast_available(device.type):
        raise ConfigError(
            f"measure.precision={precision}: torch has no autocast on {device.type};"
            " use measure.precision=fp32"
        )
    try:
        with torch.autocast(device.type, dtype=dtype):
            pass
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"measure.precision={precision} is not supported on {device.type} by this torch"
            f" ({exc}); use measure.precision=fp32 or bf16"
        ) from None


def forward_precision(
    precision: str, device: torch.device
) -> contextlib.AbstractContextManager[None]:
    """``torch.autocast`` at ``precision`` on ``device`` (nothing for ``fp32``)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def apply_speed(model: object, *, channels_last: bool, compile: bool) -> list[str]:
    """Switch a model's memory layout and compilation through its ``set_speed`` hook.

    Returns what the model says it applied (empty when it has no hook: a model without
    convolutions gains nothing from either). Switching off again restores the plain model.
    """
    hook = getattr(model, "set_speed", None)
    if hook is None:
        return []
    return list(hook(channels_last=bool(channels_last), compile=bool(compile)))


@dataclass(frozen=True)
class CudaFlags:
    """The process-wide CUDA settings ``exact_cuda`` sets, as they were before."""

    deterministic: bool
    warn_only: bool
    cudnn_benchmark: bool
    cudnn_deterministic: bool
    matmul_tf32: bool
    cudnn_tf32: bool


def _tf32_state() -> tuple[bool, bool]:
    return (
        bool(torch.backends.cuda.matmul.allow_tf32),
        bool(torch.backends.cudnn.allow_tf32),
    )


def _set_tf32(matmul: bool, cudnn: bool) -> None:
    with warnings.catch_warnings():  # newer torch prefers fp32_precision; both still work
        warnings.simplefilter("ignore")
        torch.backends.cuda.matmul.allow_tf32 = bool(matmul)
        torch.backends.cudnn.allow_tf32 = bool(cudnn)


def cuda_flags() -> CudaFlags:
    """The current process-wide flags (whatever the device)."""
    matmul, cudnn = _tf32_state()
    return CudaFlags(
        deterministic=torch.are_deterministic_algorithms_enabled(),
        warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        cudnn_deterministic=bool(torch.backends.cudnn.deterministic),
        matmul_tf32=matmul,
        cudnn_tf32=cudnn,
    )


def restore_cuda_flags(flags: CudaFlags) -> None:
    torch.use_deterministic_algorithms(flags.deterministic, warn_only=flags.warn_only)
    torch.backends.cudnn.benchmark = flags.cudnn_benchmark
    torch.backends.cudnn.deterministic = flags.cudnn_deterministic
    _set_tf32(flags.matmul_tf32, flags.cudnn_tf32)


def resolved_deterministic(deterministic: bool | None, precision: str) -> bool:
    """``deterministic=null`` means on for float32 (the exact setting), off for autocast."""
    return precision == "fp32" if deterministic is None else bool(deterministic)


def set_cuda_flags(*, deterministic: bool, tf32: bool) -> None:
    """Set the CUDA flags for one measurement (they are process-wide)."""
    if deterministic:
        cuda_environment(torch.device("cuda"))  # a model set up elsewhere: set it now
        workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
        if workspace not in CUBLAS_WORKSPACES:
            raise ConfigError(
                f"measure.deterministic on CUDA needs CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE}"
                f" in the environment before CUDA starts (it is {workspace!r}); export it, or"
                " set measure.deterministic=false"
            )
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False  # autotuning may pick another kernel each run
    _set_tf32(tf32, tf32)


@contextlib.contextmanager
def exact_cuda(
    device: torch.device, *, deterministic: bool | None, precision: str, tf32: bool
) -> Iterator[dict[str, bool]]:
    """The CUDA settings of one measuring call, restored afterwards; a no-op off CUDA.

    Yields what was applied: ``{"deterministic": ..., "tf32": ...}`` (empty on a CPU).
    """
    if device.type != "cuda":
        yield {}
        return
    before = cuda_flags()
    on = resolved_deterministic(deterministic, precision)
    try:
        set_cuda_flags(deterministic=on, tf32=tf32)
        yield {"deterministic": on, "tf32": bool(tf32)}
    finally:
        restore_cuda_flags(before)


FIXED_THREADS = 2


@contextlib.contextmanager
def fixed_cpu_threads(n: int = FIXED_THREADS) -> Iterator[None]:
    """Torch on exactly ``n`` CPU threads for the block (also on a machine with fewer
    cores), then the caller's thread count again: what the block computes on the CPU is
    the same bits whatever the count was."""
    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def to_device(x: Tensor, device: torch.device) -> Tensor:
    """``x`` on ``device``; from the host to a GPU through pinned memory, without blocking."""
    if x.device == device:
        return x
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def to_host(x: Tensor) -> Tensor:
    """``x`` on the CPU: from a GPU into pinned memory, waiting for the copy to finish."""
    if x.device.type == "cpu":
        return x
    if x.device.type == "cuda":
        out = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
        out.copy_(x, non_blocking=True)
        torch.cuda.current_stream(x.device).synchronize()
        return out
    return x.cpu()
