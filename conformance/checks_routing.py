"""Checks of what a wrapper does with tokens: which expert Linears see which tokens, in each mode, and whether its
output equals the original block's — on every shape, and under every experts implementation transformers
offers.

Each check takes ``(case, impl, setting)`` and raises ``ConformanceFailure`` (the wrapper broke the contract),
``HarnessError`` or ``NotApplicable``, or returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .cases import SHAPES, ArchCase, Shape
from .impl import Implementation
from .instruments import Routing, expert_modules, observe_original, record_linear_inputs, row_indices, scaled_row_indices
from .setting import BlockRun, Setting, build_block
from .verdicts import NotApplicable, compare_outputs, fail, run_implementation, run_original, wrap

__all__ = [
    "DISPATCH_SHAPES",
    "check_all_experts_observed",
    "check_experts_implementation",
    "check_output_matches",
    "check_routed_tokens_only",
    "wrap_and_observe",
]


def _fmt(tokens: Sequence[int], limit: int = 8) -> str:
    tokens = list(tokens)
    return str(tokens[:limit])[:-1] + (", ...]" if len(tokens) > limit else "]")


def _check_observed(seen, routing: Routing, expected: list[list[int]], label: str, what: str) -> None:
    """Every Linear of expert ``e`` received exactly the token rows ``expected[e]``, each once."""
    hidden = routing.tokens.shape[-1]
    for e, linears in enumerate(seen):
        want = expected[e]
        for name, calls in linears.items():
            rows = torch.cat(calls) if calls else routing.tokens.new_zeros(0, 0)
            if rows.shape[0] != len(want):
                raise fail(label, f"expert {e} {name} received {rows.shape[0]} token rows, expected {len(want)} ({what})")
            if rows.shape[0] == 0 or rows.shape[-1] != hidden:
                continue  # inner projections: the row count is what can be checked
            got = scaled_row_indices(rows, routing, e) if routing.expert_rows is not None else row_indices(rows, routing.tokens)
            if None in got:
                raise fail(label, f"expert {e} {name} received a row that is none of the block's tokens ({what})")
            if sorted(got) != want:
                missing = sorted(set(want) - set(got))
                extra = sorted(set(got) - set(want))
                raise fail(
                    label,
                    f"expert {e} {name} received tokens {_fmt(sorted(got))}, expected {_fmt(want)} ({what}; "
                    f"missing {_fmt(missing)}, unexpected or repeated {_fmt(extra or [t for t in got if got.count(t) > 1])})",
                )


def wrap_and_observe(case: ArchCase, impl: Implementation, run: BlockRun, calibrate_all: bool, label: str | None = None, where: str = ""):
    """Observe the original's routing, wrap it and run the wrapper with its expert Linears recorded; fail unless
    every Linear of every expert received exactly every token once (``calibrate_all``) or exactly the tokens the
    original routed to that expert. Returns the original's and the wrapper's outputs."""
    label = label or run.label
    want, routing = observe_original(case, run.block, run.args, run.kwargs, label)
    wrapper = wrap(impl, run.block, run.config, calibrate_all, label)
    with record_linear_inputs(expert_modules(wrapper, case, label)) as seen:
        got = run_implementation(wrapper, run.args, run.kwargs, label, "the wrapper")
    if calibrate_all:
        expected, what = [list(range(routing.tokens.shape[0]))] * case.experts, "every token, once"
    else:
        expected, what = routing.routed, "routed tokens only"
    _check_observed(seen, routing, expected, label, f"calibrate_all_experts={calibrate_all}: {what}{where}")
    return want, got


def check_all_experts_observed(case: ArchCase, impl: Implementation, setting: Setting, shapes: Sequence[Shape] = SHAPES) -> None:
    """Per shape: the original's routing observed, then every expert Linear of the wrapper built with the
    setting's mode (all experts) recorded."""
    for shape in shapes:
        wrap_and_observe(case, impl, build_block(case, setting, shape), setting.calibrate_all_experts)


def check_routed_tokens_only(case: ArchCase, impl: Implementation, setting: Setting, shapes: Sequence[Shape] = SHAPES) -> None:
    """Per shape: as ``check_all_experts_observed``, in the routed mode: each expert's Linears must see exactly
    the tokens the original routed to it."""
    for shape in shapes:
        wrap_and_observe(case, impl, build_block(case, setting, shape), setting.calibrate_all_experts)


def check_output_matches(case: ArchCase, impl: Implementation, setting: Setting, shapes: Sequence[Shape] = SHAPES) -> None:
    """Per shape: the original's output computed before wrapping, then the wrapper's, compared element-wise
    (router logits too) within the dtype's tolerance."""
    for shape in shapes:
        run = build_block(case, setting, shape)
        want = run_original(run.block, run.args, run.kwargs, run.label, f"the original {case.block}")
        wrapper = wrap(impl, run.block, run.config, setting.calibrate_all_experts, run.label)
        compare_outputs(run_implementation(wrapper, run.args, run.kwargs, run.label, "the wrapper"), want, run.label)


def _dispatched_experts(experts: nn.Module | None) -> bool:
    """A transformers v5 ``@use_experts_implementation`` experts module, whose forward dispatches on
    ``config._experts_implementation``."""
    return experts is not None and hasattr(experts, "is_concatenated") and hasattr(getattr(experts, "config", None), "_experts_implementation")


# What varies in check_experts_implementation is the original's dispatch (eager, batched_mm, grouped_mm): two
# shapes, several tokens (some experts getting none) and a single token, cover it; the other shapes exercise
# the wrapper's own indexing, which the other checks run on every shape.
DISPATCH_SHAPES: tuple[Shape, ...] = (SHAPES[0], SHAPES[1])


def check_experts_implementation(case: ArchCase, impl: Implementation, setting: Setting, shapes: Sequence[Shape] = DISPATCH_SHAPES) -> Any:
    """Under each experts implementation (the original's dispatch set on its experts' config), the wrapper's
    output and its expert Linears' tokens, as in the other routing checks."""
    probe = build_block(case, setting, None, purpose="dispatch probe").block
    if not _dispatched_experts(getattr(probe, "experts", None)):
        raise NotApplicable(f"{setting.id}: {case.block}'s experts have no experts_implementation dispatch here")
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    names = ["eager", *(n for n in ("batched_mm", "grouped_mm") if n in ALL_EXPERTS_FUNCTIONS)]
    for name in names:
        for shape in shapes:
            run = build_block(case, setting, shape, purpose=f"experts_implementation={name}")
            run.block.experts.config._experts_implementation = name
            label = setting.label(shape, f"experts_implementation={name}")
            want, got = wrap_and_observe(case, impl, run, setting.calibrate_all_experts, label, f" under {name}")
            compare_outputs(got, want, label)
