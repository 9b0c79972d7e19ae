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

from moe_conformance import wrappers
from moe_conformance.checks.table import CHECKS
from moe_conformance.wrappers import CalibrationMoEBlock, LinearExperts
from moe_conformance.wrappers.permanent import PermanentCalibrationMoEBlock

from .conversion_impl import CONVERSION_MUTANTS, converts
from .versions import TRANSFORMERS_5

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


# -- routing bugs: a DeepSeek-style router re-implemented with one thing wrong ------------------------------
# (A control with no bug, `deepseek_router_control`, must pass everything: the kills are the bug's alone.)


# What a dropped group's experts score: 4.57's routers fill 0.0 (so with a negative correction bias an expert of a
# dropped group can still be chosen), 5.x's fill -inf. The control must route exactly as the original does.
_DROPPED_GROUP_FILL = float("-inf") if TRANSFORMERS_5 else 0.0


class _DeepseekStyleRouter(nn.Module):
    """Sigmoid scores; top-k on scores + correction bias within the best ``topk_group`` of ``n_group`` groups
    (a group scored by its top-2 sum); weights = the unbiased scores, renormalised if ``norm_topk_prob``,
    times ``routed_scaling_factor``. Returns what the original router returns: ``(logits, weights, index)``
    in 5.x, ``(index, weights)`` in 4.57."""

    def __init__(self, original: nn.Module, bug: str | None):
        super().__init__()
        self.original = original
        self.bug = bug

    def forward(self, hidden_states):
        r = self.original
        reference = r(hidden_states)
        flat = hidden_states.reshape(-1, r.weight.shape[-1])
        logits = nn.functional.linear(flat.float(), r.weight.float())
        scores = logits.softmax(dim=-1) if self.bug == "softmax_instead_of_sigmoid" else logits.sigmoid()
        choice = scores + r.e_score_correction_bias
        n_group = getattr(r, "n_group", getattr(r, "num_group", None)) or 1
        if self.bug != "group_mask_ignored" and n_group > 1:
            grouped = choice.view(flat.shape[0], n_group, -1)
            group_scores = grouped.topk(2, dim=-1)[0].sum(dim=-1)
            keep = torch.zeros_like(group_scores).scatter_(1, group_scores.topk(r.topk_group, dim=-1)[1], 1)
            choice = choice.masked_fill(~keep.bool().repeat_interleave(grouped.shape[-1], dim=1), _DROPPED_GROUP_FILL)
        k = r.top_k - 1 if self.bug == "top_k_off_by_one" else r.top_k
        index = choice.topk(k, dim=-1, sorted=False)[1]
        weights = scores.gather(1, index)
        if r.norm_topk_prob and self.bug != "normalisation_ignored":
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        weights = weights * r.routed_scaling_factor
        return (logits, weights, index) if len(reference) == 3 else (index, weights)


def _routing_bug(bug: str | None) -> type:
    class BrokenRouting(CalibrationMoEBlock):
        def __init__(self, original, config=None, calibrate_all_experts=True):
            super().__init__(original, config, calibrate_all_experts)
            self.gate = _DeepseekStyleRouter(original.gate, bug)

    BrokenRouting.__name__ = BrokenRouting.__qualname__ = f"Routing_{bug or 'control'}"
    return BrokenRouting


def deepseek_style_router(block: nn.Module) -> bool:
    import inspect

    router = getattr(block, "gate", None)
    needed = ("weight", "e_score_correction_bias", "topk_group", "norm_topk_prob", "routed_scaling_factor", "top_k")
    return (
        isinstance(router, nn.Module)
        and all(hasattr(router, a) for a in needed)
        and (hasattr(router, "n_group") or hasattr(router, "num_group"))
        and len(inspect.signature(router.forward).parameters) == 1  # routers fed a bias by the block differ
    )


# -- dispatch and unpacking bugs on the v5 per-expert Linears ---------------------------------------------


