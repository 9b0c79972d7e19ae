"""The device table: where the suite can run, one ``Device`` entry each (the dtypes its checks run in, their
tolerances, its header text, how a process is prepared for it, which errors poison it). Adding a device is one
entry in ``DEVICES``; ``--device`` offers its name, and nothing else in the suite names a device.

The device is chosen once per run (``--device``, or ``$MOE_CONFORMANCE_DEVICE``), before collection, because it
is part of every test id (``Setting.id`` appends ``-<device>`` off the CPU) and decides which dtypes the checks
run in. A setting names the device *type* (``cuda``), never an index, so every xdist worker collects the same
ids; each worker then makes one GPU its current device (``prepare``).

This module imports torch only inside its functions: the pytest entry point (``run/options.py``) reads the
device names here in every pytest run of an environment, where torch must not be imported.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CHOICES", "DEFAULT", "DEVICES", "ENV_VAR", "Device", "DeviceError", "describe", "dtype_name", "dtypes_for",
           "placement", "prepare", "resolve", "tolerance", "worker_index"]

ENV_VAR = "MOE_CONFORMANCE_DEVICE"
DEFAULT = "cpu"
# Set, torch ignores the TF32 flags and runs float32 matmuls in TF32 (see CUDA's entry).
TF32_OVERRIDE = "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE"


class DeviceError(Exception):
    """The device asked for cannot be used here; the message says why and what to do."""


@dataclass(frozen=True)
class Device:
    """One place the suite runs."""

    name: str  # the device type, as torch names it and as test ids end
    # The dtypes the dtype-dependent checks run in (names of torch dtypes), the first the reference precision.
    dtypes: tuple[str, ...]
    # Largest |got - want| allowed, relative to max |want| (the output's own scale), per dtype name.
    tolerances: dict[str, float]
    unusable: Callable[[], str | None]  # why this device cannot be used in this process, or None
    header: Callable[[], str]  # the run header's and the reports' description of it
    prepare: Callable[[int | None], None] = lambda worker: None  # ready this process (xdist worker index or None)
    placement: Callable[[], str] = lambda: DEFAULT  # where this process runs its work, for the results
    # Messages of errors after which the device context is unusable for the rest of the process: the test where
    # one surfaces is a DEVICE fault, and the worker running it is replaced.
    sticky_errors: tuple[str, ...] = ()
    # Whether a test may be held to an address-space limit (--memory-limit): a GPU driver maps far more address
    # space than it allocates, so only host-memory devices are.
    address_space_limited: bool = False


def _cuda_unusable() -> str | None:
    import torch

    if not torch.cuda.is_available():
        build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a build without CUDA"
        return (f"--device cuda: no CUDA device here (torch {torch.__version__}, {build}; torch.cuda.is_available() "
                "is False); use --device cpu, or --device auto to take a GPU only where there is one")
    if os.environ.get(TF32_OVERRIDE, "0") not in ("", "0"):
        return (f"--device cuda: {TF32_OVERRIDE} is set, which forces float32 matmuls into TF32; the float32 "
                "tolerance (1e-5) is for IEEE float32: unset it")
    return None


def _cuda_prepare(worker: int | None) -> None:
    """One GPU per xdist worker (round robin) and TF32 off: a TF32 matmul keeps 10 mantissa bits, which would make
    float32 outputs differ by ~1e-3 relative, ten times the 1e-4 drift the float32 tolerance must catch. The
    legacy flags, not the fp32_precision API: mixing the two makes torch's own getters raise, and transformers
    reads the legacy ones. bfloat16/float16 keep torch's defaults, as users run them (their tolerances were
    measured that way)."""
    import torch

    if worker is not None:
        torch.cuda.set_device(worker % torch.cuda.device_count())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _cuda_header() -> str:
    """``cuda: NVIDIA H100 80GB HBM3, CUDA 13.0, compute 9.0, TF32 off`` (``2 x ...`` where xdist workers are
    spread over two GPUs)."""
    import torch

    count = torch.cuda.device_count()
    names = sorted({torch.cuda.get_device_name(i) for i in range(count)})
    major, minor = torch.cuda.get_device_capability(0)
    gpus = f"{count} x {', '.join(names)}" if count > 1 else names[0]
    tf32 = "on" if torch.backends.cuda.matmul.allow_tf32 else "off"
    spread = "; xdist workers spread over them (cuda:{worker index % " + str(count) + "})" if count > 1 else ""
    return f"cuda: {gpus}, CUDA {torch.version.cuda}, compute {major}.{minor}, TF32 {tf32}{spread}"


def _cuda_placement() -> str:
    import torch

    return f"cuda:{torch.cuda.current_device()}"


DEVICES: dict[str, Device] = {
    device.name: device
    for device in (
        # float16 is not checked on a CPU: its matmuls are emulated there and nobody calibrates in it.
        # float32: an expert run on all tokens and gathered differs from it run on the routed rows by rounding
        # only (~1e-7), so 1e-5 keeps two orders of margin and still fails a 1e-4 drift; bfloat16 keeps 8 bits
        # (ulp 2^-8): 2e-2 allows a few ulps of re-ordered accumulation and nothing more.
        Device("cpu", ("float32", "bfloat16"), {"float32": 1e-5, "bfloat16": 2e-2, "float16": 2e-3},
               unusable=lambda: None, header=lambda: "cpu", address_space_limited=True),
        # Measured on an H100 over every architecture and setting (benchmarks/measure_rounding.py), TF32 off:
        # float32 at most 4.9e-7 (1e-5 keeps 20x); bfloat16 1.03e-2 and float16 1.4e-3, about 1.3 and 1.4 of
        # their eps (cuBLAS and the grouped kernels accumulate in other orders than per-expert Linears), so 3e-2
        # and 4e-3: about 3x the worst seen, 4 eps each.
        Device("cuda", ("float32", "bfloat16", "float16"), {"float32": 1e-5, "bfloat16": 3e-2, "float16": 4e-3},
               unusable=_cuda_unusable, header=_cuda_header, prepare=_cuda_prepare, placement=_cuda_placement,
               sticky_errors=("device-side assert triggered", "an illegal memory access was encountered",
                              "unspecified launch failure", "an illegal instruction was encountered",
                              "misaligned address")),
    )
}
# --device's choices: every device, and auto (the first usable one after the CPU, else the CPU).
CHOICES = (*DEVICES, "auto")


def resolve(choice: str | None) -> str:
    """The device a ``--device`` choice means here (``auto``: the first usable device besides the CPU, else the
    CPU); one that cannot be used is a ``DeviceError`` saying why and what to do."""
    choice = (choice or os.environ.get(ENV_VAR) or DEFAULT).strip().lower()
    if choice not in CHOICES:
        raise DeviceError(f"--device {choice!r}: expected one of {', '.join(CHOICES)} (also ${ENV_VAR})")
    if choice == "auto":
        return next((name for name, d in DEVICES.items() if name != DEFAULT and d.unusable() is None), DEFAULT)
    why = DEVICES[choice].unusable()
    if why:
        raise DeviceError(why)
    return choice


def dtypes_for(device: str) -> tuple:
    """The torch dtypes the dtype-dependent checks run in on ``device``."""
    import torch

    return tuple(getattr(torch, name) for name in DEVICES[device].dtypes)


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def tolerance(device: str, dtype) -> float:
    """The tolerance of an output computed in ``dtype`` on a ``device`` (float32's where the dtype has none:
    integer or double outputs are held to the tightest; the CPU's on a device the table does not list)."""
    by_dtype = DEVICES[device].tolerances if device in DEVICES else DEVICES[DEFAULT].tolerances
    return by_dtype.get(dtype_name(dtype), by_dtype["float32"])


def worker_index(worker: str | None = None) -> int | None:
    """The xdist worker's index (``gw3`` -> 3), or None outside a worker."""
    worker = worker if worker is not None else os.environ.get("PYTEST_XDIST_WORKER")
    return int(worker[2:]) if worker and worker.startswith("gw") and worker[2:].isdigit() else None


def prepare(device: str, worker: str | None = None) -> None:
    """Make this process ready for ``device`` (on CUDA: its GPU, one per xdist worker, and TF32 off)."""
    DEVICES[device].prepare(worker_index(worker))


def placement(device: str) -> str:
    """Where this process runs ``device`` work: ``cuda:1`` on a worker's GPU, ``cpu``."""
    return DEVICES[device].placement()


def describe(device: str) -> str:
    """For the run header and reports."""
    return DEVICES[device].header()
