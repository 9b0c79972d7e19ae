"""``--impl``: bad specs get one clear error line, a non-zero exit and no traceback; good ones load."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from moe_conformance import ImplementationError, load_implementation

REPO = Path(__file__).resolve().parent.parent


def _run(*args: str, env_impl: str | None = None) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ)
    env.pop("MOE_CONFORMANCE_IMPL", None)
    if env_impl is not None:
        env["MOE_CONFORMANCE_IMPL"] = env_impl
    return subprocess.run(
        [sys.executable, "-m", "pytest", "conformance", "-q", *args],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
    )


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("no_such_package.wrappers", "cannot import 'no_such_package.wrappers'"),
        ("tests.test_impl_option", "defines no CALIBRATION_WRAPPERS"),
        ("tests.mutants:wrong_constructor", "lacks keyword(s) original"),
        ("not a module!", "is not 'reference', 'llmcompressor', a dotted module path"),
    ],
)
def test_bad_spec_is_one_clear_line(spec, says):
    run = _run("--impl", spec, "-k", "glm4_moe_lite")
    assert run.returncode == 4  # pytest's usage error: nothing ran
    output = run.stdout + run.stderr
    assert says in output
    assert "Traceback" not in output
    assert len([line for line in output.splitlines() if line.strip()]) <= 2


def test_env_var_is_honoured():
    run = _run("-k", "glm4_moe_lite", env_impl="no_such_package.wrappers")
    assert run.returncode == 4 and "cannot import 'no_such_package.wrappers'" in run.stderr


def test_module_without_context_uses_the_reference_context(monkeypatch):
    module = types.ModuleType("third_party_wrappers")
    from moe_conformance.wrappers import CalibrationMoEBlock

    module.CALIBRATION_WRAPPERS = {"Glm4MoeMoE": CalibrationMoEBlock}
    monkeypatch.setitem(sys.modules, "third_party_wrappers", module)
    impl = load_implementation("third_party_wrappers")
    assert impl.context is None and impl.wrapper_for("Glm4MoeMoE") is CalibrationMoEBlock
    assert impl.wrapper_for("Qwen3MoeSparseMoeBlock") is None  # covered check fails on it: "uncovered"


def test_mapping_values_must_be_classes(monkeypatch):
    module = types.ModuleType("broken_wrappers")
    module.CALIBRATION_WRAPPERS = {"Glm4MoeMoE": "not a class"}
    monkeypatch.setitem(sys.modules, "broken_wrappers", module)
    with pytest.raises(ImplementationError, match="keys must be class names"):
        load_implementation("broken_wrappers")


def test_reference_is_the_default(monkeypatch):
    monkeypatch.delenv("MOE_CONFORMANCE_IMPL", raising=False)
    impl = load_implementation()
    assert impl.name == "reference" and impl.wrapper_for("Glm4MoeLiteMoE") is not None


def test_the_option_and_the_loader_name_one_environment_variable():
    """``run/options.py`` names ``--impl``'s variable without importing the loader (it is imported by every pytest
    run of the environment); the two names must stay one."""
    from moe_conformance.implementations.loader import ENV_VAR
    from moe_conformance.run.options import IMPL_VAR

    assert IMPL_VAR == ENV_VAR



def test_the_load_option_offers_what_the_settings_know():
    """``--load``'s choices are named in ``run/options.py`` (which imports no torch); ``checks/spec.py`` maps each
    to the settings' load values. The two must stay one."""
    from moe_conformance.checks.spec import LOAD_CHOICES
    from moe_conformance.run.options import LOADS

    assert set(LOADS) == set(LOAD_CHOICES)
