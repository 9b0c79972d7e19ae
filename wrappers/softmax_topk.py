"""Hand-written forward for transformers 4.x blocks that route and loop over experts inline (Mixtral style).

In 4.57 these blocks compute routing inside ``forward`` and loop over a ``ModuleList`` of experts there, with
no method to override, so the routing is written out here: a Linear ``gate`` gives logits; softmax in float32;
top-k; renormalise when ``norm_topk_prob`` (Mixtral has no such flag and always does); cast the weights to the
hidden dtype; return ``(out[B, S, H], router_logits[T, E])``. In transformers 5.x the same class names hold
fused experts and are served by ``FusedExpertsMechanism`` instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .blocks import CalibrationMoEBlock
from .experts import dispatch_to_experts


class SoftmaxTopKMechanism(CalibrationMoEBlock):
    _is_mechanism = True

    def forward(self, hidden_states: torch.Tensor):
        batch, seq, hidden = hidden_states.shape
        hidden_states = hidden_states.view(-1, hidden)
        router_logits = self.gate(hidden_states)
        routing_weights = F.softmax(router_logits, dim=1, dtype=torch.float)
        routing_weights, selected_experts = torch.topk(routing_weights, self.top_k, dim=-1)
        if getattr(self, "norm_topk_prob", True):
            routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
        routing_weights = routing_weights.to(hidden_states.dtype)
        out = dispatch_to_experts(
            self.experts, hidden_states, selected_experts, routing_weights, self.calibrate_all_experts
        )
        return out.reshape(batch, seq, hidden), router_logits


# 4.57 class names whose ModuleList layout this forward serves.
for _name in ("Qwen3MoeSparseMoeBlock",):
    CalibrationMoEBlock.legacy_forwards[_name] = SoftmaxTopKMechanism
