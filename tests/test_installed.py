"""The suite as another project gets it: a non-editable install (a built wheel, installed into a folder of its
own), run from a scratch directory that is not this checkout.

- ``pytest --pyargs moe_conformance`` finds the fixture files shipped as package data, with no variable set;
- ``--impl`` names a wrapper module of the scratch directory;
- an unrelated test suite of that environment is untouched: no header, no torch import, a bad
  ``MOE_CONFORMANCE_IMPL`` ignored;
- only one top-level import name is installed;
- the reusable workflow's own commands, read from ``.github/workflows/moe-conformance.yml`` (so that test and
  workflow cannot drift), with a wrapper module that has one bug, report exactly what the same run from this
  checkout reports: the same outcome per test, the same record count, exit code and status, the run header and
  the architecture x check table, under ``-n 0`` and ``-n 2``; and bad input is one line and exit code 4.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from .terminal_text import table_rows

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "conformance", "reference", "wrappers", "fixtures")
ARCH, BLOCK = "mixtral", "MixtralSparseMoeBlock"  # in every transformers version this project supports
pytestmark = [pytest.mark.end_to_end, pytest.mark.skipif(not (REPO / "fixtures").is_dir(), reason="needs a checkout to build from")]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """A wheel built from a copy of the sources (the checkout gets no build/ or egg-info), installed with
    --target; the scratch directory's runs see it first on PYTHONPATH, and this environment's own packages
    (torch, transformers, pytest) after it."""
    tmp = tmp_path_factory.mktemp("installed")
    source, wheels, site, scratch = (tmp / name for name in ("source", "wheels", "site", "scratch"))
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    build = subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(source)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("moe_conformance-*.whl")
    install = subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOE_CONFORMANCE_", "PYTEST_"))}
    env["PYTHONPATH"] = str(site)
    return {"site": site, "scratch": scratch, "env": env}


def _run(installed: dict, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=installed["scratch"],
        env={**installed["env"], **(env or {})}, capture_output=True, text=True, timeout=600,
    )


def test_one_namespace_with_the_fixtures_as_package_data(installed):
    top_level = sorted(p.name for p in installed["site"].iterdir() if not p.name.endswith((".dist-info", "__pycache__")))
    assert top_level == ["moe_conformance"], top_level
    fixtures = installed["site"] / "moe_conformance" / "fixtures"
    assert sorted(p.name for p in fixtures.glob("*.toml")) == sorted(p.name for p in (REPO / "fixtures").glob("*.toml"))


def test_the_suite_runs_from_anywhere_and_finds_its_fixtures(installed):
    code = "import moe_conformance.cases.arch as c; print(c.__file__); print(c.FIXTURES_DIR)"
    where = subprocess.run([sys.executable, "-c", code], cwd=installed["scratch"], env=installed["env"],
                           capture_output=True, text=True, timeout=300)
    module, fixtures = where.stdout.split()
    assert Path(module).is_relative_to(installed["site"]) and Path(fixtures) == installed["site"] / "moe_conformance" / "fixtures"
    run = _run(installed, "--pyargs", "moe_conformance", "-q", "-k", f"{ARCH}-")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "moe-conformance: reference (" in run.stdout, run.stdout[-2000:]
    row = table_rows(run.stdout, ARCH)[ARCH]
    assert len(row) > 10 and "ok" in row and set(row) <= {"ok", "n/a"}, row  # n/a: a check 4.x has no case for


def test_an_impl_module_of_the_scratch_directory(installed):
    (installed["scratch"] / "my_moe_wrappers.py").write_text(textwrap.dedent("""
        # Another project's wrappers: here the reference's, registered under the one class they are run on.
        from moe_conformance.wrappers import CalibrationMoEBlock
        CALIBRATION_WRAPPERS = {"%s": CalibrationMoEBlock}
    """ % BLOCK))
    run = _run(installed, "--pyargs", "moe_conformance", "-q", "--impl", "my_moe_wrappers", "-k", f"{ARCH}-",
               env={"PYTHONPATH": f"{installed['site']}{os.pathsep}{installed['scratch']}"})
    assert run.returncode == 0, run.stdout[-3000:]
    assert "moe-conformance: my_moe_wrappers (1 wrappers" in run.stdout, run.stdout[-2000:]


def test_an_unrelated_test_suite_is_untouched(installed):
    (installed["scratch"] / "unrelated").mkdir()
    (installed["scratch"] / "unrelated" / "test_other.py").write_text(textwrap.dedent("""
        import sys

        def test_other():
            assert "torch" not in sys.modules, "an unrelated run imported torch"
            # the entry point and the device table it offers --device from, both torch-free; nothing else
            entry = {"moe_conformance.run", "moe_conformance.run.options", "moe_conformance.cases", "moe_conformance.cases.devices"}
            assert not [m for m in sys.modules if m.startswith("moe_conformance.") and m not in entry]
    """))
    run = _run(installed, "unrelated", "-q", env={"MOE_CONFORMANCE_IMPL": "no.such.module"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout
    assert "moe-conformance" not in run.stdout and "implementation" not in run.stdout, run.stdout


WORKFLOW = REPO / ".github" / "workflows" / "moe-conformance.yml"
OTHER, OTHER_BLOCK = "qwen3_moe", "Qwen3MoeSparseMoeBlock"  # also in every supported version; correctly wrapped
SELECTION = f"{ARCH}- or {OTHER}-"
ONE_BUG = textwrap.dedent(f"""
    # One bug: Mixtral's output is scaled by 1.01 (in both modes), so output-comparing checks fail and the
    # observation checks pass; Qwen3-MoE gets the reference's wrapper and passes.
    from moe_conformance.wrappers import CalibrationMoEBlock


    class ScaledOutput(CalibrationMoEBlock):
        def forward(self, hidden_states, *args, **kwargs):
            out = super().forward(hidden_states, *args, **kwargs)
            return (out[0] * 1.01, *out[1:]) if isinstance(out, tuple) else out * 1.01


    CALIBRATION_WRAPPERS = {{"{BLOCK}": ScaledOutput, "{OTHER_BLOCK}": CalibrationMoEBlock}}
