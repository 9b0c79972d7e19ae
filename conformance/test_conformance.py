"""The suite: every check of ``CHECKS`` in every setting it declares, for every architecture case of the
fixtures.

Test ids are the settings' ids, ``<model_type>-<check>[-<variant>][-<mode>][-<dtype>]``, so ``-k glm4_moe_lite``
selects one architecture and ``-k restore`` one check. The implementation under test comes from ``--impl``.
What a test comes to is decided by ``conformance.outcomes.evaluate``; this layer only records it and tells
pytest.
"""

from __future__ import annotations

import pytest

from moe_conformance.cases import devices, load_cases
from moe_conformance.checks.outcomes import evaluate
from moe_conformance.checks.table import CHECKS
from moe_conformance.run.plugin import run_options
from moe_conformance.vocabulary import (
    DEVICE,
    ERROR,
    FAILED,
    NOT_APPLICABLE,
    NOT_OFFERED,
    SKIPPED,
    XFAIL,
    ConformanceFailure,
)

CASES = load_cases()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every setting of every check for every case, on the run's device and with its load (``RunOptions``)."""
    options = run_options(metafunc.config)
    params = [
        pytest.param(case, setting, id=setting.id)
        for case in CASES
        for spec in CHECKS.values()
        for setting in spec.settings(case, device=options.device, load=options.load)
    ]
    metafunc.parametrize(("case", "setting"), params)


def test_conformance(case, setting, impl, covered_only, not_judged, record_property):
    faulted = not_judged(case.model_type)
    if faulted:  # an earlier test of this architecture crashed, hung or faulted the device: one failure is enough
        record_property("moe_conformance", {**setting.record(), "outcome": SKIPPED, "message": faulted,
                                            "uncovered": False, "not_judged": True, "fixture": case.source})
        pytest.skip(faulted)
    outcome = evaluate(case, CHECKS[setting.check], setting, impl, covered_only)
    # Structured, for the summary table and --moe-report: the plugin reads the kind, never the text.
    # "fixture": "hand" (a reviewed fixtures/*.toml entry) or "derived" (derived_fixtures.py).
    record_property("moe_conformance", {**outcome.record(), "fixture": case.source})
    if setting.device != devices.DEFAULT:
        record_property("placed_on", devices.placement(setting.device))
    if hasattr(outcome.value, "summary"):  # the calibration smoke: what natural routing left unseen
        record_property("moe_smoke", outcome.value.summary())
    if outcome.kind in (SKIPPED, NOT_APPLICABLE, NOT_OFFERED):
        pytest.skip(outcome.message)
    if outcome.kind == XFAIL:
        pytest.xfail(outcome.message)
    if outcome.kind in (FAILED, ERROR, DEVICE):
        raise outcome.exception or ConformanceFailure(outcome.message)
