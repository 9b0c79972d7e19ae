"""The results file (``--moe-report``) is what its schema and docs/results-schema.md say, for a real run: its
environment envelope names what ran where, its summary agrees with its records, and a failing run says so."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections import Counter
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest
import torch
import transformers

from moe_conformance.run.results import SCHEMA_VERSION, load_schema
from tests.versions import requires_transformers_5

REPO = Path(__file__).resolve().parent.parent
# One test of each outcome the suite gives on the reference, where the installed transformers has it: passed,
# skipped (an architecture absent from 5.x), n/a (dbrx has no experts dispatch), xfail (inkling2_loop in bf16),
# and the completeness test, whose result travels in the envelope.
SMALL_RUN = ("glm4_moe_lite-covered or deepseek_v2_legacy-covered or dbrx-experts_implementation-all_experts-float32 "
             "or inkling2_loop-whole_model-all_experts-bfloat16 or test_registry_completeness")


def _run_suite(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    path = tmp_path / "results.json"
    env = {k: v for k, v in os.environ.items() if k != "MOE_CONFORMANCE_IMPL"}
    run = subprocess.run([sys.executable, "-m", "pytest", "conformance", "-q", "-n", "0", f"--moe-report={path}", *args],
                         cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert path.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    return run, json.loads(path.read_text())


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict]:
    return _run_suite(tmp_path_factory.mktemp("run"), "-k", SMALL_RUN)


def _git_head() -> str | None:
    run = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    return run.stdout.strip() if run.returncode == 0 else None


def test_a_real_run_matches_the_schema_and_names_its_environment(small_run, validator):
    run, data = small_run
    assert run.returncode == 0, run.stdout[-3000:]
    errors = sorted(validator.iter_errors(data), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])
    assert data["schema_version"] == SCHEMA_VERSION
    suite, env = data["suite"], data["environment"]
    assert suite["version"] == metadata.version("moe-conformance")
    assert suite["commit"] == _git_head() and suite["source"] == ("git" if _git_head() else "package")
    assert data["implementation"]["name"] == "reference" and data["implementation"]["spec"] == "reference"
    assert (env["transformers"], env["torch"]) == (transformers.__version__, torch.__version__)
    assert env["device"]["kind"] == "cpu" and env["device"]["name"] == "cpu"
    assert data["exit_code"] == 0 and data["duration_s"] > 0 and data["selection"] == SMALL_RUN
    assert data["completeness"]["transformers"] == transformers.__version__
    assert [c["name"] for c in data["checks"]][:2] == ["covered", "all_experts_observed"]


@requires_transformers_5  # its selection names glm4_moe_lite
def test_the_summary_agrees_with_the_records(small_run):
    _, data = small_run
    results = data["results"]
    assert data["summary"] == {"status": "passed", "total": len(results), "outcomes": dict(Counter(r["outcome"] for r in results)),
                               "other_failures": 0}
    kinds = {r["id"]: r["outcome"] for r in results}
    assert kinds["glm4_moe_lite-covered"] == "passed"
    assert kinds["dbrx-experts_implementation-all_experts-float32"] == "n/a"
    if "deepseek_v2_legacy-covered" in kinds and transformers.__version__.startswith("5."):
        assert kinds["deepseek_v2_legacy-covered"] == "skipped"
    xfails = [r for r in results if r["outcome"] == "xfail"]
    assert all(r["message"].startswith("expected failure (") for r in xfails), "an xfail carries the fixture's reason"


@requires_transformers_5  # its selection names glm4_moe_lite
def test_a_failing_run_is_failed_in_its_file(tmp_path, validator):
    run, data = _run_suite(tmp_path, "--impl", "tests.mutants:drift_1e_4", "-k", "glm4_moe_lite-output_matches-default-all_experts-float32")
    assert run.returncode == 1
    assert not list(validator.iter_errors(data))
    assert data["summary"]["status"] == "failed" and data["summary"]["outcomes"] == {"failed": 1} and data["exit_code"] == 1
    assert data["implementation"]["spec"] == "tests.mutants:drift_1e_4"
    assert "exceeds" in data["results"][0]["message"]


@pytest.mark.parametrize(
    ("break_it", "why"),
    [
        (lambda d: d.pop("exit_code"), "'exit_code' is a required property"),
        (lambda d: d["summary"].update(status="green"), "'green' is not one of"),
        (lambda d: d["results"][0].update(outcome=3), "3 is not of type 'string'"),
        (lambda d: d["results"][0].pop("arch"), "'arch' is a required property"),
        (lambda d: d["environment"]["device"].pop("kind"), "'kind' is a required property"),
        (lambda d: d["suite"].update(commit="HEAD"), "does not match"),
    ],
)
def test_the_schema_rejects_a_broken_file(small_run, validator, break_it, why):
    data = copy.deepcopy(small_run[1])
    break_it(data)
    messages = [e.message for e in validator.iter_errors(data)]
    assert any(why in m for m in messages), messages


def test_the_documented_fields_are_the_schema_s():
    """docs/results-schema.md names every top-level field of the schema, and no other."""
    doc = (REPO / "docs" / "results-schema.md").read_text()
    schema = load_schema()
    for name in schema["properties"]:
        assert f"`{name}`" in doc, f"docs/results-schema.md does not document {name}"
    for name in schema["$defs"]["result"]["properties"]:
        assert f"`{name}`" in doc, f"docs/results-schema.md does not document the result field {name}"
