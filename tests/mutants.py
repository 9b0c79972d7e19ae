"""Deliberately broken wrappers, drawn from the bug history of real calibration wrappers
(../shared/research/llmc_wrappers.md section 3, peers.md). The suite must catch every one of them.

Each mutant is a small subclass of the reference wrapper that breaks one thing. ``MUTANTS`` maps a name to a
``Mutant``; each is also an implementation namespace usable as ``--impl tests.mutants:<attribute>``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from torch import nn

from moe_conformance import wrappers
from moe_conformance.checks.table import CHECKS

from .broken_routing import (
    DropsWrappingForward,
    FeedsWeightZeroRoutes,
    MasksUnroutedTokens,
    MutatesSharedConfig,
    ScoreBeforeExpert,
    SingleTokenSkipsExperts,
    WeightsInFloat32,
    deepseek_style_router,
    experts_class_swap,
    relayout,
    routing_bug,
)
from .broken_wrappers import (
    AliasesExpertZero,
    CalibratesAllWhenRouted,
    CorrectSubclass,
    Drift1e4,
    DropsSharedExpert,
    IgnoresCalibrateAllExperts,
    IgnoresCorrectionBias,
    IgnoresScalingFactor,
    LiesAboutInFeatures,
    MutatesOriginalWeights,
    OutputInFloat32,
    PermanentKeepsOriginal,
    RestoreReturnsCopy,
    RestoreReturnsWrapper,
    ReturnsZeros,
    ScramblesBatches,
    SwapsGateUp,
    SwapsUpDown,
    UsesFusedFastPath,
    WrongConstructor,
    WrongReturnStructure,
    context_replacing_first_block_only,
    context_without_exception_safety,
    shared_name,
)
from .conversion_impl import CONVERSION_MUTANTS, converts

# -- the catalogue ------------------------------------------------------------------------------------------


def _has_shared_expert(block: nn.Module) -> bool:
    return shared_name(block) is not None


def _has_correction_bias(block: nn.Module) -> bool:
    router = getattr(block, "gate", None)
    return isinstance(getattr(block, "expert_bias", None), torch.Tensor) or isinstance(
        getattr(router, "e_score_correction_bias", None), torch.Tensor
    )


def _has_dispatched_experts(block: nn.Module) -> bool:
    return hasattr(getattr(block, "experts", None), "is_concatenated")


def _has_interleaved_experts(block: nn.Module) -> bool:
    return getattr(getattr(block, "experts", None), "is_concatenated", True) is False


def _wraps_decorated_dispatch(block: nn.Module) -> bool:
    """Its experts class subclasses the one ``@use_experts_implementation`` decorated, around that dispatch."""
    from moe_conformance.wrappers.decorated import decorated_class

    experts = getattr(block, "experts", None)
    decorated = decorated_class(type(experts)) if experts is not None else None
    return decorated is not None and decorated is not type(experts)


def _routes_with_weight_zero(block: nn.Module) -> bool:
    """The block sends routes of weight 0 to real experts: LongCat-Flash's zero-expert routes from 5.25 on
    (before, its fused experts had identity rows for them)."""
    experts = getattr(block, "experts", None)
    return bool(getattr(block, "zero_expert_num", 0)) and getattr(experts, "gate_up_proj", None) is not None and (
        experts.gate_up_proj.shape[0] == experts.down_proj.shape[0]
    )


def _has_scaling_factor(block: nn.Module) -> bool:
    return any(hasattr(getattr(block, r, None), n) for r in ("gate", "router") for n in ("routed_scaling_factor", "route_scale"))


@dataclass
class Mutant:
    name: str
    wrapper: type
    bug: str  # what real bug it stands for
    applies: Callable[[nn.Module], bool] = lambda block: True
    context: Callable | None = None
    blocks: tuple[str, ...] = wrappers.GENERIC_BLOCKS  # the original classes it registers for
    CALIBRATION_WRAPPERS: dict = field(init=False)

    def __post_init__(self):
        self.CALIBRATION_WRAPPERS = {name: self.wrapper for name in self.blocks}
        if self.context is not None:
            self.moe_calibration_context = self.context

    @property
    def impl_spec(self) -> str:
        return f"tests.mutants:{self.name}"


MUTANTS: dict[str, Mutant] = {
    m.name: m
    for m in (
        Mutant("ignores_calibrate_all_experts", IgnoresCalibrateAllExperts, "flag never wired up (llm-compressor #2826, #2827)"),
        Mutant("calibrates_all_when_routed", CalibratesAllWhenRouted, "calibrate_all_experts=False ignored"),
        Mutant("drift_1e_4", Drift1e4, "output off by 1e-4 relative (loose tolerances let it pass)"),
        Mutant("returns_zeros", ReturnsZeros, "output is zeros (passes mse < 0.1 on tiny configs)"),
        Mutant("drops_shared_expert", DropsSharedExpert, "shared expert dropped", _has_shared_expert),
        Mutant("swaps_gate_up", SwapsGateUp, "gate/up halves of gate_up_proj swapped"),
        Mutant("swaps_up_down", SwapsUpDown, "up_proj <-> down_proj renamed (e92fe38c9)"),
        Mutant("aliases_expert_zero", AliasesExpertZero, "every expert aliases expert 0's weights"),
        Mutant("lies_about_in_features", LiesAboutInFeatures, "in/out features that do not match the weights (gemma4, qwen3-vl at 0.11)"),
        Mutant("restore_returns_wrapper", RestoreReturnsWrapper, "restore() returns the wrapper"),
        Mutant("mutates_original_weights", MutatesOriginalWeights, "unpacking writes into the original's storage (.data aliasing)"),
        Mutant("ignores_correction_bias", IgnoresCorrectionBias, "e_score_correction_bias / expert_bias ignored", _has_correction_bias),
        Mutant("ignores_scaling_factor", IgnoresScalingFactor, "routed_scaling_factor / route_scale ignored", _has_scaling_factor),
        Mutant("wrong_return_structure", WrongReturnStructure, "tuple vs tensor return (router logits dropped)"),
        Mutant("context_not_exception_safe", CorrectSubclass, "replacement not undone when the body raises", context=context_without_exception_safety),
        Mutant("wrong_constructor", WrongConstructor, "constructor keyword other than 'original'"),
        Mutant("softmax_instead_of_sigmoid", routing_bug("softmax_instead_of_sigmoid"), "scoring function swapped", deepseek_style_router),
        Mutant("top_k_off_by_one", routing_bug("top_k_off_by_one"), "top-k of k - 1", deepseek_style_router),
        Mutant("group_mask_ignored", routing_bug("group_mask_ignored"), "topk_group < n_group ignored", deepseek_style_router),
        Mutant("normalisation_ignored", routing_bug("normalisation_ignored"), "norm_topk_prob ignored", deepseek_style_router),
        Mutant("score_before_expert", experts_class_swap(ScoreBeforeExpert), "router weight applied to the expert input (llm-compressor #2243)", _has_dispatched_experts),
        Mutant("missing_transpose", relayout(is_transposed=None), "fused weights read without/with a transpose", _has_dispatched_experts),
        Mutant("interleaved_read_as_concatenated", relayout(is_concatenated=True), "gpt-oss's interleaved gate/up read as halves", _has_interleaved_experts),
        Mutant("weights_in_float32", WeightsInFloat32, "unpacked weights in the wrong dtype (22ebb0578)"),
        Mutant("output_in_float32", OutputInFloat32, "output dtype drift"),
        Mutant("scrambles_batches", ScramblesBatches, "a bug only when batch > 1"),
        Mutant("single_token_skips_experts", experts_class_swap(SingleTokenSkipsExperts), "a bug only for a single token", _has_dispatched_experts),
        Mutant("restore_returns_copy", RestoreReturnsCopy, "restore() returns a copy of the original"),
        Mutant("permanent_keeps_original", PermanentKeepsOriginal, "the original kept alive (95c949ad0: 2x memory)"),
        Mutant("uses_fused_fast_path", UsesFusedFastPath, "grouped_mm/batched_mm bypass the Linears (ModelOpt #1340)", _has_dispatched_experts),
        Mutant("covers_nothing", CorrectSubclass, "block class never registered (GLM-4.7-Flash before PR #2547)", blocks=("SomeOtherMoE",)),
        Mutant("context_replaces_first_only", CorrectSubclass, "context stops after the first block", context=context_replacing_first_block_only),
        Mutant("masks_unrouted_tokens", experts_class_swap(MasksUnroutedTokens), "all-experts mode feeds unrouted experts zeroed rows", _has_dispatched_experts),
        Mutant("mutates_shared_config", MutatesSharedConfig, "a top-k override left on the shared config (GPTQModel set_moe_topk)"),
        Mutant("feeds_weight_zero_routes", experts_class_swap(FeedsWeightZeroRoutes), "weight-0 dummy routes calibrated as routed tokens", _routes_with_weight_zero),
        Mutant("drops_wrapping_forward", DropsWrappingForward, "the experts class's own forward around the dispatch dropped (auto-round, Muse Spark's norm)", _wraps_decorated_dispatch),
    )
}
# Model conversions (tests/conversion_impl.py) with one bug each: flag never set, a block missed, class patches.
MUTANTS.update(CONVERSION_MUTANTS)

# For every check, the mutants that the check on its own must catch: no check is taken on trust. A strengthened
# check lists the mutant of what it now also guards; a check that judges conversions, a conversion mutant.
CAUGHT_BY = {
    "covered": ("covers_nothing",),
    "all_experts_observed": ("ignores_calibrate_all_experts", "conversion_flag_never_set"),
    "routed_tokens_only": ("calibrates_all_when_routed", "feeds_weight_zero_routes"),
    "output_matches": ("drift_1e_4",),
    "experts_are_linear": ("lies_about_in_features",),
    "restore_semantics": ("restore_returns_wrapper",),
    "no_side_effects": ("mutates_original_weights", "mutates_shared_config", "conversion_patches_experts_class"),
    "partial_conversion": ("conversion_mode_patches_experts_class",),
    "whole_model": ("context_replaces_first_only", "conversion_misses_a_block"),
    "experts_implementation": ("uses_fused_fast_path",),
    "routing_properties": ("drift_1e_4",),
    "calibration_smoke": ("ignores_calibrate_all_experts", "masks_unrouted_tokens"),
}

# The check each mutant's bug is aimed at, where CAUGHT_BY does not already say: the catalogue runs that check
# first and the others after it (tests/test_mutants.py), so that a kill costs one check rather than every check
# the suite runs before it. It is an order, not a verdict: a mutant the aimed-at check misses on some
# architecture must still be caught there by another check.
AIMED_AT = {
    "returns_zeros": "output_matches",
    "drops_shared_expert": "output_matches",
    "swaps_gate_up": "output_matches",
    "swaps_up_down": "output_matches",
    "aliases_expert_zero": "all_experts_observed",
    "ignores_correction_bias": "routed_tokens_only",
    "ignores_scaling_factor": "output_matches",
    "wrong_return_structure": "output_matches",
    "context_not_exception_safe": "restore_semantics",
    "softmax_instead_of_sigmoid": "routed_tokens_only",
    "top_k_off_by_one": "routed_tokens_only",
    "group_mask_ignored": "routed_tokens_only",
    "normalisation_ignored": "output_matches",
    "score_before_expert": "all_experts_observed",
    "missing_transpose": "all_experts_observed",
    "interleaved_read_as_concatenated": "experts_are_linear",
    "weights_in_float32": "all_experts_observed",
    "output_in_float32": "output_matches",
    "scrambles_batches": "output_matches",
    "single_token_skips_experts": "all_experts_observed",
    "restore_returns_copy": "restore_semantics",
    "permanent_keeps_original": "restore_semantics",
    "masks_unrouted_tokens": "all_experts_observed",  # cheaper than calibration_smoke, which catches it too
    "drops_wrapping_forward": "output_matches",
}


def check_order(mutant: str) -> list[str]:
    """Every check, the one ``mutant`` is aimed at first."""
    aimed = [AIMED_AT[mutant]] if mutant in AIMED_AT else [c for c, names in CAUGHT_BY.items() if mutant in names][:1]
    return aimed + [c for c in CHECKS if c not in aimed]


# The structures of transformers 5.x alone (fused 3-D experts, model conversions of them): a mutant applying only
# to these applies to no architecture of 4.x.
FUSED_EXPERTS_ONLY = (_has_dispatched_experts, _has_interleaved_experts, converts)
# And those of transformers 5.25 on: before it, no architecture has them.
FROM_TRANSFORMERS_5_25 = (_wraps_decorated_dispatch, _routes_with_weight_zero)

# Each mutant is an attribute of this module, for ``--impl tests.mutants:<name>``.
globals().update(MUTANTS)

deepseek_router_control = SimpleNamespace(CALIBRATION_WRAPPERS={name: routing_bug(None) for name in wrappers.GENERIC_BLOCKS})
correct_subclass = SimpleNamespace(CALIBRATION_WRAPPERS={name: CorrectSubclass for name in wrappers.GENERIC_BLOCKS})
