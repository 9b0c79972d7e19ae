"""DBRX: experts stacked in 2-D tensors ``experts.mlp.w1``/``v1``/``w2``, each ``[E * I, H]``.

Expert ``e``'s gate and up weights are rows ``e*I:(e+1)*I`` of ``w1`` and ``v1`` (``[I, H]``, the nn.Linear
layout); its down projection is ``intermediate @ w2[e]``, so that Linear's weight is the transposed view. The
block's own forward (router, top-k, p-norm renormalisation, return value) runs unchanged; only ``experts`` is
replaced, by per-expert Linears called the way the installed version calls the original:

- 5.x: ``experts(hidden[B, S, H], top_k_index, top_k_weights)``;
- 4.57: ``experts(x[B, S, H], weights, top_weights, top_experts)`` (the full softmax ``weights`` is unused).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from .blocks import CalibrationMoEBlock
from .experts import ExpertMLP, linear_view, dispatch_to_experts


class DbrxLinearExperts(nn.ModuleList):
    def __init__(self, original: nn.Module, calibrate_all_experts: bool):
        mlp = original.mlp
        inter = mlp.ffn_hidden_size
        w1, v1, w2 = (w.detach().view(-1, inter, w.shape[-1]) for w in (mlp.w1, mlp.v1, mlp.w2))
        act_fn = mlp.activation_fn

        def apply_gate(gate_up: torch.Tensor) -> torch.Tensor:  # DbrxExpertGLU: act(x w1^T) * (x v1^T)
            gate, up = gate_up.chunk(2, dim=-1)
            return act_fn(gate) * up

        super().__init__(
            ExpertMLP(linear_view(w1[e], None), linear_view(v1[e], None), linear_view(w2[e].T, None), apply_gate, act_fn)
            for e in range(w1.shape[0])
        )
        self.calibrate_all_experts = calibrate_all_experts
        # 4.57 passes (x, weights, top_weights, top_experts); 5.x (hidden_states, top_k_index, top_k_weights).
        self._legacy_call = "top_experts" in inspect.signature(original.forward).parameters

    def forward(self, hidden_states: torch.Tensor, *routing: torch.Tensor) -> torch.Tensor:
        if self._legacy_call:
            _, top_k_weights, top_k_index = routing
        else:
            top_k_index, top_k_weights = routing
        out = dispatch_to_experts(
            self, hidden_states.reshape(-1, hidden_states.shape[-1]), top_k_index, top_k_weights,
            self.calibrate_all_experts,
        )
        return out.view(hidden_states.shape)


class DbrxMechanism(CalibrationMoEBlock):
    _is_mechanism = True

    def __init__(self, original, config=None, calibrate_all_experts: bool = True):
        super().__init__(original, config, calibrate_all_experts)
        self.experts = DbrxLinearExperts(original.experts, calibrate_all_experts)
