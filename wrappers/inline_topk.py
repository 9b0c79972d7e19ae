"""Inline softmax top-k: the family forward of the transformers 4.57 blocks that route and loop over a
``ModuleList`` inline (``table.py`` lists the blocks each mechanism here serves).

In 4.57 these blocks (Mixtral and its many copies) compute routing inside ``forward`` and loop over their
experts there, with no method to override, so the forward is written out here once for the whole family:

1. ``route``: router logits from the block's ``gate`` (or ``router``), softmax in float32, top-k, renormalise
   when the block's ``norm_topk_prob`` says so (blocks without that attribute use the mechanism's
   ``renormalise`` default), cast the weights to the hidden dtype;
2. the one token loop, ``dispatch_to_experts`` (transformers' eager arithmetic);
3. the shared expert, whichever the block has: ``shared_expert`` scaled by ``sigmoid(shared_expert_gate(x))``
   (Qwen2-MoE style), or ``shared_experts`` / ``shared_mlp`` added as is (Ernie, HunYuan);
4. ``(out[B, S, H], router_logits[T, E])``, or the bare output for blocks that return no logits (HunYuan).

Subclasses change only the routing (Phi-MoE's sparsemixer, Ernie's float32 router with a selection bias,
Aria's softmax over the top-k logits), the class-level defaults, or, for the two 4.57 blocks with undecorated
3-D experts (Qwen3-VL-MoE, Aria), unpack those into per-expert Linear views first. Training-only input jitter
(Mixtral, MiniMax, Phi-MoE) is reproduced under ``self.training`` exactly as the originals apply it. In transformers 5.x the same class names hold fused
experts and are served by ``FusedExpertsMechanism`` instead.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import CalibrationMoEBlock
from .experts import ExpertMLP, LinearExperts, linear_view, dispatch_to_experts

__all__ = [
    "AriaTopKMechanism",
    "ErnieTopKMechanism",
    "InlineTopKMechanism",
    "SparseMixerMechanism",
    "TransposedFusedTopKMechanism",
]


class InlineTopKMechanism(CalibrationMoEBlock):
    """Softmax -> top-k -> optional renormalisation, with the block's ModuleList experts."""

    _is_mechanism = True
    # Renormalise the top-k weights when the block has no ``norm_topk_prob`` attribute (Mixtral always does).
    renormalise: ClassVar[bool] = True
    # The block returns ``(out, router_logits)``; False: the bare output.
    returns_router_logits: ClassVar[bool] = True
    # The config attribute holding the training-only multiplicative input jitter, if the block has one.
    input_jitter_attribute: ClassVar[str | None] = None

    def forward(self, hidden_states: torch.Tensor):
        batch, seq, hidden = hidden_states.shape
        jitter = getattr(self, self.input_jitter_attribute, 0) if self.input_jitter_attribute else 0
        if self.training and jitter > 0:
            # In place, as the originals do.
            hidden_states *= torch.empty_like(hidden_states).uniform_(1.0 - jitter, 1.0 + jitter)
        router_logits, routing_weights, selected_experts = self.route(hidden_states)
        flat = hidden_states.view(-1, hidden)
        out = dispatch_to_experts(self.experts, flat, selected_experts, routing_weights, self.calibrate_all_experts)
        out = out.reshape(batch, seq, hidden)
        shared = self.shared_output(hidden_states)
        if shared is not None:
            out = out + shared
        return (out, router_logits) if self.returns_router_logits else out

    def route(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(router_logits[T, E], weights[T, k] in the hidden dtype, indices[T, k])`` for ``[B, S, H]`` input."""
        router = self.gate if "gate" in self._modules else self.router
        # Routers are nn.Linear or take [B, S, H] themselves (HunYuan's gate); either way one row per token.
        router_logits = router(hidden_states)
        router_logits = router_logits.reshape(-1, router_logits.shape[-1])
        routing_weights = F.softmax(router_logits, dim=1, dtype=torch.float)
        routing_weights, selected_experts = torch.topk(routing_weights, self.top_k, dim=-1)
        if getattr(self, "norm_topk_prob", self.renormalise):
            routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
        return router_logits, routing_weights.to(hidden_states.dtype), selected_experts

    def shared_output(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        """The shared expert's contribution for ``[B, S, H]`` input, or None for blocks without one."""
        for name in ("shared_expert", "shared_experts", "shared_mlp"):
            shared = getattr(self, name, None)
            if shared is not None:
                break
        else:
            return None
        out = shared(hidden_states)
        gate = getattr(self, "shared_expert_gate", None)
        if gate is not None:
            out = F.sigmoid(gate(hidden_states)) * out
        return out


class NoRenormalisationMechanism(InlineTopKMechanism):
    """Jamba: the top-k softmax weights are used as they are."""

    _is_mechanism = True
    renormalise = False


class BareOutputMechanism(InlineTopKMechanism):
    """HunYuan-MoE-V1: always renormalised, returns the output without router logits."""

    _is_mechanism = True
    returns_router_logits = False


class JitteredInputMechanism(InlineTopKMechanism):
    """Mixtral, MiniMax: multiplicative input jitter while training (``jitter_noise``)."""

    _is_mechanism = True
    input_jitter_attribute = "jitter_noise"


class SparseMixerMechanism(InlineTopKMechanism):
    """Phi-MoE: top-2 by transformers' own ``sparsemixer`` (masked softmax; Gumbel sampling while training); the
    weights stay in the logits' dtype."""

    _is_mechanism = True
    input_jitter_attribute = "input_jitter_noise"

    def route(self, hidden_states):
        from transformers.models.phimoe.modeling_phimoe import sparsemixer

        router_logits = self.gate(hidden_states.view(-1, hidden_states.shape[-1]))
        weights, selected = sparsemixer(router_logits, jitter_eps=self.router_jitter_noise, training=self.training)
        return router_logits, weights, selected


class ErnieTopKMechanism(InlineTopKMechanism):
    """Ernie-4.5-MoE: the router runs in float32 with autocast off; top-k on softmax + ``moe_statics`` bias; the
    unbiased probabilities are divided by their sum clamped to ``norm_min``."""

    _is_mechanism = True

    def route(self, hidden_states):
        flat = hidden_states.view(-1, hidden_states.shape[-1])
        device_type = flat.device.type if flat.device.type != "mps" else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            router_logits = self.gate(flat.float())
            probs = F.softmax(router_logits, dim=1, dtype=torch.float)
            _, selected = torch.topk(self.moe_statics(probs), self.top_k, dim=-1)
            weights = torch.gather(probs, dim=-1, index=selected)
            weights = weights / torch.clamp(weights.sum(dim=-1, keepdim=True), min=self.norm_min)
        return router_logits, weights.to(flat.dtype), selected


class TransposedFusedTopKMechanism(InlineTopKMechanism):
    """Qwen3-VL-MoE's 4.57 text block: routes like the family (always renormalised) but holds undecorated fused
    experts stored transposed (``gate_up_proj [E, H, 2I]``, ``down_proj [E, I, H]``) and called with dense
    ``[T, E]`` weights. They are unpacked into per-expert Linear views; in eval the original runs every expert
    on every token and sums the weighted outputs, which the routed sum equals up to rounding."""

    _is_mechanism = True

    def __init__(self, original, config=None, calibrate_all_experts: bool = True):
        super().__init__(original, config, calibrate_all_experts)
        self.experts = LinearExperts(original.experts, calibrate_all_experts, {"is_transposed": True})


class AriaTopKMechanism(InlineTopKMechanism):
    """Aria's 4.57 text block: top-k on the raw logits, softmax over the k kept (in the logits' dtype); shared
    experts added; bare output. Its experts are two grouped GEMMs, ``fc1.weight [E, H, 2I]`` (``silu`` of the
    first half times the second) and ``fc2.weight [E, I, H]``, fed the tokens sorted by expert; they are unpacked
    into per-expert Linear views."""

    _is_mechanism = True
    returns_router_logits = False

    def __init__(self, original, config=None, calibrate_all_experts: bool = True):
        super().__init__(original, config, calibrate_all_experts)
        self.experts = nn.ModuleList(
            ExpertMLP(
                linear_view(fc1[: fc1.shape[0] // 2], None),
                linear_view(fc1[fc1.shape[0] // 2 :], None),
                linear_view(fc2, None),
                apply_gate=_silu_first_half,
                act_fn=F.silu,
            )
            # Per expert [out, in] views of the [E, in, out] grouped weights.
            for fc1, fc2 in zip(original.experts.fc1.weight.detach().mT, original.experts.fc2.weight.detach().mT)
        )

    def route(self, hidden_states):
        router_logits = self.router(hidden_states.view(-1, hidden_states.shape[-1]))
        top_logits, selected = torch.topk(router_logits, k=self.config.moe_topk, dim=1)
        return router_logits, F.softmax(top_logits, dim=-1), selected


def _silu_first_half(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up
