"""Generic calibration wrappers: the block's own forward, with only the expert dispatch replaced.

One wrapper class, ``CalibrationMoEBlock``, is registered for every block ``table.py`` lists. Built
for a block, it returns an instance of a class made on first use that derives from a *mechanism* and from the
original block's class, so the block's own ``forward`` (routing, shared experts, return structure) runs
unchanged on it, whatever transformers version is installed. The wrapper adopts the original's children,
parameters, buffers and attributes (the same objects, nothing copied) and replaces only what sends tokens to
experts. The mechanism is chosen from the block's structure, because one class name can have different
layouts in different transformers versions (``Qwen3MoeSparseMoeBlock`` holds a ModuleList in 4.57 and fused
3-D experts in 5.x):

- ``FusedExpertsMechanism`` (transformers v5): the experts' dispatch becomes ``LinearExperts``, per-expert Linear
  views of the fused 3-D weights with an all-tokens mode (where the experts class wraps transformers' decorated
  dispatch, only that dispatch: ``decorated.py``);
- ``MoeMethodMechanism`` (4.x DeepSeek-style blocks): the block's ``moe(hidden, idx, weights)`` method, which
  loops over a ``ModuleList`` of experts, is overridden;
- a hand-written mechanism, the one ``table.py`` gives the block's class name, for layouts neither serves (4.x
  blocks that route and loop inline, ``inline_topk.py``; DBRX, Llama 4, ParallelExperts, capacity routers, ...).

The original block is never modified, so ``restore`` returns it. Subclasses of ``CalibrationMoEBlock`` (or of a
mechanism) are specialised the same way, so a variant wrapper only overrides what it changes.
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import torch
from torch import nn

from moe_conformance.reference import MoECalibrationModule

from .decorated import decorated_class, decorator_flags, linear_experts
from .experts import FUSED_EXPERTS_PARAMETERS, dispatch_to_experts, is_fused_experts

__all__ = [
    "CalibrationMoEBlock",
    "FusedExpertsMechanism",
    "MoeMethodMechanism",
    "StructureVerdict",
    "choose_mechanism",
    "mechanism_for_class",
    "wrapper_by_structure",
]

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
    """The mechanism that serves ``original``'s layout in the installed transformers (``mechanism_for_class``
    answers the same question from the class alone, before any instance exists)."""
    # imported here: the table imports every mechanism module, and each of those imports this one
    from .table import BLOCK_MECHANISMS

    experts = getattr(original, "experts", None)
    if experts is not None and is_fused_experts(experts):
        return FusedExpertsMechanism
    by_name = BLOCK_MECHANISMS.get(type(original).__name__)
    if by_name is not None:
        return by_name
    if isinstance(experts, nn.ModuleList) and callable(getattr(type(original), "moe", None)):
        return MoeMethodMechanism
    raise TypeError(
        f"no calibration mechanism fits {type(original).__name__} in this transformers version "
        f"(its experts are {type(experts).__name__}); it needs a hand-written wrapper in wrappers/"
    )


class FusedExpertsMechanism(CalibrationMoEBlock):
    """v5 blocks that call fused experts as ``experts(hidden[T, H], top_k_index, top_k_weights)``: the
    experts' dispatch (the decorated one, below whatever the experts class wraps around it) runs per-expert
    Linears."""

    _is_mechanism = True

    def __init__(self, original: nn.Module, config: Any = None, calibrate_all_experts: bool = True):
        super().__init__(original, config, calibrate_all_experts)
        self.experts = linear_experts(original.experts, calibrate_all_experts)


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


# -- coverage decided from the class ------------------------------------------------------------------------
#
# A new transformers release adds blocks before anyone adds them to table.py. Most
# follow a contract a generic mechanism already serves, and that is visible in the class's source: what its
# `__init__` assigns to `self.experts` and how its methods call it. Reading the source (not building an
# instance) needs no config, so the reference can answer for a class the day it appears; `choose_mechanism`
# still decides from the instance when a wrapper is built, and refuses loudly if the two ever disagree.


@dataclass(frozen=True)
class StructureVerdict:
    """What ``mechanism_for_class`` concluded: the mechanism serving the class (None: none does) and why."""

    mechanism: type[CalibrationMoEBlock] | None
    reason: str


def _source_tree(function: Any) -> ast.FunctionDef | None:
    try:
        source = inspect.getsource(inspect.unwrap(function))
    except (OSError, TypeError):
        return None
    node = ast.parse(textwrap.dedent(source)).body[0]
    return node if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None


def _own_classes(cls: type) -> list[type]:
    """``cls`` and its bases up to (not including) ``nn.Module``: the classes whose source shapes the block."""
    return [k for k in cls.__mro__ if k not in nn.Module.__mro__ and issubclass(k, nn.Module)]


def _method_tree(cls: type, name: str) -> tuple[ast.FunctionDef, dict[str, Any]] | None:
    """The AST of the method ``name`` that ``cls`` uses, with the globals of the module defining it."""
    owner = next((k for k in _own_classes(cls) if name in vars(k)), None)
    tree = _source_tree(vars(owner)[name]) if owner is not None else None
    return (tree, vars(sys.modules[owner.__module__])) if tree is not None else None


def _self_assignments(tree: ast.AST, attribute: str) -> list[ast.expr]:
    found = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                if target.attr == attribute and node.value is not None:
                    found.append(node.value)
    return found


def _resolve(expression: ast.expr, namespace: dict[str, Any]) -> Any:
    """The object a dotted name (``Foo``, ``nn.ModuleList``) refers to in ``namespace``, or None."""
    if isinstance(expression, ast.Name):
        return namespace.get(expression.id)
    if isinstance(expression, ast.Attribute):
        owner = _resolve(expression.value, namespace)
        return getattr(owner, expression.attr, None) if owner is not None else None
    return None


def _built_classes(value: ast.expr, namespace: dict[str, Any]) -> list[Any]:
    """The callables whose calls build ``value`` (both branches of a conditional expression)."""
    if isinstance(value, ast.IfExp):
        return _built_classes(value.body, namespace) + _built_classes(value.orelse, namespace)
    if isinstance(value, ast.Call):
        return [_resolve(value.func, namespace)]
    return [None]


def _parameter_dims(experts_cls: type) -> dict[str, int | None]:
    """``self.NAME = nn.Parameter(torch.empty(a, b, c))`` in the experts' ``__init__``: NAME -> 3 (None where
    the shape is not spelled out)."""
    found = _method_tree(experts_cls, "__init__")
    dims: dict[str, int | None] = {}
    for name in ("gate_up_proj", "up_proj", "down_proj"):
        for value in _self_assignments(found[0], name) if found else []:
            if not (isinstance(value, ast.Call) and value.args and isinstance(value.args[0], ast.Call)):
                continue  # not nn.Parameter(torch.<factory>(...)): a Linear, say
            shape = value.args[0].args
            if len(shape) == 1 and isinstance(shape[0], (ast.Tuple, ast.List)):
                shape = shape[0].elts
            dims[name] = None if any(isinstance(d, ast.Starred) for d in shape) else len(shape)
    return dims


def _fused_problem(experts_cls: type) -> str | None:
    """Why ``experts_cls`` is not fused experts ``LinearExperts`` can stand in for, or None if it is. A class
    decorated with ``@use_experts_implementation`` (or subclassing one) is, by construction: the decorator's
    flags say how its 3-D weights are stored. Only an undecorated class's source is read for them."""
    if decorator_flags(experts_cls) is not None:
        return None
    forward = _method_tree(experts_cls, "forward")
    parameters = [a.arg for a in forward[0].args.args[1:]] if forward else []
    if parameters[:3] != FUSED_EXPERTS_PARAMETERS:
        return (
            f"are called as experts({', '.join(parameters)}), not experts(hidden_states, top_k_index, "
            "top_k_weights), and are not decorated with @use_experts_implementation"
        )
    dims = _parameter_dims(experts_cls)
    if dims.get("down_proj") != 3 or 3 not in (dims.get("gate_up_proj"), dims.get("up_proj")):
        held = ", ".join(f"{n} ({d}-D)" if d else n for n, d in dims.items()) or "none of gate_up_proj/up_proj/down_proj"
        return f"hold no fused 3-D gate_up_proj (or up_proj) and down_proj parameters (they hold {held})"
    return None


