"""registry_completeness: every MoE block class of the installed transformers is covered by the implementation
under test and checked by the fixtures (hand-written, or derived from the config's defaults where no hand entry
exists yet), except the listed non-targets (reported by name, with reasons). With ``--covered-only`` classes the
implementation does not cover are listed, not failed.

With ``--require-reviewed`` (the tf-newest canary) a class only a derived fixture checks fails too, with what
is known about it: covered and checked, to be reviewed, or what it needs."""

from __future__ import annotations

import transformers

from moe_conformance.cases import load_cases
from moe_conformance.cases.derived import HAND, derived_cases
from moe_conformance.cases.discovery import completeness, not_calibration_targets, unreviewed_messages


def test_registry_completeness(impl, record_property, request):
    hand = load_cases(derive=False)
    derived = derived_cases(hand, excluded=frozenset(not_calibration_targets()))
    cases = hand + list(derived.cases)
    report = completeness(
        impl.covers,
        {case.block for case in cases},
        hand_blocks={case.block for case in cases if case.source == HAND},
        derived={case.block: case.model_type for case in derived.cases},
        derivation_problems=derived.problems,
    )
    record_property(
        "moe_completeness",
        {
            "transformers": transformers.__version__,
            "found": len(report.found),
            "covered": len(report.covered),
            "excluded": report.excluded,
            "no_wrapper": [c.name for c in report.no_wrapper],
            "no_fixture": [c.name for c in report.no_fixture],
            "derived": report.derived,  # class name -> model_type of the derived case that checks it
        },
    )
    # the canary says, for every class no hand entry checks, what is known about it (that line replaces the
    # uncovered/unchecked line of the same class: it says the same, and what to do)
    unreviewed = unreviewed_messages(report, impl) if request.config.getoption("--require-reviewed") else []
    said = {c.name for c in report.unreviewed} if unreviewed else set()
    # --covered-only: a package that targets some architectures; the summary still lists every uncovered class
    covered_only = request.config.getoption("--covered-only")
    problems = [
        f"uncovered: calibration would be silently skipped: {c.name} ({c.module}) has no wrapper in {impl.name}"
        for c in report.no_wrapper
        if c.name not in said and not covered_only
    ] + [
        f"unchecked: {c.name} ({c.module}) has no fixture entry and none could be derived "
        f"({report.derivation_problems.get(c.name, 'not attempted')}), so the suite does not check it"
        for c in report.no_fixture
        if c.name not in said
    ] + unreviewed
    assert not problems, f"{len(problems)} MoE classes of transformers {transformers.__version__}:\n" + "\n".join(problems)
