"""Outcomes are decided in one place (``conformance.outcomes.evaluate``) and reach the pytest layer, the summary
table and ``--moe-report`` as data: a harness or fixture fault is an ERROR, never the implementation's FAIL;
n/a and xfail travel as kinds, not as text parsed back; a failure prints its verdict in a few lines."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from moe_conformance import CHECKS, Setting, evaluate, load_cases, load_implementation
from moe_conformance.cases.arch import FIXTURES_DIR
from moe_conformance.wrappers import CalibrationMoEBlock
from tests.versions import requires_transformers_5

pytestmark = requires_transformers_5

REPO = Path(__file__).resolve().parent.parent
ARCH = "glm4_moe_lite"
CASE = next(case for case in load_cases() if case.model_type == ARCH)
REFERENCE = load_implementation("reference")
MAX_LINES_PER_FAILURE = 15


class RaisesInForward(CalibrationMoEBlock):
    def forward(self, *args, **kwargs):
        raise RuntimeError("raised by the implementation's forward")


# ``--impl tests.test_outcomes:raises_in_forward``: a wrapper whose forward raises, for the short-failure report.
raises_in_forward = SimpleNamespace(CALIBRATION_WRAPPERS={CASE.block: RaisesInForward})


def _setting(check: str, **fields) -> Setting:
    return next(CHECKS[check].settings(CASE)).replace(**fields)


def test_the_original_block_raising_is_an_error_not_a_failure(monkeypatch):
    def broken(self, *args, **kwargs):
        raise RuntimeError("the original is broken")

    monkeypatch.setattr(CASE.block_class, "forward", broken)
    outcome = evaluate(CASE, CHECKS["output_matches"], _setting("output_matches"), REFERENCE)
    assert outcome.kind == "error", outcome
    assert "the original Glm4MoeLiteMoE raised RuntimeError: the original is broken" in outcome.message
    assert outcome.message.startswith(f"{ARCH}-output_matches-default-all_experts-float32, shape (2, 5)")


def test_a_fixture_without_model_class_is_an_error_naming_file_and_entry():
    case = dataclasses.replace(CASE, model_class=None)
    outcome = evaluate(case, CHECKS["whole_model"], _setting("whole_model"), REFERENCE)
    assert outcome.kind == "error", outcome
    assert re.search(rf"fixtures/\w+\.toml \[architectures\.{ARCH}\] names no model_class", outcome.message), outcome.message


def test_a_fixture_config_that_cannot_be_built_is_an_error():
    case = dataclasses.replace(CASE, config={**CASE.config, "n_routed_experts": "eight"})
    outcome = evaluate(case, CHECKS["output_matches"], _setting("output_matches"), REFERENCE)
    assert outcome.kind == "error", outcome
    assert f"[architectures.{ARCH}]" in outcome.message and "raised" in outcome.message


def test_a_bug_in_the_harness_is_an_error(monkeypatch):
    from moe_conformance.checks import structure as checks_structure

    monkeypatch.setattr(checks_structure, "expert_layout", lambda case, block: 1 / 0)
    outcome = evaluate(CASE, CHECKS["experts_are_linear"], _setting("experts_are_linear"), REFERENCE)
    assert outcome.kind == "error" and "harness error ZeroDivisionError" in outcome.message, outcome


def test_the_implementation_breaking_the_contract_is_a_failure():
    outcome = evaluate(CASE, CHECKS["output_matches"], _setting("output_matches"), load_implementation("tests.mutants:drift_1e_4"))
    assert outcome.kind == "failed" and "exceeds" in outcome.message, outcome


def test_xfail_is_a_kind_and_strict():
    case = dataclasses.replace(CASE, xfail={"output_matches": "a known gap"})
    setting = _setting("output_matches")
    expected = evaluate(case, CHECKS["output_matches"], setting, load_implementation("tests.mutants:drift_1e_4"))
    assert expected.kind == "xfail" and "a known gap" in expected.message, expected
    unexpected = evaluate(case, CHECKS["output_matches"], setting, REFERENCE)
    assert unexpected.kind == "failed" and "expects it to fail: a known gap" in unexpected.message, unexpected


def test_skip_and_not_applicable_are_kinds():
    case = dataclasses.replace(CASE, skip={"output_matches": "not today"})
    assert evaluate(case, CHECKS["output_matches"], _setting("output_matches"), REFERENCE).kind == "skipped"
    dbrx = next(case for case in load_cases() if case.model_type == "dbrx")
    setting = next(CHECKS["experts_implementation"].settings(dbrx))
    outcome = evaluate(dbrx, CHECKS["experts_implementation"], setting, REFERENCE)
    assert outcome.kind == "n/a" and outcome.green, outcome


# -- through pytest --------------------------------------------------------------------------------------------


def _pytest(*args: str, fixtures: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MOE_CONFORMANCE_IMPL"}
    if fixtures is not None:
        env["MOE_CONFORMANCE_FIXTURES"] = str(fixtures)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "conformance", "-n", "0", "-p", "no:randomly", *args],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env,
    )


def _failure_blocks(output: str) -> list[list[str]]:
    """The per-test reports of the FAILURES / ERRORS sections: each from its ``____ test_... ____`` heading to
    the next heading or section."""
    blocks: list[list[str]] = []
    inside = False
    for line in output.splitlines():
        if re.match(r"^=+ (FAILURES|ERRORS) =+$", line):
            inside = True
        elif re.match(r"^=+ .* =+$", line):
            inside = False
        elif inside and re.match(r"^_+ .*test_conformance\[.*\] _+$", line):
            blocks.append([line])
        elif inside and blocks:
            blocks[-1].append(line)
    return blocks


def _results(path: Path) -> list[dict]:
    return json.loads(path.read_text())["results"]


def test_failures_are_short_by_default_and_long_on_request(tmp_path):
    selection = f"{ARCH}-output_matches-default or {ARCH}-routing_properties"
    run = _pytest("--impl", "tests.mutants:drift_1e_4", "-k", selection)
    blocks = _failure_blocks(run.stdout)
    assert run.returncode == 1 and len(blocks) == 3, run.stdout[-3000:]
    for block in blocks:
        assert len(block) <= MAX_LINES_PER_FAILURE, "\n".join(block)
        assert any(line.startswith(f"FAIL: {ARCH}-") and "exceeds" in line for line in block), "\n".join(block)
    long = _pytest("--impl", "tests.mutants:drift_1e_4", "-k", f"{ARCH}-output_matches-default-all_experts-float32", "--tb=long")
    assert "def compare_outputs" in long.stdout or "_compare_tensors" in long.stdout, long.stdout[-3000:]


def test_an_implementation_that_raises_shows_its_own_frame(tmp_path):
    run = _pytest("--impl", "tests.test_outcomes:raises_in_forward", "-k", f"{ARCH}-output_matches-default-all_experts-float32")
    blocks = _failure_blocks(run.stdout)
    assert run.returncode == 1 and len(blocks) == 1, run.stdout[-3000:]
    text = "\n".join(blocks[0])
    assert len(blocks[0]) <= MAX_LINES_PER_FAILURE, text
    assert "the wrapper raised RuntimeError: raised by the implementation's forward" in text
    assert re.search(r"tests/test_outcomes\.py:\d+ in forward: raise RuntimeError", text), text


def test_harness_errors_and_not_applicable_reach_the_table_as_kinds(tmp_path):
    fixtures = tmp_path / "fixtures"
    shutil.copytree(FIXTURES_DIR, fixtures)
    # The architecture's entry loses its model_class: a fixture fault for the whole-model check.
    source = next(p for p in fixtures.glob("*.toml") if f"[architectures.{ARCH}]" in p.read_text())
    entry = source.read_text().split(f"[architectures.{ARCH}]", 1)
    source.write_text(entry[0] + f"[architectures.{ARCH}]" + re.sub(r"\nmodel_class = [^\n]*", "", entry[1], count=1))
    report = tmp_path / "results.json"
    selection = f"{ARCH}-whole_model-routed-float32 or dbrx-experts_implementation-routed-float32"
    run = _pytest("-k", selection, f"--moe-report={report}", fixtures=fixtures)
    assert run.returncode == 1, run.stdout[-3000:]
    outcomes = {r["id"]: r for r in _results(report)}
    error = outcomes[f"{ARCH}-whole_model-routed-float32"]
    assert error["outcome"] == "error" and f"{source.name} [architectures.{ARCH}]" in error["message"], error
    assert outcomes["dbrx-experts_implementation-routed-float32"]["outcome"] == "n/a"
    assert re.search(rf"{ARCH}\s.*ERROR 1/1", run.stdout) and re.search(r"dbrx\s.*n/a", run.stdout), run.stdout[-3000:]
    assert "1 error" in run.stdout.splitlines()[-1] and "failed" not in run.stdout.splitlines()[-1], run.stdout[-500:]
    assert all(len(block) <= MAX_LINES_PER_FAILURE for block in _failure_blocks(run.stdout))