class _ScoreBeforeExpert(LinearExperts):
    """Scales each expert's *input* by the routing weight instead of its output (llama4's HF semantics applied
    to a block that scales outputs)."""

    def forward(self, hidden_states, top_k_index, top_k_weights):
        out = torch.zeros_like(hidden_states)
        for e, expert in enumerate(self):
            token_idx, pos = torch.where(top_k_index == e)
            if self.calibrate_all_experts:
                expert(hidden_states)
            if token_idx.numel():
                rows = expert(hidden_states[token_idx] * top_k_weights[token_idx, pos, None].to(hidden_states.dtype))
                out.index_add_(0, token_idx, rows.to(out.dtype))
        return out


class _SingleTokenSkipsExperts(LinearExperts):
    """An early return meant for empty batches also fires for a batch of one token."""

    def forward(self, hidden_states, top_k_index, top_k_weights):
        if hidden_states.shape[0] <= 1:
            return torch.zeros_like(hidden_states)
        return super().forward(hidden_states, top_k_index, top_k_weights)


def _experts_class_swap(cls: type) -> type:
    class SwapsExpertsClass(CalibrationMoEBlock):
        def __init__(self, original, config=None, calibrate_all_experts=True):
            super().__init__(original, config, calibrate_all_experts)
            if isinstance(self.experts, LinearExperts):
                self.experts.__class__ = cls

    SwapsExpertsClass.__name__ = SwapsExpertsClass.__qualname__ = f"Uses{cls.__name__.lstrip('_')}"
    return SwapsExpertsClass


def _relayout(**flags: bool) -> type:
    """Unpacks the fused weights with a layout flag read wrong."""

    class WrongLayout(CalibrationMoEBlock):
        def __init__(self, original, config=None, calibrate_all_experts=True):
            super().__init__(original, config, calibrate_all_experts)
            wrong = {name: (not getattr(original.experts, name)) if value is None else value for name, value in flags.items()}
            self.experts = LinearExperts(original.experts, calibrate_all_experts, wrong)

    WrongLayout.__name__ = WrongLayout.__qualname__ = "WrongLayout_" + "_".join(flags)
    return WrongLayout


class _FeedsWeightZeroRoutes(LinearExperts):
    """Routes of weight 0 treated as routes: each expert is fed the rows the original sends it only as a
    communication device (LongCat-Flash 5.25's dummy rows), which add nothing to the output (a weight too small
    to count stands in for the 0, so the output is unchanged)."""

    def forward(self, hidden_states, top_k_index, top_k_weights):
        tiny = torch.finfo(top_k_weights.dtype).tiny
        return super().forward(hidden_states, top_k_index, top_k_weights.masked_fill(top_k_weights == 0, tiny))


class DropsWrappingForward(CalibrationMoEBlock):
    """The whole experts module replaced by per-expert Linears, where its class wraps transformers' decorated
    dispatch: what the wrapping forward adds (Ergo's per-expert RMSNorm after each route) is dropped, as
    auto-round drops Muse Spark's post-expert norm."""

    def __init__(self, original, config=None, calibrate_all_experts=True):
        super().__init__(original, config, calibrate_all_experts)
        self.experts = LinearExperts(original.experts, calibrate_all_experts)


class WeightsInFloat32(CalibrationMoEBlock):
    """Unpacked weights materialised in float32 whatever the model's dtype (llm-compressor 22ebb0578's dtype bug)."""

    def __init__(self, original, config=None, calibrate_all_experts=True):
        super().__init__(original, config, calibrate_all_experts)
        for module in _own_experts(self).modules():
            if isinstance(module, nn.Linear):
                module.weight = nn.Parameter(module.weight.detach().float(), requires_grad=False)


class _MasksUnroutedTokens(LinearExperts):
    """"Every expert sees every token" done by running each expert on the whole batch with the tokens not
    routed to it zeroed: the shapes look calibrated, the statistics of an unrouted expert are of zeros."""

    def forward(self, hidden_states, top_k_index, top_k_weights):
        if not self.calibrate_all_experts:
            return super().forward(hidden_states, top_k_index, top_k_weights)

        def masked(e: int, expert: nn.Module):
            routed = (top_k_index == e).any(dim=-1, keepdim=True).to(hidden_states.dtype)
            return lambda x: expert(x * routed) if x.shape[0] == routed.shape[0] else expert(x)

        implementation = getattr(self._dispatch_config, "_experts_implementation", None)
        accumulate = None if implementation in (None, "eager") else torch.float32
        experts = [masked(e, expert) for e, expert in enumerate(self)]
        out = wrappers.dispatch_to_experts(experts, hidden_states, top_k_index, top_k_weights, True, accumulate_dtype=accumulate)
        return out.to(hidden_states.dtype)


