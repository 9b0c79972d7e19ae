"""An implementation that covers some architectures: an uncovered one is one failure (its ``covered`` test),
not one per check, and ``--covered-only`` turns that failure into a skip while the run still lists it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from moe_conformance.checks.table import CHECKS

from .terminal_text import table_rows, unwrapped

REPO = Path(__file__).resolve().parent.parent
# mixtral is covered by tests.single_architecture, qwen3_moe is not (both exist in every supported transformers)
SELECTION = "mixtral- or qwen3_moe-"


def _run(*options: str) -> tuple[dict[str, int], str]:
    env = {k: v for k, v in os.environ.items() if k != "MOE_CONFORMANCE_IMPL"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "conformance", "-p", "no:xdist", "-q", "-rfEs", "--impl", "tests.single_architecture",
         "-k", SELECTION, *options],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env,
    )
    last = run.stdout.strip().splitlines()[-1]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", last)}
    return {"rc": run.returncode, **counts}, run.stdout


@pytest.fixture(scope="module")
def default_run():
    return _run()


def test_uncovered_architecture_is_one_failure(default_run):
    counts, out = default_run
    assert counts["rc"] == 1 and counts.get("failed") == 1, out[-3000:]
    assert "FAILED conformance/test_conformance.py::test_conformance[qwen3_moe-covered]" in out
    assert "uncovered: calibration would be silently skipped" in unwrapped(out)
    # every other qwen3_moe check is skipped as uncovered; mixtral passes everything that applies
    assert not re.search(r"FAILED .*mixtral-", out) and not re.search(r"^ERROR ", out, re.MULTILINE), out[-3000:]
    rows = table_rows(out, "qwen3_moe", "mixtral")
    assert rows["qwen3_moe"] == ["FAIL", "1/1", *["uncovered"] * (len(CHECKS) - 1)], rows
    cells = rows["mixtral"]
    assert "ok" in cells and set(cells) <= {"ok", "n/a"}, rows  # n/a: 4.57 has no experts_implementation
    skips = re.findall(r"^SKIPPED \[(\d+)\] \S+ (.*)$", out, re.MULTILINE)
    uncovered = [(n, reason) for n, reason in skips if not reason.startswith("not applicable")]  # n/a: 4.57's mixtral
    assert uncovered and all(reason.startswith("qwen3_moe: uncovered") for _, reason in uncovered), skips
    assert sum(int(n) for n, _ in skips) == counts["skipped"] > 0


def test_covered_only_run_is_green_and_lists_the_uncovered(default_run):
    counts, out = _run("--covered-only")
    assert counts["rc"] == 0 and "failed" not in counts, out[-3000:]
    assert counts.get("passed") == default_run[0]["passed"]  # mixtral: the same tests pass
    assert "uncovered: calibration would be silently skipped (tests.single_architecture has no wrapper for " \
        "Qwen3MoeSparseMoeBlock); skipped (--covered-only)" in unwrapped(out)
