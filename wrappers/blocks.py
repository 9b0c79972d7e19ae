"""Generic calibration wrappers: the block's own forward, with only the expert dispatch replaced.

One wrapper class, ``CalibrationMoEBlock``, is registered for every block the generic mechanisms serve. Built
for a block, it returns an instance of a class made on first use that derives from a *mechanism* and from the
original block's class, so the block's own ``forward`` (routing, shared experts, return structure) runs
unchanged on it, whatever transformers version is installed. The wrapper adopts the original's children,
parameters, buffers and attributes (the same objects, nothing copied) and replaces only what sends tokens to
experts. The mechanism is chosen from the block's structure, because one class name can have different
layouts in different transformers versions (``Qwen3MoeSparseMoeBlock`` holds a ModuleList in 4.57 and fused
3-D experts in 5.x):

- ``FusedExpertsMechanism`` (transformers v5): ``experts`` becomes ``LinearExperts``, per-expert Linear views
  of the fused 3-D weights with an all-tokens mode;
- ``MoeMethodMechanism`` (4.x DeepSeek-style blocks): the block's ``moe(hidden, idx, weights)`` method, which
  loops over a ``ModuleList`` of experts, is overridden;
- a hand-written forward registered in ``CalibrationMoEBlock.legacy_forwards`` for 4.x blocks that route and
  loop inline (``legacy_inline_topk.py``).

The original block is never modified, so ``restore`` returns it. Subclasses of ``CalibrationMoEBlock`` (or of a
mechanism) are specialised the same way, so a variant wrapper only overrides what it changes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from reference import MoECalibrationModule

from .experts import LinearExperts, dispatch_to_experts, is_fused_experts

__all__ = ["CalibrationMoEBlock", "FusedExpertsMechanism", "MoeMethodMechanism", "register_generic"]

# nn.Module bookkeeping that a wrapper must own fresh rather than share with the original.
_OWN_STATE = {
    "_parameters", "_buffers", "_modules", "_non_persistent_buffers_set",
    "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks",
    "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks", "_is_full_backward_hook",
    "training",
}

_specialised: dict[tuple[type, ...], type] = {}


class CalibrationMoEBlock(MoECalibrationModule):
    """The reference wrapper for every block served by a generic mechanism."""

    is_permanent = False
    # Original block class name -> hand-written mechanism for layouts the generic ones cannot serve.
    legacy_forwards: ClassVar[dict[str, type[CalibrationMoEBlock]]] = {}
    _is_mechanism: ClassVar[bool] = False

    def __new__(cls, *args: Any, original: nn.Module | None = None, **kwargs: Any):
        if original is None and args:
            original = args[0]
        if original is None or issubclass(cls, type(original)):  # unpickling/deepcopy, or already specialised
            return super().__new__(cls)
        bases: tuple[type, ...] = (cls,)
        if not cls._is_mechanism:
            mechanism = choose_mechanism(original)
            bases = (mechanism,) if issubclass(mechanism, cls) else (cls, mechanism)
        return super().__new__(_specialise(bases + (type(original),)))

    def __init__(self, original: nn.Module, config: Any = None, calibrate_all_experts: bool = True):
        nn.Module.__init__(self)  # not the block's __init__: that would build fresh weights
        for name, value in vars(original).items():
            if name not in _OWN_STATE:
                self.__dict__[name] = value
        self._parameters.update(original._parameters)
        self._buffers.update(original._buffers)
        self._non_persistent_buffers_set.update(original._non_persistent_buffers_set)
        self._modules.update(original._modules)
        self.training = original.training
        self.calibrate_all_experts = calibrate_all_experts
        self.calibration_config = config

    def restore(self, original: nn.Module) -> nn.Module:
        return original

    def extra_repr(self) -> str:
        return f"calibrate_all_experts={self.calibrate_all_experts}"


def _specialise(bases: tuple[type, ...]) -> type:
    if bases not in _specialised:
        name = f"Calibration{bases[-1].__name__}"
        _specialised[bases] = type(name, bases, {"__module__": bases[0].__module__})
    return _specialised[bases]


def choose_mechanism(original: nn.Module) -> type[CalibrationMoEBlock]:
    """The mechanism that serves ``original``'s layout in the installed transformers."""
    experts = getattr(original, "experts", None)
    if experts is not None and is_fused_experts(experts):
        return FusedExpertsMechanism
    legacy = CalibrationMoEBlock.legacy_forwards.get(type(original).__name__)
    if legacy is not None:
        return legacy
    if isinstance(experts, nn.ModuleList) and callable(getattr(type(original), "moe", None)):
        return MoeMethodMechanism
    raise TypeError(
        f"no calibration mechanism fits {type(original).__name__} in this transformers version "
        f"(its experts are {type(experts).__name__}); it needs a hand-written wrapper in wrappers/"
    )


class FusedExpertsMechanism(CalibrationMoEBlock):
    """v5 blocks that call fused experts as ``experts(hidden[T, H], top_k_index, top_k_weights)``."""

    _is_mechanism = True

    def __init__(self, original: nn.Module, config: Any = None, calibrate_all_experts: bool = True):
        super().__init__(original, config, calibrate_all_experts)
        self.experts = LinearExperts(original.experts, calibrate_all_experts)


class MoeMethodMechanism(CalibrationMoEBlock):
    """4.x blocks whose forward routes, then calls ``self.moe(hidden[T, H], topk_indices, topk_weights)`` to
    loop over a ``ModuleList`` of experts; only that method is replaced. Like the original, it sums in the
    routing weights' dtype (float32) and casts back at the end."""

    _is_mechanism = True

    def moe(self, hidden_states: torch.Tensor, topk_indices: torch.Tensor, topk_weights: torch.Tensor):
        out = dispatch_to_experts(
            self.experts, hidden_states, topk_indices, topk_weights, self.calibrate_all_experts,
            accumulate_dtype=topk_weights.dtype,
        )
        return out.type(hidden_states.dtype)


def register_generic(*block_class_names: str) -> None:
    """Make ``CalibrationMoEBlock`` the wrapper of these original block classes."""
    for name in block_class_names:
        MoECalibrationModule.register_value(CalibrationMoEBlock, name)
