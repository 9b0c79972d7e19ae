"""Checks of a wrapper's (or converted block's) structure: that the implementation covers the block class, and that
its experts are ``nn.Linear`` modules holding bit-exact slices of the original's expert weights (compared against
``oracle``, read from the original before it is wrapped or converted)."""

from __future__ import annotations

import weakref

import torch
from torch import nn

from ..cases.arch import ArchCase
from ..cases.setting import Setting, build_block
from ..implementations.protocol import Implementation
from ..vocabulary import ConformanceFailure, HarnessError, fail
from .instruments import find_experts
from .oracle import expert_layout
from .verdicts import calibrating_block

__all__ = ["check_covered", "check_experts_are_linear", "unconverted_reason"]


def check_covered(case: ArchCase, impl: Implementation, setting: Setting) -> None:
    """A registry: a lookup in its wrappers by the block class name. A conversion: what it declares it covers,
    then by behaviour: a block converted must show per-expert Linears (``unconverted_reason``)."""
    if not impl.covers(case.block):
        raise setting.fail(
            f"uncovered: calibration would be silently skipped ({impl.name} has no wrapper registered for {case.block})"
        )
    reason = unconverted_reason(case, impl)
    if reason:
        raise setting.fail(f"uncovered: calibration would be silently skipped ({reason})")


# impl -> model_type -> what converting one block of that architecture came to (asked once per architecture)
_probed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def unconverted_reason(case: ArchCase, impl: Implementation) -> str | None:
    """For a conversion: why converting one block of ``case`` (in a one-block model) leaves it without
    per-expert Linears, or None: converted, not a conversion, or the probe could not tell (the conversion or the
    fixture raised: the checks report that)."""
    if not impl.converts_in_place:
        return None
    probed = _probed.setdefault(impl, {})
    if case.model_type not in probed:
        probed[case.model_type] = _probe(case, impl)
    return probed[case.model_type]


def _probe(case: ArchCase, impl: Implementation) -> str | None:
    setting = Setting(case.model_type, "covered", dtype=torch.float32)
    try:
        run = build_block(case, setting, None, purpose="covered")
        with calibrating_block(impl, run, False, run.label) as module:
            try:
                find_experts(module, case, impl, run.label)
            except ConformanceFailure as failure:
                return f"{impl.name} left {case.block} unconverted: {str(failure).removeprefix(f'{run.label}: ')}"
    except (ConformanceFailure, HarnessError):
        return None
    return None


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


# An expert may keep gate and up as one nn.Linear (gate rows, then up rows: Defuser's per-expert unfuse of
# JetMoe's parallel experts), named so by the implementation's ``expert_linears``: one Linear observes the same
# input the two would, so calibration loses nothing; its weight must be the two slices concatenated.
FUSED_GATE_UP = "gate_up_proj"


def _with_fused_gate_up(want: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {k: v for k, v in want.items() if not k.startswith(("gate_proj.", "up_proj."))}
    for part in ("weight", "bias"):
        if f"gate_proj.{part}" in want and f"up_proj.{part}" in want:
            out[f"{FUSED_GATE_UP}.{part}"] = torch.cat([want[f"gate_proj.{part}"], want[f"up_proj.{part}"]])
    return out


def check_experts_are_linear(case: ArchCase, impl: Implementation, setting: Setting) -> None:
    """The wrapper built (the block converted) in the setting's mode, each expert's Linears counted and their
    shapes checked, each parameter compared bit for bit with the oracle's slice of the original (copied before
    a conversion could change it in place), and the Linears of the whole calibrating module counted."""
    run = build_block(case, setting, None, purpose="linear")
    label = run.label
    layout = expert_layout(case, run.block)
    wanted = [{name: t.clone() for name, t in layout.weights(e).items()} for e in range(case.experts)]
    expected_total = case.experts * case.projections + _count_linears(run.block, skip=getattr(run.block, "experts", None))
    with calibrating_block(impl, run, setting.calibrate_all_experts, label) as module:
        fused = 0
        for e, expert in enumerate(find_experts(module, case, impl, label)):
            linears = expert.linears
            fused = int(FUSED_GATE_UP in linears)
            if len(linears) != case.projections - fused:
                raise fail(label, f"expert {e} has {len(linears)} nn.Linear ({sorted(linears)}), expected {case.projections - fused}")
            _check_linear_shapes(e, linears, label)
            want = _with_fused_gate_up(wanted[e]) if fused else wanted[e]
            got = {n: p.detach() for n, p in expert.parameters.items()}
            if set(got) != set(want):
                raise fail(label, f"expert {e} parameters are {sorted(got)}, expected {sorted(want)}")
            for name, tensor in want.items():
                g = got[name]
                if g.shape != tensor.shape or g.dtype != tensor.dtype or not torch.equal(g, tensor):
                    detail = "shape/dtype" if g.shape != tensor.shape or g.dtype != tensor.dtype else "values"
                    raise fail(label, f"expert {e} {name} is not a bit-exact slice of the original expert weights ({detail} differ)")
        total = _count_linears(module)
    expected_total -= case.experts * fused
    if total != expected_total:
        raise fail(
            label, f"the {'converted block' if impl.converts_in_place else 'wrapper'} holds {total} nn.Linear, expected {expected_total} "
            f"({case.experts} experts x {case.projections} projections + the block's other Linears)"
        )