class MutatesSharedConfig(CalibrationMoEBlock):
    """Forces all experts the way a top-k override does (GPTQModel's ``set_moe_topk``), on the config it is
    given, and never puts it back: every later model built from that config routes to every expert."""

    def __init__(self, original, config=None, calibrate_all_experts=True):
        super().__init__(original, config, calibrate_all_experts)
        if config is not None:
            config.num_experts_per_tok = 1 + (getattr(config, "num_experts", None) or getattr(config, "n_routed_experts", None) or 64)


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
        Mutant("context_not_exception_safe", CorrectSubclass, "replacement not undone when the body raises", context=_context_without_exception_safety),
        Mutant("wrong_constructor", WrongConstructor, "constructor keyword other than 'original'"),
        Mutant("softmax_instead_of_sigmoid", _routing_bug("softmax_instead_of_sigmoid"), "scoring function swapped", deepseek_style_router),
        Mutant("top_k_off_by_one", _routing_bug("top_k_off_by_one"), "top-k of k - 1", deepseek_style_router),
        Mutant("group_mask_ignored", _routing_bug("group_mask_ignored"), "topk_group < n_group ignored", deepseek_style_router),
        Mutant("normalisation_ignored", _routing_bug("normalisation_ignored"), "norm_topk_prob ignored", deepseek_style_router),
        Mutant("score_before_expert", _experts_class_swap(_ScoreBeforeExpert), "router weight applied to the expert input (llm-compressor #2243)", _has_dispatched_experts),
        Mutant("missing_transpose", _relayout(is_transposed=None), "fused weights read without/with a transpose", _has_dispatched_experts),
        Mutant("interleaved_read_as_concatenated", _relayout(is_concatenated=True), "gpt-oss's interleaved gate/up read as halves", _has_interleaved_experts),
        Mutant("weights_in_float32", WeightsInFloat32, "unpacked weights in the wrong dtype (22ebb0578)"),
        Mutant("output_in_float32", OutputInFloat32, "output dtype drift"),
        Mutant("scrambles_batches", ScramblesBatches, "a bug only when batch > 1"),
        Mutant("single_token_skips_experts", _experts_class_swap(_SingleTokenSkipsExperts), "a bug only for a single token", _has_dispatched_experts),
        Mutant("restore_returns_copy", RestoreReturnsCopy, "restore() returns a copy of the original"),
        Mutant("permanent_keeps_original", PermanentKeepsOriginal, "the original kept alive (95c949ad0: 2x memory)"),
        Mutant("uses_fused_fast_path", UsesFusedFastPath, "grouped_mm/batched_mm bypass the Linears (ModelOpt #1340)", _has_dispatched_experts),
        Mutant("covers_nothing", CorrectSubclass, "block class never registered (GLM-4.7-Flash before PR #2547)", blocks=("SomeOtherMoE",)),
        Mutant("context_replaces_first_only", CorrectSubclass, "context stops after the first block", context=_context_replacing_first_block_only),
        Mutant("masks_unrouted_tokens", _experts_class_swap(_MasksUnroutedTokens), "all-experts mode feeds unrouted experts zeroed rows", _has_dispatched_experts),
        Mutant("mutates_shared_config", MutatesSharedConfig, "a top-k override left on the shared config (GPTQModel set_moe_topk)"),
        Mutant("feeds_weight_zero_routes", _experts_class_swap(_FeedsWeightZeroRoutes), "weight-0 dummy routes calibrated as routed tokens", _routes_with_weight_zero),
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

deepseek_router_control = SimpleNamespace(CALIBRATION_WRAPPERS={name: _routing_bug(None) for name in wrappers.GENERIC_BLOCKS})
correct_subclass = SimpleNamespace(CALIBRATION_WRAPPERS={name: CorrectSubclass for name in wrappers.GENERIC_BLOCKS})
