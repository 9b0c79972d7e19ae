"""Implementations that fault instead of computing wrong numbers: the suite must contain each to one located
failure on Mixtral and judge Qwen3-MoE (the reference's wrapper) as usual. Each attribute is an implementation
namespace for ``--impl tests.fault_mutants:<name>``; ``tests/test_faults.py`` runs them end to end.
"""

from __future__ import annotations

import ctypes
import threading
from types import SimpleNamespace

import torch

from moe_conformance.wrappers import CalibrationMoEBlock

FAULTY, HEALTHY = "MixtralSparseMoeBlock", "Qwen3MoeSparseMoeBlock"


def _namespace(faulty: type) -> SimpleNamespace:
    return SimpleNamespace(CALIBRATION_WRAPPERS={FAULTY: faulty, HEALTHY: CalibrationMoEBlock})


class _Hangs(CalibrationMoEBlock):
    def forward(self, *args, **kwargs):
        threading.Event().wait()  # never set: the forward never returns


class _Segfaults(CalibrationMoEBlock):
    def forward(self, *args, **kwargs):
        ctypes.string_at(0)  # reads address 0: SIGSEGV


class _DeviceAssert(CalibrationMoEBlock):
    def forward(self, hidden_states, *args, **kwargs):
        # an out-of-bounds gather: on CUDA a device-side assert, which poisons the context for the whole process
        index = torch.full((1,), 10**6, device=hidden_states.device, dtype=torch.long)
        hidden_states.flatten()[index].sum().item()
        return super().forward(hidden_states, *args, **kwargs)


class _RaisesInInit(CalibrationMoEBlock):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        raise RuntimeError("this wrapper cannot be built for Mixtral")


class _BlowsUpMemory(CalibrationMoEBlock):
    def forward(self, *args, **kwargs):
        hoard = []
        while True:  # 256 MiB more each round, touched, never freed
            hoard.append(torch.ones(64 * 2**20))


hangs = _namespace(_Hangs)
segfaults = _namespace(_Segfaults)
device_assert = _namespace(_DeviceAssert)
raises_in_init = _namespace(_RaisesInInit)
blows_up_memory = _namespace(_BlowsUpMemory)


class _ReportsStickyDeviceError(CalibrationMoEBlock):
    """What torch raises after a device-side assert, on any device: the CPU's stand-in for ``device_assert``, so
    that DEVICE and the worker's replacement are exercised where there is no GPU."""

    def forward(self, *args, **kwargs):
        raise RuntimeError("CUDA error: device-side assert triggered\nCompile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.")


reports_sticky_device_error = _namespace(_ReportsStickyDeviceError)
