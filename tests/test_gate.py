"""The gate's promises: pinned installs, one torch thread unless the user chose, truthful reports."""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_commands_install_a_pinned_environment_that_tox_knows():
    commands = _readme_commands()
    assert len(commands) == 2
    files = {m for c in commands for m in re.findall(r"-c (constraints/tf\d+\.txt)", c)}
    assert len(files) == 1, f"both README commands must install from one constraints file, found {files}"
    pins = (REPO / files.pop()).read_text()
    assert re.search(r"^transformers==\d+\.\d+\.\d+$", pins, re.M) and re.search(r"^torch==2\.13\.0$", pins, re.M)
    parser = configparser.ConfigParser()
    parser.read(REPO / "tox.ini")
    envs = [e.strip() for e in parser["tox"]["envlist"].split(",")]
    for env in envs:  # every gate env has its complete freeze, and tox installs through it
        version = (REPO / "constraints" / f"{env}.txt").read_text()
        assert re.search(r"^transformers==", version, re.M), env
        assert f"{env}: PIP_CONSTRAINT = {{toxinidir}}/constraints/{env}.txt" in parser["testenv"]["setenv"]
    assert "tf-newest" not in envs, "the canary must stay outside the gate"




@pytest.mark.parametrize("chosen", [None, "2"])
def test_torch_runs_single_threaded_unless_the_user_chose(chosen):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTEST_XDIST_WORKER")}
    if chosen:
        env["OMP_NUM_THREADS"] = chosen
    # --collect-only -q prints no header, so ask the plugin's own helper in a fresh interpreter instead
    probe = (
        "import moe_conformance.run.plugin as p, torch; p.single_threaded_unless_set(); print(torch.get_num_threads())"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) == (int(chosen) if chosen else 1)


def _render(tmp_path: Path, data: dict) -> tuple[int, str]:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    run = subprocess.run(
        [sys.executable, str(REPO / "reports" / "generate.py"), str(path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    # rendered beside the results file, never into this checkout's reports/
    assert not (REPO / "reports" / "tests_fake_impl-transformers-0.0.0.md").exists()
    return run.returncode, (tmp_path / "tests_fake_impl-transformers-0.0.0.md").read_text()


ENVIRONMENT = {"implementation": "tests.fake_impl (1 wrappers, own context)", "transformers": "0.0.0", "torch": "t",
               "python": "p", "platform": "x"}
RESULT = {"arch": "a", "check": "covered", "variant": "default", "mode": None, "dtype": "None", "outcome": "passed",
          "message": "", "nodeid": "n"}


def test_a_report_of_a_failed_suite_says_so_at_the_top_and_names_the_uncovered(tmp_path):
    completeness = {"transformers": "0.0.0", "found": 3, "covered": 1, "excluded": {"X": "why"},
                    "no_wrapper": ["NewMoE"], "no_fixture": ["NewMoE"]}
    failure = {"nodeid": "conformance/test_completeness.py::test_registry_completeness", "when": "call",
               "message": "AssertionError: 2 MoE classes"}
    code, text = _render(tmp_path, {"environment": ENVIRONMENT, "exit_code": 1, "completeness": completeness,
                                    "other_failures": [failure], "results": [RESULT]})
    assert code == 1
    top = text.splitlines()[2]
    assert "FAILED" in top and "1 failed" in top, top
    assert "uncovered: `NewMoE`" in text and "test_registry_completeness" in text and "excluded: `X` — why" in text


def test_a_report_of_a_passing_suite_says_passed(tmp_path):
    code, text = _render(tmp_path, {"environment": ENVIRONMENT, "exit_code": 0, "completeness": None,
                                    "other_failures": [], "results": [RESULT]})
    assert code == 0 and "**Suite: PASSED**" in text.splitlines()[2]


def test_an_exit_code_alone_fails_the_report(tmp_path):
    """A run the plugin saw nothing wrong in, but whose process failed (an internal error), is still red."""
    code, text = _render(tmp_path, {"environment": ENVIRONMENT, "exit_code": 3, "results": [RESULT]})
    assert code == 1 and "FAILED (suite exit code 3)" in text


def test_a_kill_table_goes_only_to_the_reports_of_its_device(tmp_path):
    """A kill table run on the CPU (one without a device ran on the CPU) is not the GPU report's."""
    kills = {"schema": "moe-conformance/kill-table", "transformers": "0.0.0", "exit_code": 0, "selection": None,
             "mutants": 1, "killed": 1, "applicable": 1, "rows": [["drift_1e_4", "output_matches: 1"]]}
    files = {"cpu.json": {"environment": ENVIRONMENT, "exit_code": 0, "results": [RESULT]},
             "cuda.json": {"environment": {**ENVIRONMENT, "device": {"kind": "cuda", "model": "a GPU"}}, "exit_code": 0, "results": [RESULT]},
             "kills.json": kills}
    for name, data in files.items():
        (tmp_path / name).write_text(json.dumps(data))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(REPO / "reports" / "generate.py"), *(str(tmp_path / n) for n in files), "--output-dir", str(out)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "## Mutation kill table" in (out / "tests_fake_impl-transformers-0.0.0.md").read_text()
    assert "## Mutation kill table" not in (out / "tests_fake_impl-transformers-0.0.0-cuda.md").read_text()
