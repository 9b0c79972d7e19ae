"""The suite: every check of ``CHECKS`` for every architecture case of ``fixtures/architectures.toml``.

Test ids read ``<model_type>-<check>[-<variant>][-<mode>][-<dtype>]``, so ``-k glm4_moe_lite`` selects one
architecture and ``-k restore`` one check. The implementation under test comes from ``--impl``.
"""

from __future__ import annotations

import pytest

from conformance.cases import load_cases
from conformance.checks import NotApplicable
from conformance.suite import CHECKS

CASES = load_cases()


def _params():
    for case in CASES:
        for name, spec in CHECKS.items():
            for variant, mode, dtype in spec.combinations(case):
                parts = [case.model_type, name, *([variant] if spec.per_variant else []), *([mode] if mode else [])]
                parts += [str(dtype).removeprefix("torch.")] if dtype else []
                reason = case.expected_gap("xfail", name, dtype)
                marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
                yield pytest.param(case, name, variant, mode, dtype, id="-".join(parts), marks=marks)


@pytest.mark.parametrize(("case", "check", "variant", "mode", "dtype"), list(_params()))
def test_conformance(case, check, variant, mode, dtype, impl, record_property):
    record_property(
        "moe_conformance",
        {
            "arch": case.model_type,
            "check": check,
            "variant": variant,
            "mode": mode,
            "dtype": str(dtype).removeprefix("torch."),
            "fixture": case.source,  # "hand" (a reviewed fixtures/*.toml entry) or "derived" (derived_fixtures.py)
        },
    )
    absent = case.absent_reason()
    if absent:
        pytest.skip(absent)
    skip = case.expected_gap("skip", check, dtype)
    if skip:
        pytest.skip(f"{case.model_type}: {skip}")
    try:
        outcome = CHECKS[check].run(case, impl, variant, mode, dtype)
    except NotApplicable as reason:
        pytest.skip(f"not applicable: {reason}")
    if hasattr(outcome, "summary"):  # the calibration smoke: what natural routing left unseen, for the summary
        record_property("moe_smoke", outcome.summary())
