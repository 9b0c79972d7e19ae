"""Faults, end to end, as a CI runs the suite: an implementation that hangs, crashes its process, poisons its
device, raises while being built or blows up memory on Mixtral only (``tests/fault_mutants.py``) is one located
failure there, Mixtral's other tests are not judged, Qwen3-MoE (the reference's wrapper) is judged as usual, and
the results file is complete. Also: a run killed with SIGTERM halfway leaves a valid results file marked
incomplete.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
import torch

from moe_conformance.run.results import load_schema

from .terminal_text import table_rows

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.end_to_end
SELECTION = "mixtral- or qwen3_moe-"
GREEN = {"passed", "n/a", "skipped", "not offered", "xfail"}


def run_suite(mutant: str, tmp_path: Path, *args: str, timeout: int = 600) -> tuple[subprocess.CompletedProcess, dict]:
    report = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:randomly", "--impl", f"tests.fault_mutants:{mutant}",
         "-k", SELECTION, f"--moe-report={report}", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )
    return run, json.loads(report.read_text())


def assert_one_located_fault(run: subprocess.CompletedProcess, results: dict, kind: str, *expected: str) -> dict:
    """One record of ``kind`` on Mixtral naming what is expected; Mixtral's others not judged (or judged before
    the fault); Qwen3-MoE all green; exit code 1; every selected test recorded."""
    jsonschema.validate(results, load_schema())
    log = run.stdout[-4000:] + run.stderr[-2000:]
    assert run.returncode == 1, log
    by_arch = {arch: [r for r in results["results"] if r["arch"] == arch] for arch in ("mixtral", "qwen3_moe")}
    (fault,) = [r for r in by_arch["mixtral"] if r["outcome"] == kind] or [None]
    assert fault is not None, Counter(r["outcome"] for r in by_arch["mixtral"])
    for text in expected:
        assert text in fault["message"], fault["message"]
    others = [r for r in by_arch["mixtral"] if r is not fault]
    assert all(r["outcome"] == "passed" or r.get("not_judged") for r in others), Counter(r["outcome"] for r in others)
    assert any(r.get("not_judged") for r in others), "the architecture's remaining tests must be skipped as not judged"
    assert by_arch["qwen3_moe"] and {r["outcome"] for r in by_arch["qwen3_moe"]} <= GREEN, Counter(r["outcome"] for r in by_arch["qwen3_moe"])
    assert results["incomplete"] is None and results["summary"]["total"] == len(results["results"]) > 70, results["summary"]
    row = " ".join(table_rows(run.stdout, "mixtral")["mixtral"])
    assert f"{kind.upper()} 1/" in row and "not judged" in row, row
    return fault


def test_a_hang_is_one_timeout_with_the_implementations_frames(tmp_path):
    started = time.monotonic()
    run, results = run_suite("hangs", tmp_path, "--moe-timeout", "20")
    assert_one_located_fault(run, results, "timeout", "did not return within 20 s", "fault_mutants.py")
    assert time.monotonic() - started < 20 + 60 + 120, "the run must end by itself, soon after the time limit"


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_segfault_is_one_crash_naming_the_signal(tmp_path, workers):
    run, results = run_suite("segfaults", tmp_path, "-n", workers)
    assert_one_located_fault(run, results, "crash", "Segmentation fault", "fault_mutants.py")


@pytest.mark.parametrize("workers", ["0", "2"])  # with 2, both workers may hit Mixtral at once: still one DEVICE
def test_a_sticky_device_error_is_one_device_fault_and_its_worker_is_replaced(tmp_path, workers):
    run, results = run_suite("reports_sticky_device_error", tmp_path, "-n", workers)
    assert_one_located_fault(run, results, "device", "device-side assert triggered")
    assert "rerun" not in run.stdout.splitlines()[-1], "the test given back to a fresh worker is not a result"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a device-side assert needs a CUDA device")
@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_cuda_device_side_assert_is_one_device_fault(tmp_path, workers):
    run, results = run_suite("device_assert", tmp_path, "--device", "cuda", "-n", workers)
    assert_one_located_fault(run, results, "device", "device-side assert triggered")


def test_an_exception_in_init_fails_mixtral_only(tmp_path):
    run, results = run_suite("raises_in_init", tmp_path)
    mixtral = [r for r in results["results"] if r["arch"] == "mixtral" and r["outcome"] == "failed"]
    assert mixtral and all("cannot be built for Mixtral" in r["message"] for r in mixtral), mixtral[:2]
    assert {r["outcome"] for r in results["results"] if r["arch"] == "qwen3_moe"} <= GREEN
    assert run.returncode == 1 and results["incomplete"] is None


def test_a_memory_blow_up_fails_an_allocation_in_mixtral_only(tmp_path):
    run, results = run_suite("blows_up_memory", tmp_path, "--memory-limit", "1")
    mixtral = [r for r in results["results"] if r["arch"] == "mixtral" and r["outcome"] not in GREEN]
    assert mixtral and all(r["outcome"] == "failed" for r in mixtral), Counter(r["outcome"] for r in mixtral)
    assert any("allocate" in r["message"] for r in mixtral), mixtral[0]["message"]
    assert {r["outcome"] for r in results["results"] if r["arch"] == "qwen3_moe"} <= GREEN
    assert run.returncode == 1 and results["incomplete"] is None


def test_sigterm_halfway_leaves_a_valid_results_file_marked_incomplete(tmp_path):
    report = tmp_path / "results.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "conformance", "-p", "no:randomly", "--impl", "tests.fault_mutants:hangs",
         "-k", SELECTION, f"--moe-report={report}", "-n", "2", "-v"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    lines = []
    for line in process.stdout:  # until a test has passed: the hanging one holds its worker, the other goes on
        lines.append(line)
        if " PASSED " in line:
            break
    time.sleep(2)
    os.killpg(process.pid, signal.SIGTERM)  # as a CI time limit does: the whole process group
    rest, _ = process.communicate(timeout=120)
    results = json.loads(report.read_text())
    jsonschema.validate(results, load_schema())
    assert results["incomplete"] and "SIGTERM" in results["incomplete"]["reason"], "".join(lines) + rest
    assert 0 < results["incomplete"]["recorded"] == len(results["results"]) < results["incomplete"]["selected"]
    assert results["summary"]["status"] == "failed"
