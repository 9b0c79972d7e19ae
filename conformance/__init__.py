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
from .checks import ConformanceFailure
from .suite import CHECKS, CheckResult, run_checks
from .impl import Implementation, ImplementationError, load_implementation

__all__ = [
    "CHECKS",
    "ArchCase",
    "CheckResult",
    "ConformanceFailure",
    "Implementation",
    "ImplementationError",
    "load_cases",
    "load_implementation",
    "run_checks",
]
