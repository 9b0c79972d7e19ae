"""moe-conformance: the conformance suite for Mixture-of-Experts calibration wrappers.

Use it from pytest (``pytest --pyargs moe_conformance --impl SPEC`` installed, ``pytest conformance`` in a
checkout) or as plain functions::

    from moe_conformance import load_cases, load_implementation, run_checks
    impl = load_implementation("mypkg.moe_wrappers")
    for case in load_cases():
        if not case.absent_reason():
            for result in run_checks(case, impl):
                print(result)
"""

# Exported lazily: importing the package (as pytest's entry point does for moe_conformance.run.options, in every run
# of the environment) must not import torch or transformers.
_EXPORTS = {
    "load_cases": "cases",
    "ArchCase": "cases.arch",
    "FixtureError": "cases.files",
    "Setting": "cases.setting",
    "ContractLevels": "implementations.protocol",
    "Implementation": "implementations.protocol",
    "ImplementationError": "implementations.protocol",
    "load_implementation": "implementations.loader",
    "CheckSpec": "checks.spec",
    "CHECKS": "checks.table",
    "run_checks": "checks.table",
    "Outcome": "checks.outcomes",
    "evaluate": "checks.outcomes",
    "ConformanceFailure": "vocabulary",
    "HarnessError": "vocabulary",
    "NotApplicable": "vocabulary",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = sorted(_EXPORTS)
