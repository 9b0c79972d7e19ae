"""Blocks whose experts are two ``ParallelExperts`` modules: 4.57's granite family and jetmoe (all versions).

The block holds ``input_linear`` (weights ``[E, 2I, H]``, gate rows then up rows) and ``output_linear``
(``[E, H, I]``), and a router (``TopKGating``) that returns the routing already grouped by expert:
``(index_sorted_experts, batch_index, batch_gates, expert_size, router_logits)``. The block's forward sends
the rows sorted by expert through both, so no expert call can be replaced on its own; this forward is written
out instead, over one ``ExpertMLP`` per expert whose Linears are views of those weights.

The grouped routing is turned back into per-token ``top_k_index``/``top_k_weights``: entry ``j`` of the
flattened ``[T * k]`` top-k goes to expert ``expert_of_sorted[j]`` at position ``index_sorted_experts[j]``.
``dispatch_to_experts`` then adds contributions in ascending expert order, as the original's single
``index_add`` over the expert-sorted rows does.

Return value: before transformers 5 these blocks return ``(out[B, S, H], router_logits)``; jetmoe's 5.x block
returns the tensor alone. JetMoe adds its output ``bias``.
"""

from __future__ import annotations

import torch
import transformers
from packaging.version import Version
from torch import nn

from .blocks import CalibrationMoEBlock
from .experts import ExpertMLP, linear_view, dispatch_to_experts

_RETURNS_ROUTER_LOGITS = Version(transformers.__version__).major < 5


def unpack_parallel_experts(first: nn.Module, down: nn.Module, act_fn) -> nn.ModuleList:
    """One ``ExpertMLP`` per expert: ``gate_proj``/``up_proj`` views of ``first.weight[e]``'s halves and a
    ``down_proj`` view of ``down.weight[e]``."""

    def apply_gate(gate_up: torch.Tensor) -> torch.Tensor:  # the block's act(chunk[0]) * chunk[1]
        gate, up = gate_up.chunk(2, dim=-1)
        return act_fn(gate) * up

    experts = []
    for e in range(first.weight.shape[0]):
        w_first = first.weight[e].detach()
        inter = w_first.shape[0] // 2
        experts.append(
            ExpertMLP(
                linear_view(w_first[:inter], None),
                linear_view(w_first[inter:], None),
                linear_view(down.weight[e].detach(), None),
                apply_gate=apply_gate,
                act_fn=act_fn,
            )
        )
    return nn.ModuleList(experts)


class ParallelExpertsMechanism(CalibrationMoEBlock):
    _is_mechanism = True

    def __init__(self, original, config=None, calibrate_all_experts: bool = True):
        super().__init__(original, config, calibrate_all_experts)
        # The per-expert views replace the two grouped modules (no second copy of the weights).
        del self.input_linear, self.output_linear
        self.experts = unpack_parallel_experts(original.input_linear, original.output_linear, original.activation)

    def forward(self, layer_input: torch.Tensor):
        batch, length, hidden = layer_input.size()
        layer_input = layer_input.reshape(-1, hidden)
        index_sorted, _, batch_gates, expert_size, router_logits = self.router(layer_input)
        expert_of_sorted = torch.repeat_interleave(
            torch.arange(len(self.experts), device=layer_input.device),
            torch.as_tensor(expert_size, device=layer_input.device),
        )
        top_k_index = torch.empty_like(index_sorted).index_put_((index_sorted,), expert_of_sorted)
        top_k_weights = torch.empty_like(batch_gates).index_put_((index_sorted,), batch_gates)
        out = dispatch_to_experts(
            self.experts, layer_input, top_k_index.view(-1, self.router.top_k),
            top_k_weights.view(-1, self.router.top_k), self.calibrate_all_experts,
        )
        out = out.view(batch, length, hidden)
        if isinstance(getattr(self, "bias", None), torch.Tensor):  # jetmoe
            out = out + self.bias
        return (out, router_logits) if _RETURNS_ROUTER_LOGITS else out
