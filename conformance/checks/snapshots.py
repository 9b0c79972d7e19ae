"""Snapshots, so that "left exactly as it was" can be checked: of a model's state (which module objects it holds,
bitwise copies of its parameters and buffers, how many hooks hang on it), of the values of its original tensors
alone (for implementations that replace modules by design), of configs' attributes, and of classes'
attributes."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["ClassState", "ConfigState", "Snapshot", "TensorValues", "classes_of", "hook_count"]


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


@dataclass
class TensorValues:
    """Copies of the values of the original tensor objects a model held: what an implementation that may
    convert in place (replacing modules) must still not have written to."""

    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]]  # state_dict key -> (the tensor itself, a copy)

    @classmethod
    def of(cls, model: nn.Module) -> TensorValues:
        return cls({k: (v, v.detach().clone()) for k, v in model.state_dict(keep_vars=True).items()})

    def difference(self) -> str | None:
        for key, (tensor, before) in self.tensors.items():
            if tensor.shape != before.shape or tensor.dtype != before.dtype or not torch.equal(tensor.detach(), before):
                return f"parameter/buffer '{key}' of the original was written to"
        return None


def _same(a: Any, b: Any) -> bool:
    """Equal as a snapshot compares attribute values: configs by their attributes, containers by content,
    anything else by identity or equality."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if hasattr(a, "__dict__") and type(a).__name__.endswith("Config"):
        return _same(vars(a), vars(b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:  # tensors and other values without a plain truth value
        return False


@dataclass
class ConfigState:
    """Deep copies of the attributes of configs (a model's top-level config and the block's), so that a
    calibration that changes a config every other module built from it reads is seen."""

    configs: list[tuple[str, Any, dict[str, Any]]]  # (what it is, the config object, copies of its attributes)

    @classmethod
    def of(cls, **configs: Any) -> ConfigState:
        seen: set[int] = set()
        kept = []
        for what, config in configs.items():
            if config is not None and id(config) not in seen:
                seen.add(id(config))
                kept.append((what, config, copy.deepcopy(vars(config))))
        return cls(kept)

    def difference(self) -> str | None:
        for what, config, before in self.configs:
            now = vars(config)
            for key in sorted(set(before) | set(now)):
                if key not in now:
                    return f"{what} {type(config).__name__}.{key} was deleted"
                if key not in before:
                    return f"{what} {type(config).__name__}.{key} = {now[key]!r} was added"
                if not _same(now[key], before[key]):
                    return f"{what} {type(config).__name__}.{key} is {now[key]!r}, was {before[key]!r}"
        return None


@dataclass
class ClassState:
    """The attributes of classes (each class's own ``__dict__``): a calibration that patches a block or
    experts class changes every instance in the process, calibrated or not. ``restore`` puts them back, so
    that such a patch cannot leak from one check into the next."""

    classes: dict[type, dict[str, Any]]

    @classmethod
    def of(cls, classes: Iterable[type]) -> ClassState:
        return cls({c: {k: _kept(v) for k, v in vars(c).items()} for c in classes if c is not object})

    def difference(self) -> str | None:
        for klass, before in self.classes.items():
            now = vars(klass)
            for key in sorted(set(before) | set(now)):
                if key in _BOOKKEEPING:
                    continue
                if key not in now or key not in before or not _same(_kept(now[key]), before[key]):
                    change = "added" if key not in before else "deleted" if key not in now else "replaced"
                    return f"class attribute {klass.__module__}.{klass.__qualname__}.{key} was {change}"
        return None

    def restore(self) -> None:
        for klass, before in self.classes.items():
            for key in set(vars(klass)) - set(before) - _BOOKKEEPING:
                delattr(klass, key)
            for key, value in before.items():
                if key not in _BOOKKEEPING and vars(klass).get(key, _MISSING) is not value:
                    setattr(klass, key, value)


_MISSING = object()
# What Python and abc keep in a class's __dict__ as a matter of course (subclass caches, weak references).
_BOOKKEEPING = frozenset({"__dict__", "__weakref__", "_abc_impl", "__abstractmethods__", "__parameters__"})


def _kept(value: Any) -> Any:
    """Mutable containers are copied (a class-level dict changed in place is a change); the rest is kept as
    the object itself, compared by identity or equality."""
    return copy.copy(value) if isinstance(value, (dict, list, set)) else value


def classes_of(module: nn.Module) -> list[type]:
    """Every class in the MRO of every module class under ``module`` (nn.Module and torch's own included: a
    patched ``nn.Linear.forward`` is a patch too)."""
    found: dict[type, None] = {}
    for m in module.modules():
        for klass in type(m).__mro__:
            found.setdefault(klass, None)
    return list(found)
