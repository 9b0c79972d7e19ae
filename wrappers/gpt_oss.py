"""gpt-oss and OpenAI Privacy Filter: transposed fused experts with interleaved (gpt-oss) or concatenated
(privacy filter) gate/up rows, biases and a clamped SwiGLU.

In transformers 5.x both experts classes are decorated (``is_transposed``, ``is_concatenated``, ``has_bias``)
and called as ``experts(hidden[T, H], top_k_index, top_k_weights)``, so the generic ``FusedExpertsMechanism``
serves them: ``LinearExperts`` feeds each expert's projection, re-assembled in the stored layout, to the
class's own ``_apply_gate``.

In 4.57 ``GptOssExperts`` is the same layout without the decorator: its router returns dense scores
``[T, E]`` (zero off the top-k) with the top-k index, the experts take ``router_indices=``/``routing_weights=``
keywords and the gate is written inline. ``GptOssDenseRoutingMechanism`` writes that forward out.
"""

from __future__ import annotations

import torch

from .blocks import CalibrationMoEBlock
from .experts import LinearExperts

# 4.57's GptOssExperts: the 5.x decorator's flags, and the gate its forward computes inline.
GPT_OSS_LAYOUT = {"is_transposed": True, "is_concatenated": False, "has_bias": True}


def gpt_oss_gate(experts, gate_up: torch.Tensor) -> torch.Tensor:
    """Clamped SwiGLU on interleaved ``[g0, u0, g1, u1, ...]``: ``(clamp(up) + 1) * gate * sigmoid(alpha * gate)``."""
    gate, up = gate_up[..., ::2], gate_up[..., 1::2]
    gate = gate.clamp(min=None, max=experts.limit)
    up = up.clamp(min=-experts.limit, max=experts.limit)
    return (up + 1) * gate * torch.sigmoid(gate * experts.alpha)


class GptOssDenseRoutingMechanism(CalibrationMoEBlock):
    """4.57 ``GptOssMLP``: returns ``(out[B, S, H], router_scores[T, E])``."""

    _is_mechanism = True

    def __init__(self, original, config=None, calibrate_all_experts: bool = True):
        super().__init__(original, config, calibrate_all_experts)
        self.experts = LinearExperts(original.experts, calibrate_all_experts, GPT_OSS_LAYOUT, gpt_oss_gate)

    def forward(self, hidden_states: torch.Tensor):
        batch, _, hidden = hidden_states.shape
        router_scores, router_indices = self.router(hidden_states)
        # The dense scores hold the top-k softmax at the selected experts: gathered, they are the top-k weights.
        top_k_weights = router_scores.gather(1, router_indices)
        out = self.experts(hidden_states.reshape(-1, hidden), router_indices, top_k_weights)
        return out.view(batch, -1, hidden), router_scores
