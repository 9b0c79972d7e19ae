"""The suite as another project gets it: a non-editable install (a built wheel, installed into a folder of its
own), run from a scratch directory that is not this checkout.

- ``pytest --pyargs moe_conformance`` finds the fixture files shipped as package data, with no variable set;
- ``--impl`` names a wrapper module of the scratch directory;
- an unrelated test suite of that environment is untouched: no header, no torch import, a bad
  ``MOE_CONFORMANCE_IMPL`` ignored;
- only one top-level import name is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "conformance", "reference", "wrappers", "fixtures")
ARCH, BLOCK = "mixtral", "MixtralSparseMoeBlock"  # in every transformers version this project supports
pytestmark = pytest.mark.skipif(not (REPO / "fixtures").is_dir(), reason="needs a checkout to build from")


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
    code = "import moe_conformance.cases as c; print(c.__file__); print(c.FIXTURES_DIR)"
    where = subprocess.run([sys.executable, "-c", code], cwd=installed["scratch"], env=installed["env"],
                           capture_output=True, text=True, timeout=300)
    module, fixtures = where.stdout.split()
    assert Path(module).is_relative_to(installed["site"]) and Path(fixtures) == installed["site"] / "moe_conformance" / "fixtures"
    run = _run(installed, "--pyargs", "moe_conformance", "-q", "-k", f"{ARCH}-")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "moe-conformance: reference (" in run.stdout, run.stdout[-2000:]
    (row,) = [line.split() for line in run.stdout.splitlines() if line.startswith(f"{ARCH} ")]
    assert len(row) > 10 and "ok" in row and set(row[1:]) <= {"ok", "n/a"}, row  # n/a: a check 4.x has no case for


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
            assert not [m for m in sys.modules if m.startswith("moe_conformance.") and m != "moe_conformance.options"]
    """))
    run = _run(installed, "unrelated", "-q", env={"MOE_CONFORMANCE_IMPL": "no.such.module"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout
    assert "moe-conformance" not in run.stdout and "implementation" not in run.stdout, run.stdout
