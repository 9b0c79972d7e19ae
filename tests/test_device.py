"""--device: what runs where, checked on a machine without a GPU (the GPU runs themselves are on the H100,
docs/gpu.md): ids and dtypes per device, the usage error without CUDA, fixture gaps scoped by device, the
tolerances per (device, dtype), one GPU per xdist worker, and reports named by device."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from moe_conformance import load_cases
from moe_conformance.cases import devices
from moe_conformance.checks.table import CHECKS
from moe_conformance.checks.verdicts import compare_outputs
from moe_conformance.vocabulary import ConformanceFailure

REPO = Path(__file__).resolve().parent.parent
CASE = next(case for case in load_cases() if case.model_type == "glm4_moe_lite")


def test_cuda_settings_add_float16_and_name_the_device():
    cpu = list(CHECKS["output_matches"].settings(CASE, device="cpu"))
    cuda = list(CHECKS["output_matches"].settings(CASE, device="cuda"))
    assert {s.dtype for s in cpu} == {torch.float32, torch.bfloat16}
    assert {s.dtype for s in cuda} == {torch.float32, torch.bfloat16, torch.float16}
    assert all(s.id.endswith("-cuda") for s in cuda) and not any(s.id.endswith("-cpu") for s in cpu)
    # Checks declared for float32 alone stay float32 on every device.
    assert {s.dtype for s in CHECKS["restore_semantics"].settings(CASE, device="cuda")} == {torch.float32}


def test_cuda_without_a_gpu_is_one_usage_error(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(devices.DeviceError, match="no CUDA device here"):
        devices.resolve("cuda")
    assert devices.resolve("auto") == "cpu"
    monkeypatch.setenv(devices.ENV_VAR, "auto")
    assert devices.resolve(None) == "cpu"
    env = {k: v for k, v in os.environ.items() if k != devices.ENV_VAR}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "conformance", "--device", "cuda", "-k", "glm4_moe_lite-covered", "-p", "no:randomly"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
    )
    assert run.returncode == 4, run.stdout[-2000:] + run.stderr[-2000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and "--device cuda: no CUDA device here" in errors[0], run.stderr


def test_tf32_forced_on_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv(devices.TF32_OVERRIDE, "1")
    with pytest.raises(devices.DeviceError, match="TF32"):
        devices.resolve("cuda")


def test_fixture_gaps_scoped_by_device_and_by_lists():
    case = dataclasses.replace(CASE, xfail={"whole_model": {"reason": "fp16 kernel", "device": "cuda", "dtype": ["bfloat16", "float16"]}})
    assert case.expected_gap("xfail", "whole_model", torch.float16, "cuda") == "fp16 kernel"
    assert case.expected_gap("xfail", "whole_model", torch.bfloat16, "cuda") == "fp16 kernel"
    assert case.expected_gap("xfail", "whole_model", torch.float32, "cuda") is None
    assert case.expected_gap("xfail", "whole_model", torch.bfloat16, "cpu") is None


def test_every_device_tolerance_fails_a_1e_4_drift_in_float32():
    """The float32 tolerance of every device stays below the drift it must catch; the CUDA half-precision ones
    are the measured ones (docs/checks.md, "Tolerance")."""
    for name, device in devices.DEVICES.items():
        assert device.tolerances["float32"] * 10 <= 1e-4, name
        assert set(device.dtypes) <= set(device.tolerances), name
    tolerance = devices.tolerance
    assert tolerance("cuda", torch.bfloat16) == 3e-2 and tolerance("cuda", torch.float16) == 4e-3
    assert tolerance("cpu", torch.int64) == tolerance("cpu", torch.float32)
    want = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ConformanceFailure, match="exceeds"):
        compare_outputs(want * (1 + 1e-4), want, "t")


def test_each_xdist_worker_takes_one_gpu(monkeypatch):
    chosen = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    for worker in ("gw0", "gw1", "gw2", "gw3"):
        devices.prepare("cuda", worker=worker)
    assert chosen == [0, 1, 0, 1]
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert devices.worker_index("master") is None


def test_a_gpu_report_is_named_by_its_device_also_from_a_file_before_the_envelope(tmp_path):
    """The first GPU runs' results files named the device in one string (the header's): reports/ reads that as
    the envelope's device record, so their reports are named -cuda and say the model."""
    environment = {"implementation": "tests.fake_impl (1 wrappers, own context)", "transformers": "0.0.1", "torch": "t",
                   "python": "p", "platform": "x", "device": "cuda: NVIDIA H100 80GB HBM3, CUDA 13.0, compute 9.0, TF32 off"}
    result = {"id": "a-covered-cuda", "arch": "a", "check": "covered", "variant": "default", "mode": None, "dtype": None,
              "device": "cuda", "outcome": "passed", "message": "", "nodeid": "n"}
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"environment": environment, "exit_code": 0, "results": [result]}))
    run = subprocess.run([sys.executable, str(REPO / "reports" / "generate.py"), str(path), "--output-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    text = (tmp_path / "tests_fake_impl-transformers-0.0.1-cuda.md").read_text()
    assert "cuda (NVIDIA H100 80GB HBM3)" in text