""")
HEADER = "moe-conformance: impl=one_bug_wrappers (2 wrappers"
TABLE_HEADING = "= moe-conformance: one_bug_wrappers (2 wrappers"


def workflow_step(name: str) -> str:
    """A step's ``run`` script, with the workflow's ``${{ ... }}`` expressions left for the caller to fill."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = [s for job in workflow["jobs"].values() for s in job.get("steps", [])]
    (step,) = [s for s in steps if s.get("name") == name]
    return step["run"]


def run_step(name: str, cwd: Path, env: dict, expressions: dict[str, str]) -> subprocess.CompletedProcess:
    script = re.sub(r"\$\{\{\s*([^}]+?)\s*\}\}", lambda m: expressions[m.group(1)], workflow_step(name))
    # GitHub runs a step's script with bash -e {0}
    return subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def one_bug(installed):
    (installed["scratch"] / "one_bug_wrappers.py").write_text(ONE_BUG)
    return installed


def outcomes(results: dict) -> dict[str, str]:
    return {r["id"]: r["outcome"] for r in results["results"]}


@pytest.fixture(scope="module")
def checkout_run(one_bug, tmp_path_factory):
    """The same selection from this checkout (the suite as its developers run it), single process."""
    path = tmp_path_factory.mktemp("checkout") / "results.json"
    env = {**one_bug["env"], "PYTHONPATH": str(one_bug["scratch"])}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "conformance", "--impl", "one_bug_wrappers",
         f"--moe-report={path}", "-n", "0", "-k", SELECTION],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-2000:]
    return json.loads(path.read_text())


