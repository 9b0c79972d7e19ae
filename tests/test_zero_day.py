"""Zero-day coverage (issue 7, section 3): a standard block that transformers adds is covered by the reference
and checked by the suite before anyone registers its name or writes its fixture entry; a block no generic
mechanism serves is reported, with the reason, never passed silently.

A release is played by removing one standard v5 block's hand entry (and, where it matters, its registered
name, through monkeypatch) rather than by installing another transformers."""

from __future__ import annotations

import pytest
import transformers
from packaging.version import Version

from moe_conformance import load_cases, load_implementation, run_checks
from moe_conformance.cases.derived import DERIVED, derived_cases
from moe_conformance.cases.discovery import completeness, discovered_class, not_calibration_targets, unreviewed_messages
from moe_conformance.implementations.registry import RegistryImplementation
from moe_conformance.reference import MoECalibrationModule, standardize_lookup_name
from moe_conformance.wrappers.blocks import CalibrationMoEBlock, FusedExpertsMechanism, mechanism_for_class

# A block of the v5 standard contract with a hand entry and a registered name: the stand-in for a new one.
STANDARD = "Qwen3MoeSparseMoeBlock"
needs_v5 = pytest.mark.skipif(
    Version(transformers.__version__).major < 5, reason="fused @use_experts_implementation experts exist from transformers 5"
)
TINY_MODEL_PARAMETERS = 3_000_000  # tests/test_fixtures.py's limit


def _hand_without(block: str):
    return [case for case in load_cases(derive=False) if case.block != block]


def _derived_without(block: str):
    return derived_cases(_hand_without(block), excluded=frozenset(not_calibration_targets()))


def _unregistered(monkeypatch, block: str):
    """The reference implementation as it is before ``block``'s name is registered."""
    monkeypatch.delitem(MoECalibrationModule._registry, standardize_lookup_name(block))
    return load_implementation("reference")


@needs_v5
def test_structure_serves_a_standard_fused_block_class():
    verdict = mechanism_for_class(discovered_class(STANDARD))
    assert verdict.mechanism is FusedExpertsMechanism, verdict.reason
    assert "@use_experts_implementation" in verdict.reason


@pytest.mark.parametrize(
    ("block", "why"),
    [("Llama4TextMoe", "its experts (Llama4TextExperts) are called as experts(hidden_states)"), ("DbrxFFN", "its experts (DbrxExperts)")],
)
def test_structure_alone_does_not_serve_hand_wrapped_layouts(block, why):
    """Judged by structure alone (the reference serves these through hand-written, name-registered wrappers)."""
    block_cls = discovered_class(block)
    if block_cls is None:
        pytest.skip(f"{block} is not in transformers {transformers.__version__}")
    verdict = mechanism_for_class(block_cls)
    assert verdict.mechanism is None and why in verdict.reason, verdict


@needs_v5
def test_a_block_without_hand_entry_gets_a_tiny_derived_case():
    derived = _derived_without(STANDARD)
    case = next(c for c in derived.cases if c.block == STANDARD)
    assert case.source == DERIVED and (case.experts, case.projections) == (8, 3)
    assert case.model_class == "Qwen3MoeForCausalLM" and case.knobs == {"norm_topk_prob": [True, False]}
    block, config = case.make_block()
    assert config.hidden_size == 32 and tuple(block.experts.down_proj.shape) == (8, 32, 24)
    model, _ = case.make_model()
    assert any(type(m).__name__ == STANDARD for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) <= TINY_MODEL_PARAMETERS
    # hand entries win: no block that has one is derived too
    assert not {c.block for c in derived.cases} & {c.block for c in _hand_without(STANDARD)}


@needs_v5
def test_the_reference_covers_checks_and_wraps_an_unregistered_standard_block(monkeypatch):
    impl = _unregistered(monkeypatch, STANDARD)
    assert impl.wrapper_for(STANDARD) is CalibrationMoEBlock and not impl.covered_by_name(STANDARD)
    case = next(c for c in _derived_without(STANDARD).cases if c.block == STANDARD)
    # whole_model runs the reference's moe_calibration_context: it must find and wrap the blocks by structure
    results = run_checks(case, impl, checks=["covered", "output_matches", "whole_model"])
    assert results and all(r.passed for r in results), [r for r in results if not r.passed]


def test_an_implementation_other_than_the_reference_is_judged_by_its_own_coverage():
    bare = RegistryImplementation("third_party", {})
    assert bare.wrapper_for(STANDARD) is None and bare.wrapper_for("Llama4TextMoe") is None


def _completeness_without(block: str, impl, derived):
    """The completeness report as if ``block`` had no hand entry: the hand cases without it, and ``derived``."""
    hand = _hand_without(block)
    return completeness(
        impl.wrapper_for,
        {c.block for c in hand + list(derived.cases)},
        hand_blocks={c.block for c in hand},
        derived={c.block: c.model_type for c in derived.cases},
        derivation_problems=derived.problems,
    )


@needs_v5
def test_completeness_counts_a_derived_fixture_and_the_canary_names_the_class(monkeypatch):
    impl = _unregistered(monkeypatch, STANDARD)
    report = _completeness_without(STANDARD, impl, _derived_without(STANDARD))
    # users' semantics: covered by structure and checked by the derived fixture
    assert STANDARD not in {c.name for c in report.no_wrapper + report.no_fixture}
    line = next(line for line in unreviewed_messages(report, impl) if STANDARD in line)
    assert "covered by reference's CalibrationMoEBlock, resolved from the class (no name registered), checked by a derived fixture" in line
    assert line.endswith("review it and add a hand entry")


def test_the_canary_says_what_a_block_no_mechanism_serves_needs(monkeypatch):
    """Llama 4's block is served by a hand-written mechanism registered by name alone: without the name the
    reference does not cover it. The fixture is derived all the same (from transformers alone), so the line
    says the block needs a wrapper, and that a fixture would check it."""
    block = "Llama4TextMoe"
    if discovered_class(block) is None:
        pytest.skip(f"{block} is not in transformers {transformers.__version__}")
    impl = _unregistered(monkeypatch, block)
    assert impl.wrapper_for(block) is None
    derived = _derived_without(block)
    report = _completeness_without(block, impl, derived)
    assert block in {c.name for c in report.no_wrapper}
    line = next(line for line in unreviewed_messages(report, impl) if block in line)
    assert "reference has no wrapper for it" in line and line.endswith("needs a wrapper and a fixture entry")
    fixture = f"a derived fixture ({report.derived[block]}) checks it once it is covered" if block in report.derived else "no fixture checks it"
    assert fixture in line


@needs_v5
def test_fixtures_are_derived_without_asking_the_reference(monkeypatch):
    """The harness derives fixtures from transformers alone: with the reference refusing every class by
    structure, the derived cases are the same, so a peer can be checked on a class the reference does not cover."""
    from moe_conformance.wrappers import blocks

    before = _derived_without(STANDARD)
    refused = blocks.StructureVerdict(None, "refused for this test")
    monkeypatch.setattr(blocks, "mechanism_for_class", lambda block_cls: refused)
    from moe_conformance.cases import derived as derived_fixtures

    derived_fixtures._derive.cache_clear()
    after = _derived_without(STANDARD)
    assert [c.block for c in after.cases] == [c.block for c in before.cases] and STANDARD in {c.block for c in after.cases}
