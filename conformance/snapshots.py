"""Snapshots of a model's state: which module objects it holds, bitwise copies of its parameters and buffers, and
how many hooks hang on it, so that "left exactly as it was" can be checked."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Snapshot", "hook_count"]


def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(getattr(m, "_backward_pre_hooks", {}))
        for m in model.modules()
    )


@dataclass
class Snapshot:
    modules: dict[str, nn.Module]  # name -> the module object itself
    state: dict[str, torch.Tensor]  # state_dict key -> a copy
    hooks: int

    @classmethod
    def of(cls, model: nn.Module) -> Snapshot:
        state = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
        return cls(dict(model.named_modules()), state, hook_count(model))

    def difference(self, model: nn.Module) -> str | None:
        """The first way ``model`` is no longer what was snapshotted, or None."""
        modules = dict(model.named_modules())
        for name, before in self.modules.items():
            now = modules.get(name)
            if now is not before:
                what = "missing" if now is None else f"a different object ({type(now).__name__})"
                return f"module '{name or '<root>'}' ({type(before).__name__}) is {what}"
        extra = sorted(set(modules) - set(self.modules))
        if extra:
            return f"modules appeared that were not there before: {extra[:5]}"
        state = model.state_dict(keep_vars=True)
        for key, before in self.state.items():
            now = state.get(key)
            if now is None or now.shape != before.shape or now.dtype != before.dtype or not torch.equal(now.detach(), before):
                return f"parameter/buffer '{key}' is not bitwise what it was"
        hooks = hook_count(model)
        if hooks != self.hooks:
            return f"{hooks - self.hooks} hook(s) left behind on the model"
        return None
