"""moe-conformance: the conformance suite for Mixture-of-Experts calibration wrappers.

Use it from pytest (``pytest conformance --impl SPEC``) or as plain functions::

    from conformance import load_cases, load_implementation, run_checks
    impl = load_implementation("mypkg.moe_wrappers")
    for case in load_cases():
        if not case.absent_reason():
            for result in run_checks(case, impl):
                print(result)
"""

from .cases import ArchCase, load_cases
from .fixture_files import FixtureError
from .impl import ContractLevels, Implementation, ImplementationError, load_implementation
from .outcomes import Outcome, evaluate
from .setting import Setting
from .suite import CHECKS, CheckResult, CheckSpec, run_checks
from .verdicts import ConformanceFailure, HarnessError, NotApplicable

__all__ = [
    "CHECKS",
    "ArchCase",
    "CheckResult",
    "CheckSpec",
    "ConformanceFailure",
    "ContractLevels",
    "FixtureError",
    "HarnessError",
    "Implementation",
    "ImplementationError",
    "NotApplicable",
    "Outcome",
    "Setting",
    "evaluate",
    "load_cases",
    "load_implementation",
    "run_checks",
]
