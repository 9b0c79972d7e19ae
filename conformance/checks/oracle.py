"""The expected-weights oracle: each expert's weights as per-expert ``nn.Linear`` tensors (``[out, in]``), sliced
here from the *original* block, independently of any unpacking code under test.

One adapter per storage layout; ``expert_layout`` picks it once per block, from the block itself and the
fixture's hints:

- ``StackedLayout``: per-expert weights stacked in 2-D tensors of the experts module (DBRX, ``expert_weights``);
- ``ParallelLayout``: two ``ParallelExperts`` modules of the block (4.57 granite, jetmoe, ``parallel_experts``);
- ``FusedLayout``: 3-D fused tensors (transformers 5.x ``@use_experts_implementation``, 4.x gpt-oss / llama4);
- ``ModuleListLayout``: experts already separate modules (4.x ``ModuleList`` / ``ModuleDict``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from ..cases.arch import ArchCase

__all__ = ["ExpertLayout", "expert_layout", "is_fused", "parallel_experts"]

Weights = dict[str, torch.Tensor]  # parameter name below the per-expert module -> tensor


class ExpertLayout(Protocol):
    def weights(self, e: int) -> Weights:
        """Expert ``e``'s parameters as a per-expert module of Linears would hold them."""


def is_fused(experts: nn.Module | None) -> bool:
    down = getattr(experts, "down_proj", None)
    return isinstance(down, torch.Tensor) and down.dim() == 3


def parallel_experts(case: ArchCase, block: nn.Module) -> dict[str, nn.Module] | None:
    """The block's ``ParallelExperts`` modules by role (``gate_up``, ``down``), where the fixture names them and
    the block holds them."""
    try:  # dotted paths: aria's 4.57 grouped GEMMs live at experts.fc1 / experts.fc2
        modules = {role: block.get_submodule(name) for role, name in case.parallel_experts.items()}
    except AttributeError:
        return None  # this version keeps its experts another way (5.x: fused)
    return modules or None


@dataclass
class StackedLayout:
    """``[E * rows, cols]`` tensors of the experts module, one per projection, viewed ``[E, rows, cols]``;
    the ``transposed`` ones store each expert ``[in, out]``."""

    stacked: dict[str, torch.Tensor]  # projection -> the stacked tensor
    experts: int
    transposed: tuple[str, ...]

    def weights(self, e: int) -> Weights:
        out = {}
        for projection, tensor in self.stacked.items():
            weight = tensor.view(self.experts, -1, tensor.shape[-1])[e]
            out[f"{projection}.weight"] = weight.T if projection in self.transposed else weight
        return out


@dataclass
class ParallelLayout:
    """``gate_up`` ``[E, 2I, H]`` (gate rows, then up rows) and ``down`` ``[E, H, I]``, or both stored
    ``[in, out]`` per expert where ``transposed``."""

    gate_up: torch.Tensor
    down: torch.Tensor
    transposed: bool

    def weights(self, e: int) -> Weights:
        first, down = self.gate_up[e], self.down[e]
        if self.transposed:
            first, down = first.T, down.T
        inter = first.shape[0] // 2
        return {"gate_proj.weight": first[:inter], "up_proj.weight": first[inter:], "down_proj.weight": down}


class FusedLayout:
    """3-D fused tensors. The layout flags come from the experts module (``@use_experts_implementation``), else
    from the fixture's ``expert_layout``, else transformers' defaults; they are read once, here."""

    def __init__(self, experts: nn.Module, hints: dict[str, bool]):
        def flag(name: str, default: bool) -> bool:
            return getattr(experts, name, hints.get(name, default))

        self.experts = experts
        self.transposed = flag("is_transposed", False)
        self.has_bias = flag("has_bias", False)
        self.post_norm = flag("has_post_expert_norm", False)
        if flag("has_gate", True):
            self.first = "gate_up_proj"
            inter_rows = {"gate_proj": slice(0, None, 2), "up_proj": slice(1, None, 2)}  # interleaved: g0, u0, g1, ...
            self.parts = None if flag("is_concatenated", True) else inter_rows  # None: the first half, then the second
        else:
            self.first, self.parts = "up_proj", {"up_proj": slice(None)}

    def _orient(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.transpose(-1, -2) if self.transposed else weight

    def _bias(self, name: str, e: int) -> torch.Tensor | None:
        bias = getattr(self.experts, f"{name}_bias", None) if self.has_bias else None
        return None if bias is None else bias[e].detach()

    def weights(self, e: int) -> Weights:
        first = self._orient(getattr(self.experts, self.first)[e]).detach()
        first_bias = self._bias(self.first, e)
        parts = self.parts
        if parts is None:  # concatenated gate | up
            inter = first.shape[0] // 2
            parts = {"gate_proj": slice(0, inter), "up_proj": slice(inter, None)}
        out: Weights = {}
        for name, rows in parts.items():
            out[f"{name}.weight"] = first[rows]
            if first_bias is not None:
                out[f"{name}.bias"] = first_bias[rows]
        out["down_proj.weight"] = self._orient(self.experts.down_proj[e]).detach()
        down_bias = self._bias("down_proj", e)
        if down_bias is not None:
            out["down_proj.bias"] = down_bias
        if self.post_norm:  # one norm on every expert's output: each expert holds that same norm
            out.update({f"post_expert_norm.{k}": v.detach() for k, v in self.experts.post_expert_norm.named_parameters()})
        return out


@dataclass
class ModuleListLayout:
    """Experts that are modules already: their own parameters are the expected ones."""

    members: list[nn.Module]

    def weights(self, e: int) -> Weights:
        return {k: v.detach() for k, v in self.members[e].named_parameters()}


def expert_layout(case: ArchCase, block: nn.Module) -> ExpertLayout:
    """The adapter for the original ``block``'s expert storage."""
    experts = getattr(block, "experts", None)
    if case.expert_weights:
        stacked = {p: experts.get_parameter(path).detach() for p, path in case.expert_weights.items()}
        return StackedLayout(stacked, case.experts, case.expert_weights_transposed)
    parallel = parallel_experts(case, block)
    if parallel is not None:
        transposed = case.expert_layout.get("is_transposed", False)
        return ParallelLayout(parallel["gate_up"].weight.detach(), parallel["down"].weight.detach(), transposed)
    if is_fused(experts):
        return FusedLayout(experts, case.expert_layout)
    members = list(experts.values()) if isinstance(experts, nn.ModuleDict) else list(experts)
    return ModuleListLayout(members)
