"""The ModelOpt and GPTQModel adapters (``conformance/peers/``): each spec loads where its project is installed
(one error line otherwise), and each observes what its project really does — ModelOpt's taps the rows of its
intercepted per-expert calls, GPTQModel's modes every token for every expert — shown failing on a mutant of
the project's own code. Where a project is not installed, its spec must say so in one line."""

from __future__ import annotations

import importlib.util

import pytest

from moe_conformance import ImplementationError, load_cases, load_implementation, run_checks

CASES = {case.model_type: case for case in load_cases() if not case.absent_reason()}
PROJECT = {"modelopt": "modelopt", "gptqmodel": "gptqmodel", "gptqmodel_override": "gptqmodel"}


def _impl_or_missing(spec: str):
    """The implementation, or None after checking the one-line error where its project is not installed."""
    if importlib.util.find_spec(PROJECT[spec]) is None:
        with pytest.raises(ImplementationError, match=f"--impl {spec}: "):
            load_implementation(spec)
        return None
    impl = load_implementation(spec)
    assert impl.kind == "conversion" and impl.name.startswith(f"{spec} = ")
    return impl


def _outcomes(impl, checks, case="qwen3_moe") -> dict[str, set[str]]:
    by: dict[str, set[str]] = {}
    for r in run_checks(CASES[case], impl, checks=checks):
        by.setdefault(r.check, set()).add(r.kind)
    return by


def test_modelopt_is_judged_on_its_intercepted_calls():
    impl = _impl_or_missing("modelopt")
    if impl is None:
        return
    assert impl.levels.experts == "fused_observed"
    outcomes = _outcomes(impl, ["covered", "routed_tokens_only", "output_matches", "experts_are_linear", "all_experts_observed"])
    assert outcomes == {"covered": {"passed"}, "routed_tokens_only": {"passed"}, "output_matches": {"passed"},
                        "experts_are_linear": {"not offered"}, "all_experts_observed": {"failed"}}, outcomes


def test_modelopt_taps_follow_its_expert_index(monkeypatch):
    """A mutant of ModelOpt's attribution (the expert recovered from the weight's storage offset, shifted by one):
    the taps then receive another expert's rows."""
    impl = _impl_or_missing("modelopt")
    if impl is None:
        return
    from modelopt.torch.quantization.plugins.huggingface import _QuantFusedExperts

    recover = _QuantFusedExperts._get_expert_idx_from_first_proj
    monkeypatch.setattr(_QuantFusedExperts, "_get_expert_idx_from_first_proj",
                        lambda self, weight: (recover(self, weight) + 1) % self.num_experts)
    assert _outcomes(impl, ["routed_tokens_only"]) == {"routed_tokens_only": {"failed"}}


@pytest.mark.parametrize("spec", ["gptqmodel", "gptqmodel_override"])
def test_gptqmodel_modes_give_every_expert_every_token(spec):
    impl = _impl_or_missing(spec)
    if impl is None:
        return
    outcomes = _outcomes(impl, ["all_experts_observed", "routed_tokens_only", "output_matches"])
    assert outcomes == {"all_experts_observed": {"passed"}, "routed_tokens_only": {"passed"}, "output_matches": {"passed"}}, outcomes


def test_gptqmodel_bypass_without_its_replay_is_caught(monkeypatch):
    """A mutant of the bypass: GPTQModel's forward_to_all_experts replaced by the block's routed forward alone."""
    impl = _impl_or_missing("gptqmodel")
    if impl is None:
        return
    from gptqmodel.models.moe_lifecycle import ExpertProjectionMoELifecycleHooks

    monkeypatch.setattr(ExpertProjectionMoELifecycleHooks, "forward_to_all_experts",
                        lambda self, moe_block, hidden_states, original_forward, **kw: original_forward(hidden_states))
    assert _outcomes(impl, ["all_experts_observed"]) == {"all_experts_observed": {"failed"}}


def test_gptqmodel_override_without_raising_top_k_is_caught(monkeypatch):
    """A mutant of the override: GPTQModel's set_moe_topk changing no router."""
    impl = _impl_or_missing("gptqmodel_override")
    if impl is None:
        return
    import gptqmodel.utils.model as gptq_model_utils

    monkeypatch.setattr(gptq_model_utils, "set_moe_topk", lambda model, new_topk: [])
    assert _outcomes(impl, ["all_experts_observed"]) == {"all_experts_observed": {"failed"}}


def test_gptqmodel_bypass_uses_the_hooks_its_definition_names():
    """LFM2-MoE's definition carries W1W3W2 hooks, which find none of Defuser's gate/up/down Linears: GPTQModel
    replays no expert there (reports/findings/gptqmodel-bypass-not-reached.md), and the adapter must not pick
    better-fitting hooks than GPTQModel does."""
    impl = _impl_or_missing("gptqmodel")
    if impl is None:
        return
    assert _outcomes(impl, ["all_experts_observed", "routed_tokens_only"], case="lfm2_moe") == {
        "all_experts_observed": {"failed"}, "routed_tokens_only": {"passed"}}


def test_gptqmodel_override_dropped_forward_leaves_the_kv_cache_alone():
    """DiffusionGemma's decoder layer is the module holding the experts: the override's dropped forward runs the
    whole layer, and must not append to the model's KV cache (GPTQModel replays a layer on its cached inputs)."""
    impl = _impl_or_missing("gptqmodel_override")
    if impl is None:
        return
    assert _outcomes(impl, ["whole_model"], case="diffusion_gemma_decoder") == {"whole_model": {"passed"}}
