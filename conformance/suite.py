"""The suite: which checks exist, the modes and dtypes each runs under, and ``run_checks`` to run them.

``CHECKS`` is the one declaration the pytest layer (``test_conformance.py``), the reports and ``run_checks``
parametrise from, like torch's OpInfo database: one entry per check with its modes, dtypes and whether it runs
for every routing variant of the fixtures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from .cases import ArchCase
from .checks import (
    ConformanceFailure,
    _dtype_name,
    NotApplicable,
    check_all_experts_observed,
    check_covered,
    check_experts_are_linear,
    check_experts_implementation,
    check_no_side_effects,
    check_output_matches,
    check_restore_semantics,
    check_routed_tokens_only,
    check_routing_properties,
    check_whole_model,
)
from .impl import Implementation
from .smoke import check_calibration_smoke

__all__ = ["CHECKS", "CheckResult", "CheckSpec", "run_checks"]


@dataclass(frozen=True)
class CheckSpec:
    name: str
    function: Callable[..., None]
    modes: tuple[str | None, ...]  # None: the check does not depend on the mode
    dtypes: tuple[torch.dtype | None, ...]  # None: the check does not depend on the dtype
    per_variant: bool  # run for every routing variant, or for "default" only

    @property
    def doc(self) -> str:
        return (self.function.__doc__ or "").strip().splitlines()[0]

    def combinations(self, case: ArchCase, variants: Sequence[str] | None = None) -> Iterator[tuple[str, str | None, torch.dtype | None]]:
        """Every (variant, mode, dtype) this check runs under for ``case``."""
        for variant in (variants or list(case.variants)) if self.per_variant else ["default"]:
            for mode in self.modes:
                for dtype in self.dtypes:
                    yield variant, mode, dtype

    def run(self, case: ArchCase, impl: Implementation, variant: str, mode: str | None, dtype: torch.dtype | None):
        """Run the check once; it raises ``ConformanceFailure`` or ``NotApplicable``, or returns."""
        kwargs: dict = {"variant": variant}
        if mode:
            kwargs["mode"] = mode
        if dtype:
            kwargs["dtype"] = dtype
        return self.function(case, impl, **kwargs)


BOTH_MODES = ("all_experts", "routed")
DTYPES = (torch.float32, torch.bfloat16)

CHECKS: dict[str, CheckSpec] = {
    spec.name: spec
    for spec in (
        CheckSpec("covered", check_covered, (None,), (None,), False),
        CheckSpec("all_experts_observed", check_all_experts_observed, ("all_experts",), DTYPES, True),
        CheckSpec("routed_tokens_only", check_routed_tokens_only, ("routed",), DTYPES, True),
        CheckSpec("output_matches", check_output_matches, BOTH_MODES, DTYPES, True),
        CheckSpec("experts_are_linear", check_experts_are_linear, ("all_experts",), DTYPES, False),
        CheckSpec("restore_semantics", check_restore_semantics, BOTH_MODES, (torch.float32,), False),
        CheckSpec("no_side_effects", check_no_side_effects, BOTH_MODES, DTYPES, False),
        CheckSpec("whole_model", check_whole_model, BOTH_MODES, DTYPES, False),
        CheckSpec("experts_implementation", check_experts_implementation, BOTH_MODES, DTYPES, False),
        CheckSpec("routing_properties", check_routing_properties, (None,), (torch.float32,), False),
        CheckSpec("calibration_smoke", check_calibration_smoke, (None,), (torch.float32,), False),
    )
}


@dataclass(frozen=True)
class CheckResult:
    check: str
    variant: str
    mode: str | None
    dtype: str | None
    passed: bool
    message: str = ""


def run_checks(
    case: ArchCase,
    impl: Implementation,
    checks: Sequence[str] | None = None,
    variants: Sequence[str] | None = None,
    stop_at_first_failure: bool = False,
) -> list[CheckResult]:
    """Every (check, variant, mode, dtype) combination ``CHECKS`` declares for ``case``, one named result each
    (up to the first failure with ``stop_at_first_failure``)."""
    results = []
    for name in checks or CHECKS:
        spec = CHECKS[name]
        for variant, mode, dtype in spec.combinations(case, variants):
            dtype_name = dtype and _dtype_name(dtype)
            skip, xfail = case.expected_gap("skip", name, dtype), case.expected_gap("xfail", name, dtype)
            if skip:  # known gaps are data, as in the pytest layer
                results.append(CheckResult(name, variant, mode, dtype_name, True, f"skipped: {skip}"))
                continue
            try:
                spec.run(case, impl, variant, mode, dtype)
                passed, message = not xfail, f"passed, but the fixtures expect it to fail: {xfail}" if xfail else ""
            except NotApplicable as reason:
                passed, message = True, f"not applicable: {reason}"
            except ConformanceFailure as failure:
                passed, message = bool(xfail), f"expected failure ({xfail}): {failure}" if xfail else str(failure)
            results.append(CheckResult(name, variant, mode, dtype_name, passed, message))
            if stop_at_first_failure and not passed:
                return results
    return results
    return results
