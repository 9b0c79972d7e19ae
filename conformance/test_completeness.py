"""registry_completeness: every MoE block class of the installed transformers is covered by the implementation
under test and checked by the fixtures, except the listed non-targets (reported by name, with reasons)."""

from __future__ import annotations

import transformers

from conformance.cases import load_cases
from conformance.discovery import completeness


def test_registry_completeness(impl, record_property):
    report = completeness(impl.wrapper_for, {case.block for case in load_cases()})
    record_property(
        "moe_completeness",
        {
            "transformers": transformers.__version__,
            "found": len(report.found),
            "covered": len(report.covered),
            "excluded": report.excluded,
            "no_wrapper": [c.name for c in report.no_wrapper],
            "no_fixture": [c.name for c in report.no_fixture],
        },
    )
    problems = [
        f"uncovered: calibration would be silently skipped: {c.name} ({c.module}) has no wrapper in {impl.name}"
        for c in report.no_wrapper
    ] + [f"unchecked: {c.name} ({c.module}) has no fixture entry, so the suite does not check it" for c in report.no_fixture]
    assert not problems, f"{len(problems)} MoE classes of transformers {transformers.__version__}:\n" + "\n".join(problems)
