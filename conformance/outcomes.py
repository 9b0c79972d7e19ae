"""Outcomes: what one check in one setting came to, decided in one place (``evaluate``) for the pytest layer and
for ``run_checks`` alike.

| kind | meaning |
| --- | --- |
| ``passed`` | the implementation conforms here |
| ``failed`` | FAIL: the implementation broke the contract (``ConformanceFailure``), or an expected failure passed |
| ``error`` | ERROR: the original block, the fixture or the harness failed; the implementation was not judged |
| ``skipped`` | the architecture is absent from the installed transformers, or the fixture lists a known skip |
| ``n/a`` | the check does not apply to this architecture here |
| ``xfail`` | a failure (or harness error) the fixture lists as expected |
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .cases import ArchCase
from .impl import Implementation
from .setting import Setting, fixture_entry
from .verdicts import ConformanceFailure, HarnessError, NotApplicable

if TYPE_CHECKING:
    from .suite import CheckSpec

__all__ = ["KINDS", "Outcome", "evaluate"]

PASSED, FAILED, ERROR, SKIPPED, NOT_APPLICABLE, XFAIL = "passed", "failed", "error", "skipped", "n/a", "xfail"
KINDS = (PASSED, FAILED, ERROR, SKIPPED, NOT_APPLICABLE, XFAIL)
# Outcomes that leave a run green.
GREEN = (PASSED, SKIPPED, NOT_APPLICABLE, XFAIL)


@dataclass(frozen=True)
class Outcome:
    setting: Setting
    kind: str
    message: str = ""
    value: Any = None  # what the check returned (the calibration smoke's counts)
    exception: BaseException | None = None  # the verdict or error behind a failed / error / xfail outcome

    @property
    def green(self) -> bool:
        return self.kind in GREEN

    def record(self) -> dict[str, Any]:
        """The outcome as plain data for the run's results (the summary table, ``--moe-report``)."""
        return {**self.setting.record(), "outcome": self.kind, "message": self.message}


def _harness_message(case: ArchCase, setting: Setting, exc: BaseException) -> str:
    """A harness error's message; an unexpected exception (a bug in the harness or a fixture value it did not
    foresee) also says where it was raised and which fixture entry was in use."""
    if isinstance(exc, HarnessError):
        return str(exc)
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return (
        f"{setting.id}: harness error {type(exc).__name__}: {exc} (at {frame.filename}:{frame.lineno}; fixture "
        f"{fixture_entry(case)})"
    )


def evaluate(case: ArchCase, spec: CheckSpec, setting: Setting, impl: Implementation) -> Outcome:
    """Run ``spec`` once in ``setting`` and say what it came to. Known gaps (the fixture's ``skip`` / ``xfail``)
    are applied here, and only here."""
    absent = case.absent_reason()
    if absent:
        return Outcome(setting, SKIPPED, absent)
    skip = case.expected_gap("skip", spec.name, setting.dtype)
    if skip:
        return Outcome(setting, SKIPPED, f"{case.model_type}: {skip}")
    expected = case.expected_gap("xfail", spec.name, setting.dtype)
    try:
        value = spec.function(case, impl, setting)
    except NotApplicable as reason:
        return Outcome(setting, NOT_APPLICABLE, f"not applicable: {reason}")
    except ConformanceFailure as failure:
        kind, message, exc = FAILED, str(failure), failure
    except Exception as error:  # the harness' side of the line: HarnessError, or a bug of its own
        kind, message, exc = ERROR, _harness_message(case, setting, error), error
    else:
        if expected:
            return Outcome(setting, FAILED, f"{setting.id}: passed, but the fixture expects it to fail: {expected}", value)
        return Outcome(setting, PASSED, "", value)
    if expected:
        return Outcome(setting, XFAIL, f"expected failure ({expected}): {message}", exception=exc)
    return Outcome(setting, kind, message, exception=exc)
