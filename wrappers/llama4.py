"""Llama 4: dense expert compute on inputs pre-scaled by the routing score.

``Llama4TextMoe`` (the same in 4.57 and 5.x) takes the top-k of the router logits, scores them with a
sigmoid (zero elsewhere), multiplies every token by its score for every expert (the *input* is scaled, not the
output) and runs ``experts`` once on those ``[E*T, H]`` rows; the shared expert's output plus the sum over
experts is returned as ``(out[T, H], router_logits[T, E])``. The experts are fused ``[E, H, 2I]``/``[E, I, H]``
(transposed, gate and up concatenated), undecorated.

The wrapper runs each expert as its own Linears on the rows it is routed, scaled exactly as the original
scales them, so the output equals the original's: a non-routed expert receives a zero row in the original and
contributes exactly zero (``down(act(0) * 0)``), which the wrapper skips.

Calibrating all experts, an expert also sees the tokens not routed to it. Scaled by zero, as the original
feeds them, they would calibrate nothing; unscaled, their range would not be the one the expert meets in use.
Each is scaled by ``sigmoid(logit)`` of that expert, the score it would have had if routed there: the input
the expert would receive for that token. For routed tokens this is bitwise the original's scaled row.
"""

from __future__ import annotations

import torch

from .blocks import CalibrationMoEBlock
from .experts import LinearExperts

LLAMA4_LAYOUT = {"is_transposed": True, "is_concatenated": True, "has_bias": False}


class Llama4Mechanism(CalibrationMoEBlock):
    """Every version: the experts are fused but undecorated and called as experts(hidden[E*T, H]), not the
    generic contract (``is_fused_experts``)."""

    _is_mechanism = True

    def __init__(self, original, config=None, calibrate_all_experts: bool = True):
        super().__init__(original, config, calibrate_all_experts)
        self.experts = LinearExperts(original.experts, calibrate_all_experts, LLAMA4_LAYOUT)

    def forward(self, hidden_states: torch.Tensor):
        hidden_states = hidden_states.reshape(-1, self.hidden_dim)
        router_scores, router_logits = self.router(hidden_states)
        # The router's own score arithmetic, for every expert: equal to router_scores where routed.
        if_routed = torch.sigmoid(router_logits.float()).to(router_scores.dtype)
        routed_out = hidden_states.new_zeros(len(self.experts), *hidden_states.shape)
        for e, expert in enumerate(self.experts):
            token_idx = torch.nonzero(router_scores[:, e]).flatten()
            if self.calibrate_all_experts:
                routed_out[e, token_idx] = expert(hidden_states * if_routed[:, e, None])[token_idx]
            elif token_idx.numel():
                routed_out[e, token_idx] = expert(hidden_states[token_idx] * router_scores[token_idx, e, None])
        out = self.shared_expert(hidden_states)
        out.add_(routed_out.sum(dim=0))  # the original's reduction over experts
        return out, router_logits