def _experts_call_arities(block_cls: type) -> list[int]:
    """How many arguments each ``self.experts(...)`` call in the block's methods passes."""
    arities = []
    for owner in _own_classes(block_cls):
        for value in vars(owner).values():
            function = inspect.unwrap(value) if callable(value) else None
            tree = _source_tree(function) if inspect.isfunction(function) else None
            for node in ast.walk(tree) if tree is not None else ():
                func = node.func if isinstance(node, ast.Call) else None
                if isinstance(func, ast.Attribute) and func.attr == "experts" and isinstance(func.value, ast.Name) and func.value.id == "self":
                    arities.append(len(node.args) + len(node.keywords))
    return arities


@lru_cache(maxsize=None)
def mechanism_for_class(block_cls: type) -> StructureVerdict:
    """The generic mechanism that serves every instance of ``block_cls`` in the installed transformers, decided
    from its source as ``choose_mechanism`` decides from an instance:

    - ``FusedExpertsMechanism``: ``__init__`` sets ``self.experts`` to a class decorated with
      ``@use_experts_implementation`` or subclassing one (fused by construction: the decorator's flags say
      how), or to an undecorated class with an ``experts(hidden_states, top_k_index, top_k_weights)`` forward
      whose source holds 3-D ``gate_up_proj``/``up_proj`` and ``down_proj`` parameters; and the block calls it
      with exactly those three arguments;
    - ``MoeMethodMechanism``: ``self.experts`` is an ``nn.ModuleList`` and the class has a ``moe`` method.

    Hand-written mechanisms are not structural: they serve the class names ``table.py`` gives them."""
    if issubclass(block_cls, MoECalibrationModule):
        return StructureVerdict(None, "it is a calibration wrapper, not an original block")
    init = _method_tree(block_cls, "__init__")
    if init is None:
        return StructureVerdict(None, "its __init__ source cannot be read")
    values = _self_assignments(init[0], "experts")
    if not values:
        return StructureVerdict(None, "its __init__ assigns no self.experts (its experts are held another way)")
    built = [c for value in values for c in _built_classes(value, init[1])]
    if any(isinstance(c, type) and issubclass(c, (nn.ModuleList, nn.ModuleDict)) for c in built):
        if callable(getattr(block_cls, "moe", None)) and all(issubclass(c, nn.ModuleList) for c in built):
            return StructureVerdict(
                MoeMethodMechanism, "its experts are an nn.ModuleList its moe(hidden, top_k_index, top_k_weights) method loops over"
            )
        kind = "nn.ModuleDict" if any(issubclass(c, nn.ModuleDict) for c in built) else "nn.ModuleList"
        return StructureVerdict(None, f"its experts are an {kind} its forward loops over inline (no moe(...) method to replace)")
    if not all(isinstance(c, type) and issubclass(c, nn.Module) for c in built):
        shown = "; ".join(ast.unparse(v) for v in values)
        return StructureVerdict(None, f"self.experts is built by `{shown}`, not by a module class of its module")
    for experts_cls in dict.fromkeys(built):
        problem = _fused_problem(experts_cls)
        if problem:
            return StructureVerdict(None, f"its experts ({experts_cls.__name__}) {problem}")
    arities = _experts_call_arities(block_cls)
    if not arities or any(a != 3 for a in arities):
        called = f"with {sorted(set(arities))} argument(s)" if arities else "never, in its own methods"
        return StructureVerdict(None, f"it calls self.experts {called}, not as experts(hidden, top_k_index, top_k_weights)")
    names = ", ".join(c.__name__ for c in dict.fromkeys(built))
    how = "behind @use_experts_implementation" if all(decorated_class(c) for c in built) else "with the v5 experts forward"
    return StructureVerdict(
        FusedExpertsMechanism, f"its experts ({names}) are fused 3-D experts {how}, called as experts(hidden, top_k_index, top_k_weights)"
    )


def wrapper_by_structure(block_cls: type) -> type[CalibrationMoEBlock] | None:
    """The reference registry's class resolver: ``CalibrationMoEBlock`` for a transformers block class that a
    generic mechanism serves by its structure, whether or not its name was registered. Limited to
    ``transformers.models`` classes, the ones the discovery scan and the suite cover: remote-code blocks are
    wrapped only where a name is registered for them."""
    if not getattr(block_cls, "__module__", "").startswith("transformers.models."):
        return None
    return CalibrationMoEBlock if mechanism_for_class(block_cls).mechanism is not None else None