@pytest.mark.parametrize("workers", ["0", "2"])
def test_the_workflow_run_reports_what_the_checkout_reports(one_bug, checkout_run, workers, tmp_path):
    results_dir, github = tmp_path / "moe-results", tmp_path / "github"
    github.mkdir()
    env = {
        **one_bug["env"],
        "PYTHONPATH": f"{one_bug['site']}{os.pathsep}{one_bug['scratch']}",
        "IMPL": "one_bug_wrappers", "DEVICE": "cpu", "RESULTS": str(results_dir),
        "PYTEST_ARGS": f'-n {workers} -k "{SELECTION}"',  # quoted, as README's recipe passes it
        "GITHUB_OUTPUT": str(github / "output"), "GITHUB_STEP_SUMMARY": str(github / "summary"),
        "RUNNER_TEMP": str(github),
        # the workflow's `python` is the one everything was installed into: here, this interpreter
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    suite = run_step("Run the conformance suite", one_bug["scratch"], env, {})
    log = suite.stdout + suite.stderr
    assert (github / "output").read_text().strip() == "exit-code=1", log[-3000:]
    assert HEADER in log, "no run header:\n" + log[:3000]
    assert TABLE_HEADING in log, "no architecture x check table:\n" + log[-3000:]
    rows = table_rows(log, ARCH, OTHER)
    assert "FAIL" in rows[ARCH] and "ok" in rows[ARCH], rows
    assert set(rows[OTHER]) <= {"ok", "n/a"} and "ok" in rows[OTHER], rows

    path = results_dir / "results.json"
    results = json.loads(path.read_text())
    assert outcomes(results) == outcomes(checkout_run)
    assert len(results["results"]) == len(checkout_run["results"]) == results["summary"]["total"]
    assert (results["exit_code"], results["summary"]["status"]) == (checkout_run["exit_code"], checkout_run["summary"]["status"]) == (1, "failed")
    assert results["deselected"] == checkout_run["deselected"] > 0, "deselected tests are a count"
    assert path.stat().st_size < 100_000, f"{path.stat().st_size} bytes for {len(results['results'])} tests"
    assert not list(results_dir.glob(".*.tmp")), "a temporary file of the atomic write was left behind"

    # The workflow's next step renders the results from a checkout of the suite, beside them.
    (github / "pip-freeze.txt").write_text("")
    report = run_step("Report", REPO, env, {"steps.suite.outputs.exit-code": "1"})
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    assert "suite FAILED" in report.stdout, report.stdout[-2000:]
    summary = (github / "summary").read_text()
    assert "FAIL" in summary and ARCH in summary, summary[:2000]
    assert list(results_dir.glob("*.md")) and (results_dir / "index.html").is_file()


BAD_INPUT = {
    "impl": (["--impl", "no_such_module_anywhere"], {}, "--impl no_such_module_anywhere: cannot import"),
    "device": (["--device", "cuda"], {}, "--device cuda:"),
    "fixtures": ([], {"MOE_CONFORMANCE_FIXTURES": "{bad_fixtures}"}, "unknown key (did you mean 'experts'?)"),
}


@pytest.mark.parametrize("workers", ["0", "2"])
@pytest.mark.parametrize("bad", list(BAD_INPUT))
def test_bad_input_is_one_line_and_exit_4_when_installed(installed, bad, workers, tmp_path):
    args, extra_env, expected = BAD_INPUT[bad]
    if bad == "device":
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is here: --device cuda is not bad input on this machine")
    bad_fixtures = tmp_path / "fixtures"
    bad_fixtures.mkdir()
    for toml in (installed["site"] / "moe_conformance" / "fixtures").glob("*.toml"):
        text = toml.read_text()
        if toml.name == "softmax_topk.toml":  # a misspelt key in the mixtral entry
            text = text.replace("\nexperts = 8\n", "\nexpertz = 8\n", 1)
        (bad_fixtures / toml.name).write_text(text)
    env = {**installed["env"], **{k: v.format(bad_fixtures=bad_fixtures) for k, v in extra_env.items()}}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--pyargs", "moe_conformance", *args,
         "-n", workers, "-k", SELECTION],
        cwd=installed["scratch"], env=env, capture_output=True, text=True, timeout=600,
    )
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert run.returncode == 4, "\n".join(lines[-40:])
    assert len(lines) == 1 and lines[0].startswith("ERROR: ") and expected in lines[0], "\n".join(lines[:40])
