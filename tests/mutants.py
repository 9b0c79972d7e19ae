"""Deliberately broken wrappers, drawn from the bug history of real calibration wrappers
(../shared/research/llmc_wrappers.md section 3, peers.md). The suite must catch every one of them.

Each mutant is a small subclass of the reference wrapper that breaks one thing. ``MUTANTS`` maps a name to a
``Mutant``; each is also an implementation namespace usable as ``--impl tests.mutants:<attribute>``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from torch import nn

import wrappers
from wrappers import CalibrationMoEBlock, LinearExperts

# -- helpers the mutants share ----------------------------------------------------------------------------


def _own_experts(wrapper: nn.Module) -> nn.Module:
    """The wrapper's experts, copied first where they are the original's own modules (4.x ModuleList), so a
    mutant breaks only itself and not the block it wraps (that is a different mutant)."""
    if not isinstance(wrapper.experts, LinearExperts):
        wrapper.experts = copy.deepcopy(wrapper.experts)
    return wrapper.experts


def _transposed_linear(source: nn.Linear) -> nn.Linear:
    linear = nn.Linear(source.out_features, source.in_features, bias=False, device="meta")
    linear.weight = nn.Parameter(source.weight.detach().t(), requires_grad=False)
    return linear


def _router(wrapper: nn.Module) -> tuple[str, nn.Module]:
    for name in ("gate", "router"):
        module = getattr(wrapper, name, None)
        if isinstance(module, nn.Module):
            return name, module
    raise AttributeError(f"{type(wrapper).__name__} has no gate/router")


def _private_router(wrapper: nn.Module) -> nn.Module:
    """A copy of the router installed on the wrapper only, free to be broken."""
    name, router = _router(wrapper)
    router = copy.deepcopy(router)
    setattr(wrapper, name, router)
    return router


def _shared_name(module: nn.Module) -> str | None:
    return next((n for n in ("shared_experts", "shared_expert") if isinstance(getattr(module, n, None), nn.Module)), None)


def _scale_first(out, factor: float):
    if isinstance(out, tuple):
        return (out[0] * factor, *out[1:])
    return out * factor


# -- the broken wrappers ------------------------------------------------------------------------------------


class IgnoresCalibrateAllExperts(CalibrationMoEBlock):
    def __init__(self, original, config=None, calibrate_all_experts=True):
        super().__init__(original, config, calibrate_all_experts=False)


class CalibratesAllWhenRouted(CalibrationMoEBlock):
    def __init__(self, original, config=None, calibrate_all_experts=True):
        super().__init__(original, config, calibrate_all_experts=True)


class Drift1e4(CalibrationMoEBlock):
    def forward(self, *args, **kwargs):
        return _scale_first(super().forward(*args, **kwargs), 1 + 1e-4)


class ReturnsZeros(CalibrationMoEBlock):
    def forward(self, *args, **kwargs):
        return _scale_first(super().forward(*args, **kwargs), 0.0)


class DropsSharedExpert(CalibrationMoEBlock):
    def __init__(self, original, config=None, calibrate_all_experts=True):
        super().__init__(original, config, calibrate_all_experts)
        name = _shared_name(self)
        if name:
            shared = copy.deepcopy(getattr(self, name))
            for p in shared.parameters():
                p.data.zero_()
            setattr(self, name, shared)


class SwapsGateUp(CalibrationMoEBlock):
    def __init__(self, original, config=None, calibrate_all_experts=True):
        super().__init__(original, config, calibrate_all_experts)
        for expert in _own_experts(self):
            expert.gate_proj, expert.up_proj = expert.up_proj, expert.gate_proj


class SwapsUpDown(CalibrationMoEBlock):
    def __init__(self, original, config=None, calibrate_all_experts=True):
        super().__init__(original, config, calibrate_all_experts)
        for expert in _own_experts(self):
            expert.up_proj, expert.down_proj = _transposed_linear(expert.down_proj), _transposed_linear(expert.up_proj)


class AliasesExpertZero(CalibrationMoEBlock):
    def __init__(self, original, config=None, calibrate_all_experts=True):
        super().__init__(original, config, calibrate_all_experts)
        experts = _own_experts(self)
        for expert in list(experts)[1:]:
            for name in ("gate_proj", "up_proj", "down_proj"):
                setattr(expert, name, getattr(experts[0], name))


class LiesAboutInFeatures(CalibrationMoEBlock):
    def __init__(self, original, config=None, calibrate_all_experts=True):
        super().__init__(original, config, calibrate_all_experts)
        for module in _own_experts(self).modules():
            if isinstance(module, nn.Linear):
                module.in_features += 8


class RestoreReturnsWrapper(CalibrationMoEBlock):
    def restore(self, original):
        return self


class MutatesOriginalWeights(CalibrationMoEBlock):
    def __init__(self, original, config=None, calibrate_all_experts=True):
        with torch.no_grad():  # "unpacking" that clamps outliers in place, in the original's storage
            for p in original.experts.parameters():
                p.clamp_(-0.3, 0.3)
        super().__init__(original, config, calibrate_all_experts)


class IgnoresCorrectionBias(CalibrationMoEBlock):
    def __init__(self, original, config=None, calibrate_all_experts=True):
        super().__init__(original, config, calibrate_all_experts)
        if isinstance(getattr(self, "expert_bias", None), torch.Tensor):  # afmoe keeps it on the block
            self.expert_bias = nn.Parameter(torch.zeros_like(self.expert_bias), requires_grad=False)
        else:
            _private_router(self).e_score_correction_bias.zero_()


class IgnoresScalingFactor(CalibrationMoEBlock):
    def __init__(self, original, config=None, calibrate_all_experts=True):
        super().__init__(original, config, calibrate_all_experts)
        router = _private_router(self)
        for name in ("routed_scaling_factor", "route_scale"):
            if hasattr(router, name):
                setattr(router, name, 1.0)


class WrongReturnStructure(CalibrationMoEBlock):
    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        return out[0] if isinstance(out, tuple) else (out, None)


class _FastPathLinearExperts(LinearExperts):
    """Per-expert Linears, except that whenever the model asks for a fused kernel the original fused module
    runs instead: correct outputs, and not one expert Linear observed."""

    def forward(self, hidden_states, top_k_index, top_k_weights):
        fused = self._fused[0]
        if fused.config._experts_implementation not in (None, "eager"):
            return fused(hidden_states, top_k_index, top_k_weights)
        return super().forward(hidden_states, top_k_index, top_k_weights)


class UsesFusedFastPath(CalibrationMoEBlock):
    def __init__(self, original, config=None, calibrate_all_experts=True):
        super().__init__(original, config, calibrate_all_experts)
        if isinstance(self.experts, LinearExperts):
            self.experts.__class__ = _FastPathLinearExperts
            self.experts._fused = [original.experts]  # a list: not registered as a submodule


class WrongConstructor(CalibrationMoEBlock):
    """Takes ``module`` where the contract says ``original`` (llm-compressor's positional-vs-keyword bug)."""

    def __init__(self, module, config=None, calibrate_all_experts=True):
        super().__init__(module, config, calibrate_all_experts)


class CorrectSubclass(CalibrationMoEBlock):
    """Not a mutant: a correct variant of the reference wrapper (it counts its calls). Must pass everything."""

    def forward(self, *args, **kwargs):
        self.calls = getattr(self, "calls", 0) + 1
        return super().forward(*args, **kwargs)


@contextlib.contextmanager
def _context_without_exception_safety(model, calibrate_all_experts=True):
    replaced = []
    for name, module in list(model.named_modules()):
        if wrappers.CalibrationMoEBlock.is_registered(type(module).__name__):
            wrapper = CalibrationMoEBlock(original=module, config=model.config, calibrate_all_experts=calibrate_all_experts)
            model.set_submodule(name, wrapper)
            replaced.append((name, module))
    yield model  # no try/finally: an exception in the body leaves the wrappers in place
    for name, module in replaced:
        model.set_submodule(name, module)


@contextlib.contextmanager
def _context_replacing_first_block_only(model, calibrate_all_experts=True):
    for name, module in list(model.named_modules()):
        if wrappers.CalibrationMoEBlock.is_registered(type(module).__name__):
            wrapper = CalibrationMoEBlock(original=module, config=model.config, calibrate_all_experts=calibrate_all_experts)
            model.set_submodule(name, wrapper)
            break  # "found one, done": every later block is silently not calibrated
    else:
        yield model
        return
    try:
        yield model
    finally:
        model.set_submodule(name, module)


# -- the catalogue ------------------------------------------------------------------------------------------


def _has_shared_expert(block: nn.Module) -> bool:
    return _shared_name(block) is not None


def _has_correction_bias(block: nn.Module) -> bool:
    router = getattr(block, "gate", None)
    return isinstance(getattr(block, "expert_bias", None), torch.Tensor) or isinstance(
        getattr(router, "e_score_correction_bias", None), torch.Tensor
    )


def _has_dispatched_experts(block: nn.Module) -> bool:
    return hasattr(getattr(block, "experts", None), "is_concatenated")


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
        Mutant("context_not_exception_safe", CorrectSubclass, "replacement not undone when the body raises", context=_context_without_exception_safety),
        Mutant("wrong_constructor", WrongConstructor, "constructor keyword other than 'original'"),
        Mutant("uses_fused_fast_path", UsesFusedFastPath, "grouped_mm/batched_mm bypass the Linears (ModelOpt #1340)", _has_dispatched_experts),
        Mutant("covers_nothing", CorrectSubclass, "block class never registered (GLM-4.7-Flash before PR #2547)", blocks=("SomeOtherMoE",)),
        Mutant("context_replaces_first_only", CorrectSubclass, "context stops after the first block", context=_context_replacing_first_block_only),
    )
}

# For every check, a mutant that the check on its own must catch: no check is taken on trust.
CAUGHT_BY = {
    "covered": "covers_nothing",
    "all_experts_observed": "ignores_calibrate_all_experts",
    "routed_tokens_only": "calibrates_all_when_routed",
    "output_matches": "drift_1e_4",
    "experts_are_linear": "lies_about_in_features",
    "restore_semantics": "restore_returns_wrapper",
    "no_side_effects": "mutates_original_weights",
    "whole_model": "context_replaces_first_only",
    "experts_implementation": "uses_fused_fast_path",
}

# Each mutant is an attribute of this module, for ``--impl tests.mutants:<name>``.
globals().update(MUTANTS)

correct_subclass = SimpleNamespace(CALIBRATION_WRAPPERS={name: CorrectSubclass for name in wrappers.GENERIC_BLOCKS})
