"""Checks of a wrapper's structure: that one exists for the block class, and that its experts are ``nn.Linear``
modules holding bit-exact slices of the original's expert weights (compared against ``oracle``)."""

from __future__ import annotations

import torch
from torch import nn

from .cases import ArchCase
from .impl import Implementation
from .instruments import expert_modules
from .oracle import expert_layout
from .setting import Setting, build_block
from .verdicts import fail, wrap

__all__ = ["check_covered", "check_experts_are_linear"]


def check_covered(case: ArchCase, impl: Implementation, setting: Setting) -> None:
    """A lookup in the implementation's wrappers by the block class name."""
    if impl.wrapper_for(case.block) is None:
        raise setting.fail(
            f"uncovered: calibration would be silently skipped ({impl.name} has no wrapper registered for {case.block})"
        )


def _count_linears(module: nn.Module, skip: nn.Module | None = None) -> int:
    excluded = set(map(id, skip.modules())) if skip is not None else set()
    return sum(isinstance(m, nn.Linear) and id(m) not in excluded for m in module.modules())


def _check_linear_shapes(e: int, linears: dict[str, nn.Linear], label: str) -> None:
    for name, linear in linears.items():
        if tuple(linear.weight.shape) != (linear.out_features, linear.in_features):
            raise fail(
                label, f"expert {e} {name}: weight shape {tuple(linear.weight.shape)} but in_features="
                f"{linear.in_features}, out_features={linear.out_features}"
            )
        if linear.bias is not None and tuple(linear.bias.shape) != (linear.out_features,):
            raise fail(label, f"expert {e} {name}: bias shape {tuple(linear.bias.shape)}, out_features={linear.out_features}")


def check_experts_are_linear(case: ArchCase, impl: Implementation, setting: Setting) -> None:
    """The wrapper built in the setting's mode, each expert's Linears counted and their shapes checked, each
    parameter compared bit for bit with the oracle's slice of the original, and the Linears of the whole
    wrapper counted."""
    run = build_block(case, setting, None, purpose="linear")
    label = run.label
    wrapper = wrap(impl, run.block, run.config, setting.calibrate_all_experts, label)
    layout = expert_layout(case, run.block)
    for e, expert in enumerate(expert_modules(wrapper, case, label)):
        linears = {n: m for n, m in expert.named_modules() if isinstance(m, nn.Linear)}
        if len(linears) != case.projections:
            raise fail(label, f"expert {e} has {len(linears)} nn.Linear ({sorted(linears)}), expected {case.projections}")
        _check_linear_shapes(e, linears, label)
        want = layout.weights(e)
        got = {n: p.detach() for n, p in expert.named_parameters()}
        if set(got) != set(want):
            raise fail(label, f"expert {e} parameters are {sorted(got)}, expected {sorted(want)}")
        for name, tensor in want.items():
            g = got[name]
            if g.shape != tensor.shape or g.dtype != tensor.dtype or not torch.equal(g, tensor):
                detail = "shape/dtype" if g.shape != tensor.shape or g.dtype != tensor.dtype else "values"
                raise fail(label, f"expert {e} {name} is not a bit-exact slice of the original expert weights ({detail} differ)")
    expected_total = case.experts * case.projections + _count_linears(run.block, skip=getattr(run.block, "experts", None))
    total = _count_linears(wrapper)
    if total != expected_total:
        raise fail(
            label, f"the wrapper holds {total} nn.Linear, expected {expected_total} "
            f"({case.experts} experts x {case.projections} projections + the block's other Linears)"
        )
