"""The ``experts`` contract level ``fused_observed``: an implementation that keeps experts fused by design
(ModelOpt's ``_QuantFusedExperts``) names, per expert and projection, a module called with the rows it computes
that projection on; the suite judges coverage on those calls, and ``experts_are_linear`` is not offered. Here
the per-expert Linears of ``tests.conversion_impl`` feed such taps, and a mutant feeds them shifted by one
expert."""

from __future__ import annotations

import sys
import types
import weakref

from torch import nn

from moe_conformance import load_cases, load_implementation, run_checks
from tests import conversion_impl
from tests.versions import requires_transformers_5

CASES = {case.model_type: case for case in load_cases() if not case.absent_reason()}


class Tap(nn.Module):
    def forward(self, rows):
        return None


def _tapped_conversion(experts_level: str, shift: int) -> types.ModuleType:
    """tests.conversion_impl, its experts observed through taps fed by its Linears (expert ``e``'s rows to the
    taps of expert ``e + shift``)."""
    taps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def expert_linears(block):
        experts = [m for m in block.modules() if isinstance(getattr(m, "gate_proj", None), nn.Linear)]
        if not experts:
            return None
        if block not in taps:
            made = [{name: Tap() for name in ("gate_proj", "up_proj", "down_proj")} for _ in experts]
            for e, expert in enumerate(experts):
                for name in made[e]:
                    target = made[(e + shift) % len(experts)][name]
                    getattr(expert, name).register_forward_pre_hook(lambda m, args, _t=target: _t(args[0]))
            taps[block] = made
        return taps[block]

    module = types.ModuleType(f"tapped_{experts_level}_{shift}")
    module.prepare_model = conversion_impl.prepare_model
    module.calibration_mode = conversion_impl.calibration_mode
    module.expert_linears = expert_linears
    module.CONTRACT_LEVELS = {**conversion_impl.CONTRACT_LEVELS, "experts": experts_level}
    return module


def _outcomes(module, monkeypatch, checks) -> dict[str, set[str]]:
    monkeypatch.setitem(sys.modules, module.__name__, module)
    impl = load_implementation(module.__name__)
    results = run_checks(CASES["qwen3_moe"], impl, checks=checks)
    by: dict[str, set[str]] = {}
    for r in results:
        by.setdefault(r.check, set()).add(r.kind)
    return by


@requires_transformers_5  # the level describes v5's fused experts; 4.x's qwen3_moe loops over its ModuleList itself
def test_fused_observed_taps_are_judged_on_the_rows_they_receive(monkeypatch):
    outcomes = _outcomes(_tapped_conversion("fused_observed", 0), monkeypatch,
                         ["covered", "all_experts_observed", "routed_tokens_only", "experts_are_linear", "calibration_smoke"])
    assert outcomes == {"covered": {"passed"}, "all_experts_observed": {"passed"}, "routed_tokens_only": {"passed"},
                        "experts_are_linear": {"not offered"}, "calibration_smoke": {"passed"}}, outcomes


def test_taps_fed_the_wrong_experts_rows_fail(monkeypatch):
    outcomes = _outcomes(_tapped_conversion("fused_observed", 1), monkeypatch, ["routed_tokens_only"])
    assert outcomes == {"routed_tokens_only": {"failed"}}, outcomes


def test_taps_are_no_linears_where_linear_experts_are_promised(monkeypatch):
    """Declared ``linear`` (the default), the same taps are not nn.Linear: an expert without one is no expert to
    observe (it would pass every observation check vacuously), so the block reads as uncovered."""
    module = _tapped_conversion("linear", 0)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    results = run_checks(CASES["qwen3_moe"], load_implementation(module.__name__), checks=["covered", "routed_tokens_only"])
    covered = [r for r in results if r.check == "covered"]
    assert [r.kind for r in covered] == ["failed"] and "expert 0 has no nn.Linear" in covered[0].message, covered
    assert {r.kind for r in results if r.check == "routed_tokens_only"} == {"skipped"}
