"""The catalogue's broken wrappers (``tests/mutants.py``): each a small subclass of the reference wrapper that
breaks one thing of its structure, output or restore, drawn from the bug history of real calibration wrappers
(../shared/research/llmc_wrappers.md section 3, peers.md). The routing and dispatch bugs are in
``broken_routing.py``."""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from moe_conformance import wrappers
from moe_conformance.wrappers import CalibrationMoEBlock, LinearExperts
from moe_conformance.wrappers.permanent import PermanentCalibrationMoEBlock

# -- helpers the mutants share ----------------------------------------------------------------------------


def own_experts(wrapper: nn.Module) -> nn.Module:
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


def shared_name(module: nn.Module) -> str | None:
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
        name = shared_name(self)
        if name:
            shared = copy.deepcopy(getattr(self, name))
            for p in shared.parameters():
                p.data.zero_()
            setattr(self, name, shared)


class SwapsGateUp(CalibrationMoEBlock):
    def __init__(self, original, config=None, calibrate_all_experts=True):
        super().__init__(original, config, calibrate_all_experts)
        for expert in own_experts(self):
            expert.gate_proj, expert.up_proj = expert.up_proj, expert.gate_proj


class SwapsUpDown(CalibrationMoEBlock):
    def __init__(self, original, config=None, calibrate_all_experts=True):
        super().__init__(original, config, calibrate_all_experts)
        for expert in own_experts(self):
            expert.up_proj, expert.down_proj = _transposed_linear(expert.down_proj), _transposed_linear(expert.up_proj)


class AliasesExpertZero(CalibrationMoEBlock):
    def __init__(self, original, config=None, calibrate_all_experts=True):
        super().__init__(original, config, calibrate_all_experts)
        experts = own_experts(self)
        for expert in list(experts)[1:]:
            for name in ("gate_proj", "up_proj", "down_proj"):
                setattr(expert, name, getattr(experts[0], name))


class LiesAboutInFeatures(CalibrationMoEBlock):
    def __init__(self, original, config=None, calibrate_all_experts=True):
        super().__init__(original, config, calibrate_all_experts)
        for module in own_experts(self).modules():
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


# -- output and restore bugs ------------------------------------------------------------------------------


class OutputInFloat32(CalibrationMoEBlock):
    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        return (out[0].float(), *out[1:]) if isinstance(out, tuple) else out.float()


class ScramblesBatches(CalibrationMoEBlock):
    """Flattens [B, S, H] sequence-major and unflattens it batch-major: right only when B == 1."""

    def forward(self, hidden_states, *args, **kwargs):
        out = super().forward(hidden_states, *args, **kwargs)
        first = out[0] if isinstance(out, tuple) else out
        batch, seq = hidden_states.shape[:2]
        if hidden_states.dim() == 3 and batch > 1:  # outputs [B, S, H] or flattened [B*S, H] alike
            first = first.reshape(batch, seq, -1).transpose(0, 1).reshape(first.shape)
        return (first, *out[1:]) if isinstance(out, tuple) else first


class RestoreReturnsCopy(CalibrationMoEBlock):
    def restore(self, original):
        return copy.deepcopy(original)


class PermanentKeepsOriginal(PermanentCalibrationMoEBlock):
    """Permanent, and holds on to the block it replaced: with copied experts, two copies of the weights."""

    def __init__(self, original, config=None, calibrate_all_experts=True):
        super().__init__(original, config, calibrate_all_experts)
        self.__dict__["_replaced"] = original


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
def context_without_exception_safety(model, calibrate_all_experts=True):
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
def context_replacing_first_block_only(model, calibrate_all_experts=True):
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
