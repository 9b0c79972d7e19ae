"""The catalogue's routing and dispatch bugs (``tests/mutants.py``): a DeepSeek-style router re-implemented with one
thing wrong, and per-expert dispatch or unpacking bugs on transformers 5's fused experts."""

from __future__ import annotations

import torch
from torch import nn

from moe_conformance import wrappers
from moe_conformance.wrappers import CalibrationMoEBlock, LinearExperts

from .broken_wrappers import own_experts
from .versions import TRANSFORMERS_5

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


def routing_bug(bug: str | None) -> type:
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


class ScoreBeforeExpert(LinearExperts):
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


class SingleTokenSkipsExperts(LinearExperts):
    """An early return meant for empty batches also fires for a batch of one token."""

    def forward(self, hidden_states, top_k_index, top_k_weights):
        if hidden_states.shape[0] <= 1:
            return torch.zeros_like(hidden_states)
        return super().forward(hidden_states, top_k_index, top_k_weights)


def experts_class_swap(cls: type) -> type:
    class SwapsExpertsClass(CalibrationMoEBlock):
        def __init__(self, original, config=None, calibrate_all_experts=True):
            super().__init__(original, config, calibrate_all_experts)
            if isinstance(self.experts, LinearExperts):
                self.experts.__class__ = cls

    SwapsExpertsClass.__name__ = SwapsExpertsClass.__qualname__ = f"Uses{cls.__name__.lstrip('_')}"
    return SwapsExpertsClass


def relayout(**flags: bool) -> type:
    """Unpacks the fused weights with a layout flag read wrong."""

    class WrongLayout(CalibrationMoEBlock):
        def __init__(self, original, config=None, calibrate_all_experts=True):
            super().__init__(original, config, calibrate_all_experts)
            wrong = {name: (not getattr(original.experts, name)) if value is None else value for name, value in flags.items()}
            self.experts = LinearExperts(original.experts, calibrate_all_experts, wrong)

    WrongLayout.__name__ = WrongLayout.__qualname__ = "WrongLayout_" + "_".join(flags)
    return WrongLayout


class FeedsWeightZeroRoutes(LinearExperts):
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
        for module in own_experts(self).modules():
            if isinstance(module, nn.Linear):
                module.weight = nn.Parameter(module.weight.detach().float(), requires_grad=False)


class MasksUnroutedTokens(LinearExperts):
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
