"""The suite catches every deliberately broken wrapper in ``tests/mutants.py`` on every architecture it
applies to, and raises no false alarm on a correct subclass of the reference wrapper."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import Phase, settings

from moe_conformance import ImplementationError, load_cases, load_implementation, run_checks, wrappers
from moe_conformance.checks.table import CHECKS
from moe_conformance.reference import standardize_lookup_name
from tests.mutants import (
    AIMED_AT,
    CAUGHT_BY,
    FROM_TRANSFORMERS_5_25,
    FUSED_EXPERTS_ONLY,
    MUTANTS,
    check_order,
    deepseek_style_router,
)
from tests.versions import requires_transformers_5, requires_transformers_5_25

REPO = Path(__file__).resolve().parent.parent
# Killing a mutant needs one failing example, not a shrunk one: shrinking would replay the suite dozens of times.
settings.register_profile("kill", settings.get_profile("ci"), phases=[Phase.explicit, Phase.reuse, Phase.generate])
settings.load_profile("kill")
CASES = [case for case in load_cases() if not case.absent_reason()]
GENERIC_CASES = [case for case in CASES if standardize_lookup_name(case.block) in wrappers.GENERIC_BLOCKS]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.model_type)
@pytest.mark.parametrize("mutant", MUTANTS.values(), ids=lambda m: m.name)
def test_mutant_is_caught(mutant, case, record_property):
    def verdict(caught_by: str) -> None:  # for the kill table (tests/conftest.py), xdist workers included
        record_property("mutant_kill", [mutant.name, case.model_type, caught_by])

    if standardize_lookup_name(case.block) not in wrappers.GENERIC_BLOCKS:
        verdict("n/a")
        pytest.skip(f"the mutants derive from the generic wrapper; {case.block} has a wrapper of its own")
    block, _ = case.make_block()
    if not mutant.applies(block):
        verdict("n/a")
        pytest.skip(f"{mutant.name} does not apply to {case.model_type}")
    try:
        impl = load_implementation(mutant.impl_spec)
    except ImplementationError as error:
        verdict("load")
        assert "original" in str(error)
        return
    stopped = [r for r in run_checks(case, impl, checks=check_order(mutant.name), stop_at_first_failure=True) if not r.passed]
    if not stopped:
        verdict("SURVIVED")
    else:  # only a FAIL kills: an ERROR means the harness, not the mutant, was judged
        verdict(stopped[0].check if stopped[0].kind == "failed" else f"ERROR in {stopped[0].check}")
    assert stopped, f"mutant {mutant.name} ({mutant.bug}) survived every check on {case.model_type}"
    assert stopped[0].kind == "failed", f"{mutant.name}: a harness error, not a kill: {stopped[0].message}"
    assert case.model_type in stopped[0].message


def test_every_mutant_is_aimed_at_a_check():
    assert set(AIMED_AT) <= set(MUTANTS) and set(AIMED_AT.values()) <= set(CHECKS)
    for name in MUTANTS:
        assert sorted(check_order(name)) == sorted(CHECKS), name


def test_every_check_has_a_mutant_it_catches():
    assert set(CAUGHT_BY) == set(CHECKS), sorted(set(CHECKS) ^ set(CAUGHT_BY))


def _version_marks(name: str) -> list:
    applies = MUTANTS[name].applies
    return [requires_transformers_5_25] if applies in FROM_TRANSFORMERS_5_25 else [requires_transformers_5] if applies in FUSED_EXPERTS_ONLY else []


# A mutant of fused 3-D experts has nothing to break in 4.x, which has none: there it is killed under 5.x only
# (one of a 5.25 structure, from 5.25 on).
@pytest.mark.parametrize(("check", "name"), [
    pytest.param(c, m, id=f"{c}-{m}", marks=_version_marks(m)) for c, names in CAUGHT_BY.items() for m in names
])
def test_every_check_catches_a_mutant_on_its_own(check, name):
    """Each check, run alone, fails on the mutants that break what it guards (on every architecture)."""
    mutant = MUTANTS[name]
    impl = load_implementation(mutant.impl_spec)
    applicable = 0
    for case in GENERIC_CASES:
        if not mutant.applies(case.make_block()[0]):
            continue
        applicable += 1
        results = run_checks(case, impl, checks=[check], stop_at_first_failure=True)
        assert results[-1].kind == "failed", f"{check} did not catch {name} on {case.model_type}: {results[-1]}"
    assert applicable, f"{name} applies to no architecture"


@pytest.mark.parametrize("case", GENERIC_CASES, ids=lambda c: c.model_type)
def test_routing_reimplementation_is_faithful(case):
    """The routing mutants re-implement DeepSeek-style routing with one bug each; without the bug the same
    code must pass, so that what kills them is the bug and nothing else."""
    if not deepseek_style_router(case.make_block()[0]):
        pytest.skip(f"{case.model_type} does not route DeepSeek-style")
    impl = load_implementation("tests.mutants:deepseek_router_control")
    checks = ["all_experts_observed", "routed_tokens_only", "output_matches"]
    failures = [r.message for r in run_checks(case, impl, checks=checks) if not r.passed]
    assert not failures, failures[:2]


@pytest.mark.parametrize("case", GENERIC_CASES, ids=lambda c: c.model_type)
def test_correct_subclass_passes_everything(case):
    impl = load_implementation("tests.mutants:correct_subclass")
    failures = [r.message for r in run_checks(case, impl) if not r.passed]
    assert not failures, failures[:3]


def _pytest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:randomly", *args],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )


def test_mutant_fails_the_suite_through_impl_option():
    """End to end through ``--impl``: the suite run exits non-zero and the table shows the failing check."""
    arch = CASES[0].model_type
    run = _pytest("--impl", "tests.mutants:drift_1e_4", "-k", f"{arch} and output_matches and float32")
    assert run.returncode == 1, run.stdout[-2000:]
    assert "FAIL" in run.stdout and "exceeds" in run.stdout


def test_correct_subclass_passes_through_impl_option():
    arch = CASES[0].model_type
    run = _pytest("--impl", "tests.mutants:correct_subclass", "-k", arch)
    assert run.returncode == 0, run.stdout[-2000:]
