"""Capacity-limited routers with per-expert MLPs in a ``ModuleDict``: Switch Transformers and NLLB-MoE.

Both blocks keep one ``nn.Linear`` MLP per expert (``experts["expert_<i>"]``), so nothing is unpacked: the
wrapper's ``experts`` is a new container holding the *same* expert modules, whose call sends every token through
every expert (calibration) and keeps the rows the original routing keeps. The routers run unchanged, capacity
included: a token an expert has no room for is dropped there (the block outputs zero for it, and the decoder
layer's residual carries it on), and the wrapper drops it the same way, only after the expert has seen it.

How the routing reaches the experts differs per version:

- 5.x: the block's own forward calls ``experts(hidden[T, H], a, b)``. Switch passes its capacity-masked
  one-hot ``[T, 1, E]`` and the top-1 probability ``[T, 1]``; NLLB passes ``top_1_mask [T, E]`` and the combined
  top-2 weights ``[T, E]``, and its experts class one-hot encodes that 0/1 mask *as if it held expert ids*
  (transformers 5.18 to 5.23), so only experts 0 and 1 are ever run: expert 1 on each token's kept top-1
  slot, expert 0 once for every other slot. That is the original's output, so it is reproduced as is, by the
  same reading of ``(mask, weights)`` as ``(top_k_index, top_k_weights)``.
- 4.57: the block routes and loops inline (its ``experts`` is a plain ``ModuleDict``), so the forward is
  written out here, over the same container.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .blocks import CalibrationMoEBlock
from .experts import dispatch_to_experts

__all__ = ["NllbMoeMechanism", "SwitchMechanism"]


class _ExpertDict(nn.ModuleDict):
    """The original's ``expert_<i>`` modules (and any other child, like NLLB's ``token_dropout``), the same
    objects; ``members`` lists the experts in index order."""

    def __init__(self, original: nn.ModuleDict, calibrate_all_experts: bool):
        super().__init__(original.items())
        self.training = original.training  # a fresh module is in training mode; only this flag, not the children's
        self.num_experts = sum(name.startswith("expert_") for name in original.keys())
        self.members = [self[f"expert_{i}"] for i in range(self.num_experts)]
        self.calibrate_all_experts = calibrate_all_experts


class _CapacityMechanism(CalibrationMoEBlock):
    _is_mechanism = True
    experts_class: type[_ExpertDict]

    def __init__(self, original: nn.Module, config: Any = None, calibrate_all_experts: bool = True):
        super().__init__(original, config, calibrate_all_experts)
        # 4.57: a plain ModuleDict with no forward of its own; the block's forward loops over it inline.
        self._inline_dispatch = type(original.experts).forward is nn.Module.forward
        self.experts = self.experts_class(original.experts, calibrate_all_experts)


class SwitchExperts(_ExpertDict):
    """Called like 5.x's ``SwitchTransformersExperts``: ``(hidden[T, H], one_hot[T, 1, E], weights[T, 1])``; a
    token whose one-hot row is all zero (over capacity) goes to no expert."""

    def forward(self, hidden_states, selected_experts, routing_weights):
        kept = selected_experts.any(dim=-1)
        top_k_index = torch.where(kept, selected_experts.argmax(dim=-1), self.num_experts)
        return dispatch_to_experts(self.members, hidden_states, top_k_index, routing_weights, self.calibrate_all_experts)


class SwitchMechanism(_CapacityMechanism):
    """Switch Transformers: top-1 with per-sequence capacity, the expert output scaled by the top-1 probability."""

    _is_mechanism = True
    experts_class = SwitchExperts

    def forward(self, hidden_states: torch.Tensor):
        if not self._inline_dispatch:
            return super().forward(hidden_states)
        # 4.57: expert outputs are written into a zero buffer (dropped tokens stay zero), then scaled by the
        # top-1 probability; weights of one reproduce the buffer exactly.
        router_mask, router_probs, router_logits = self.router(hidden_states)
        expert_index = torch.argmax(router_mask, dim=-1)
        hidden = hidden_states.shape[-1]
        flat = hidden_states.reshape(-1, hidden)
        ones = flat.new_ones(flat.shape[0], 1)
        next_states = self.experts(flat, router_mask.reshape(-1, 1, router_mask.shape[-1]), ones)
        return router_probs * next_states.view(hidden_states.shape), (router_logits, expert_index)


class NllbMoeExperts(_ExpertDict):
    """Called like 5.x's ``NllbMoeExperts``: ``(hidden[T, H], top_k_index[T, k], top_k_weights[T, k])``, each
    weighted expert output then scaled by ``1 - moe_token_dropout`` (eval) or passed through the
    ``token_dropout`` module (training), as the original does before summing."""

    def __init__(self, original: nn.ModuleDict, calibrate_all_experts: bool):
        super().__init__(original, calibrate_all_experts)
        self.moe_token_dropout = getattr(original, "moe_token_dropout", 0.0)

    def forward(self, hidden_states, top_k_index, top_k_weights):
        return dispatch_to_experts(
            self.members, hidden_states, top_k_index, top_k_weights, self.calibrate_all_experts,
            weighted_fn=self._token_dropout if self.moe_token_dropout > 0 else None,
        )

    def _token_dropout(self, rows: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.token_dropout(rows)
        return rows.mul_(1 - self.moe_token_dropout)


class NllbMoeMechanism(_CapacityMechanism):
    """NLLB-MoE: top-2 with capacity (second-expert policy, normalisation before or after dropping, batch
    prioritised routing), combined weights ``[T, E]``."""

    _is_mechanism = True
    experts_class = NllbMoeExperts

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        if not self._inline_dispatch:
            return super().forward(hidden_states, *args, **kwargs)
        return self._inline_forward(hidden_states, *args, **kwargs)

    def _inline_forward(self, hidden_states: torch.Tensor, padding_mask: torch.Tensor | None = False):
        """4.57's forward, its signature and default included (``padding_mask=False`` fails in its router, as the
        original does)."""
        # 4.57: expert idx gets the tokens with a nonzero combined weight for it; its output is scaled by
        # (1 - moe_token_dropout) (eval) or token-dropped (training) *before* the weight, and the weighted rows
        # are summed over experts. At most two terms per token, so the sum in ascending expert order is exact.
        batch, length, hidden = hidden_states.shape
        top_1_mask, router_probs = self.router(hidden_states, padding_mask)
        routed = router_probs.bool()
        num_experts = routed.shape[-1]
        top_k_index = torch.arange(num_experts, device=routed.device).expand_as(routed).where(routed, num_experts)
        experts = self.members_with_token_dropout()
        out = dispatch_to_experts(
            experts, hidden_states.reshape(-1, hidden), top_k_index, router_probs, self.calibrate_all_experts
        )
        return out.reshape(batch, length, hidden), (router_probs, torch.argmax(top_1_mask, dim=-1))

    def members_with_token_dropout(self) -> list:
        """4.57's order: token dropout on each expert's output, before its routing weight."""
        if self.moe_token_dropout <= 0:
            return self.experts.members

        def dropped(expert):
            def run(x: torch.Tensor) -> torch.Tensor:
                out = expert(x)
                return self.token_dropout(out) if self.training else out.mul_(1 - self.moe_token_dropout)

            return run

        return [dropped(expert) for expert in self.experts.members]
