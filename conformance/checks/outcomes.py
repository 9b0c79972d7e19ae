"""Outcomes: what one check in one setting came to, decided in one place (``evaluate``) for the pytest layer and
for ``run_checks`` alike.

| kind | meaning |
| --- | --- |
| ``passed`` | the implementation conforms here |
| ``failed`` | FAIL: the implementation broke the contract (``ConformanceFailure``), or an expected failure passed |
| ``error`` | ERROR: the original block, the fixture or the harness failed; the implementation was not judged |
| ``skipped`` | the architecture is absent from the installed transformers, the fixture lists a known skip, or the implementation does not cover the block (every check but ``covered``; that one too with ``covered_only``) |
| ``n/a`` | the check does not apply to this architecture here |
| ``not offered`` | the check judges a contract level the implementation does not declare (``CONTRACT_LEVELS``) |
| ``xfail`` | a failure (or harness error) the fixture lists as expected |

A check that guards what calibration always needs (the output equal to the original's while calibrating, the
expert Linears honest and bit-exact, nothing else damaged) needs no level, so it is never "not offered".
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..cases.arch import ArchCase
from ..cases.devices import DEVICES
from ..cases.setting import Setting, fixture_entry
from ..implementations.protocol import Implementation
from ..vocabulary import (
    DEVICE,
    ERROR,
    FAILED,
    GREEN,
    KINDS,
    NOT_APPLICABLE,
    NOT_OFFERED,
    PASSED,
    SKIPPED,
    XFAIL,
    ConformanceFailure,
    HarnessError,
    NotApplicable,
    where,
)
from .snapshots import ClassState

if TYPE_CHECKING:
    from .spec import CheckSpec

__all__ = ["KINDS", "NOT_OFFERED", "Outcome", "device_fault", "evaluate", "guarded_classes", "uncovered_reason"]



def device_fault(exc: BaseException | None) -> str | None:
    """The sticky device error behind ``exc`` (its chain included; the device table's ``sticky_errors``), or
    None."""
    sticky = [marker for device in DEVICES.values() for marker in device.sticky_errors]
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc)
        for marker in sticky:
            if marker in text:
                return next((line.strip() for line in text.splitlines() if marker in line), marker)
        exc = exc.__cause__ or exc.__context__
    return None


@dataclass(frozen=True)
class Outcome:
    setting: Setting
    kind: str
    message: str = ""
    value: Any = None  # what the check returned (the calibration smoke's counts)
    exception: BaseException | None = None  # the verdict or error behind a failed / error / xfail outcome
    # The implementation has no wrapper for the block: the ``covered`` check's failure (or, with ``covered_only``,
    # its skip) and every other check's skip say so, and the run lists the architecture as uncovered.
    uncovered: bool = False

    @property
    def green(self) -> bool:
        """Nothing to fix here: passed, skipped, n/a, not offered or an expected failure."""
        return self.kind in GREEN

    passed = green  # as ``run_checks``' callers ask it

    @property
    def check(self) -> str:
        return self.setting.check

    @property
    def id(self) -> str:
        """The setting's id, as the pytest layer names the test."""
        return self.setting.id

    def record(self) -> dict[str, Any]:
        """The outcome as plain data for the run's results (the summary table, ``--moe-report``)."""
        return {**self.setting.record(), "outcome": self.kind, "message": self.message, "uncovered": self.uncovered}


def _harness_message(case: ArchCase, setting: Setting, exc: BaseException) -> str:
    """A harness error's message; an unexpected exception (a bug in the harness or a fixture value it did not
    foresee) also says where it was raised and which fixture entry was in use."""
    if isinstance(exc, HarnessError):
        return str(exc)
    return f"{setting.id}: harness error {type(exc).__name__}: {exc} (at {where(exc)}; fixture {fixture_entry(case)})"


def uncovered_reason(case: ArchCase, impl: Implementation) -> str | None:
    """Why ``impl`` cannot be judged on ``case``, or None: a registry has no wrapper for the block; a conversion
    says it does not cover it, or converting one leaves no per-expert Linears (``checks_structure``)."""
    from .structure import unconverted_reason

    if not impl.covers(case.block):
        why = f"{impl.name} has no wrapper for {case.block}"
    else:
        classes = ClassState.of(guarded_classes(case))  # the probe converts a block: no patch may outlive it
        try:
            why = unconverted_reason(case, impl)
        finally:
            if classes.difference():
                classes.restore()
    return f"{case.model_type}: uncovered: calibration would be silently skipped ({why})" if why else None


def guarded_classes(case: ArchCase) -> list[type]:
    """The classes a calibration might patch for the whole process: those of the block's modeling module
    (block, experts, router ...) with their transformers bases, and torch's Linear and module containers.
    ``nn.Module`` itself is left out: transformers adds to it once per process (``smart_apply``)."""
    from torch import nn

    module = sys.modules.get(case.block_class.__module__)
    defined = [v for v in vars(module).values() if isinstance(v, type) and v.__module__ == module.__name__] if module else []
    found: dict[type, None] = dict.fromkeys([nn.Linear, nn.ModuleList, nn.ModuleDict])
    for klass in defined:
        for base in klass.__mro__:
            if base.__module__.startswith("transformers."):
                found.setdefault(base, None)
    return list(found)


def evaluate(case: ArchCase, spec: CheckSpec, setting: Setting, impl: Implementation, covered_only: bool = False) -> Outcome:
    """Run ``spec`` once in ``setting`` and say what it came to. Known gaps (the fixture's ``skip`` / ``xfail``)
    are applied here, and only here.

    A block the implementation does not cover is one failure, the ``covered`` check's: its other checks would
    all fail for the same reason, so they are skipped as uncovered. ``covered_only`` (a wrapper package that
    targets some architectures only) skips the ``covered`` failure too."""
    absent = case.absent_reason()
    if absent:
        return Outcome(setting, SKIPPED, absent)
    skip = case.expected_gap("skip", spec.name, setting.dtype, setting.device)
    if skip:
        return Outcome(setting, SKIPPED, f"{case.model_type}: {skip}")
    uncovered = uncovered_reason(case, impl)
    if uncovered and (covered_only or spec.name != "covered"):
        return Outcome(setting, SKIPPED, uncovered, uncovered=True)
    outcome = _judge(case, spec, setting, impl)
    return dataclasses.replace(outcome, uncovered=True) if uncovered else outcome


def _judge(case: ArchCase, spec: CheckSpec, setting: Setting, impl: Implementation) -> Outcome:
    unoffered = spec.not_offered(impl.levels)
    if unoffered:
        return Outcome(setting, NOT_OFFERED, f"{setting.id}: not offered: {impl.name} declares {unoffered}")
    expected = case.expected_gap("xfail", spec.name, setting.dtype, setting.device)
    # A class the implementation patches is put back after the check, whatever it came to: a patch must not
    # leak into the next check (no_side_effects is the check that fails it).
    classes = ClassState.of(guarded_classes(case))
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
    finally:
        if classes.difference():
            classes.restore()
    sticky = device_fault(exc)
    if sticky:  # the implementation poisoned the device, wherever the error surfaced: never the harness' ERROR
        return Outcome(setting, DEVICE, f"{setting.id}: DEVICE: {sticky} (the process is replaced; {message})", exception=exc)
    if expected:
        return Outcome(setting, XFAIL, f"expected failure ({expected}): {message}", exception=exc)
    return Outcome(setting, kind, message, exception=exc)
