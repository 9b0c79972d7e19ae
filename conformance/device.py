"""Where the suite runs: ``--device {cpu,cuda,auto}`` (or ``MOE_CONFORMANCE_DEVICE``), the dtypes each device is
checked in, and how a process is prepared for its device.

The device is chosen once per run, before collection (``set_run_device``), because it is part of every test id
(``Setting.id`` appends ``-<device>`` off the CPU) and decides which dtypes the checks run in. A setting names
the device *type* (``cuda``), never an index, so that every xdist worker collects the same ids; each worker then
makes one GPU its current device (``prepare``: ``cuda:{worker index % GPU count}``), and ``.to("cuda")`` lands
there.

TF32 is switched off for the run (cuBLAS matmuls and cuDNN): a TF32 matmul keeps 10 mantissa bits, which would
make float32 outputs differ by ~1e-3 relative — ten times the 1e-4 drift the float32 tolerance must catch. The
bfloat16/float16 matmuls keep torch's defaults (reduced-precision reductions allowed), as users run them; their
tolerances were measured that way.
"""

from __future__ import annotations

import os

import torch

__all__ = [
    "CHOICES",
    "DTYPES",
    "ENV_VAR",
    "DeviceError",
    "describe",
    "dtypes_for",
    "placement",
    "prepare",
    "resolve",
    "run_device",
    "set_run_device",
]

from .options import DEVICE_CHOICES as CHOICES, DEVICE_VAR as ENV_VAR  # noqa: E402  (declared with the options)

# The dtypes the dtype-dependent checks run in, per device: float16 only where it is a calibration dtype (GPUs);
# on a CPU float16 matmuls are emulated and nobody calibrates in them.
DTYPES: dict[str, tuple[torch.dtype, ...]] = {
    "cpu": (torch.float32, torch.bfloat16),
    "cuda": (torch.float32, torch.bfloat16, torch.float16),
}
# Set, torch ignores the TF32 flags and runs float32 matmuls in TF32 (see the module docstring).
TF32_OVERRIDE = "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE"

_run_device = "cpu"


class DeviceError(Exception):
    """The device asked for cannot be used here; the message says why and what to do."""


def resolve(choice: str | None) -> str:
    """The device type a ``--device`` choice means here: ``auto`` is ``cuda`` where torch sees a GPU, else
    ``cpu``. ``cuda`` without one, or with TF32 forced on, is a ``DeviceError``."""
    choice = (choice or os.environ.get(ENV_VAR) or "cpu").strip().lower()
    if choice not in CHOICES:
        raise DeviceError(f"--device {choice!r}: expected one of {', '.join(CHOICES)} (also ${ENV_VAR})")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        if not torch.cuda.is_available():
            build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a build without CUDA"
            raise DeviceError(
                f"--device cuda: no CUDA device here (torch {torch.__version__}, {build}; torch.cuda.is_available() "
                "is False); use --device cpu, or --device auto to take a GPU only where there is one"
            )
        if os.environ.get(TF32_OVERRIDE, "0") not in ("", "0"):
            raise DeviceError(
                f"--device cuda: {TF32_OVERRIDE} is set, which forces float32 matmuls into TF32; the float32 "
                "tolerance (1e-5) is for IEEE float32: unset it"
            )
    return choice


def set_run_device(device: str) -> None:
    """The device this run's settings name (the pytest plugin sets it before collection)."""
    global _run_device
    if device not in DTYPES:
        raise DeviceError(f"unknown device type {device!r}")
    _run_device = device


def run_device() -> str:
    return _run_device


def dtypes_for(device: str) -> tuple[torch.dtype, ...]:
    return DTYPES[device]


def worker_index(worker: str | None = None) -> int | None:
    """The xdist worker's index (``gw3`` -> 3), or None outside a worker."""
    worker = worker if worker is not None else os.environ.get("PYTEST_XDIST_WORKER")
    return int(worker[2:]) if worker and worker.startswith("gw") and worker[2:].isdigit() else None


def prepare(device: str, worker: str | None = None) -> None:
    """Make this process ready for ``device``: on CUDA, its GPU (one per xdist worker, round robin) and TF32
    off."""
    if device != "cuda":
        return
    index = worker_index(worker)
    if index is not None:
        torch.cuda.set_device(index % torch.cuda.device_count())
    # The legacy flags, not the fp32_precision API: mixing the two makes torch's own getters raise, and
    # transformers reads the legacy ones.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def placement(device: str) -> str:
    """Where this process runs ``device`` work: ``cuda:1`` on a worker's GPU, ``cpu``."""
    return f"cuda:{torch.cuda.current_device()}" if device == "cuda" else device


def describe(device: str) -> str:
    """For the run header and reports: ``cpu``, or ``cuda: NVIDIA H100 80GB HBM3, CUDA 13.0, compute 9.0, TF32
    off`` (``2 x ...`` on a host with two GPUs, where xdist workers are spread over them)."""
    if device != "cuda":
        return device
    count = torch.cuda.device_count()
    names = sorted({torch.cuda.get_device_name(i) for i in range(count)})
    major, minor = torch.cuda.get_device_capability(0)
    gpus = f"{count} x {', '.join(names)}" if count > 1 else names[0]
    tf32 = "on" if torch.backends.cuda.matmul.allow_tf32 else "off"
    spread = "; xdist workers spread over them (cuda:{worker index % " + str(count) + "})" if count > 1 else ""
    return f"cuda: {gpus}, CUDA {torch.version.cuda}, compute {major}.{minor}, TF32 {tf32}{spread}"
