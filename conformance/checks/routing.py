"""Checks of what a wrapper does with tokens: which expert Linears see which tokens, in each mode, and whether its
output equals the original block's — on every shape, and under every experts implementation transformers
offers.

Each check takes ``(case, impl, setting)`` and raises ``ConformanceFailure`` (the wrapper broke the contract),
``HarnessError`` or ``NotApplicable``, or returns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..cases.arch import SHAPES, ArchCase, Shape
from ..cases.setting import BlockRun, Setting, build_block
from ..implementations.protocol import ContractLevels, Implementation
from ..vocabulary import HarnessError, NotApplicable, fail
from .instruments import Routing, find_experts, observe_original, record_linear_inputs, row_indices, scaled_row_indices
from .verdicts import calibrating_block, compare_outputs, run_implementation, run_original

__all__ = [
    "DISPATCH_SHAPES",
    "check_all_experts_observed",
    "check_experts_implementation",
    "check_output_matches",
    "check_routed_tokens_only",
    "expected_rows",
    "wrap_and_observe",
]


def _fmt(tokens: Sequence[int], limit: int = 8) -> str:
    tokens = list(tokens)
    return str(tokens[:limit])[:-1] + (", ...]" if len(tokens) > limit else "]")


# How the rows an expert Linear received are compared with the expected tokens: exactly that multiset, at
# least every expected token (duplicates allowed), or only that every row is one of the block's tokens.
EXACT, AT_LEAST, TOKENS_ONLY = "exact", "at least", "tokens only"


def expected_rows(levels: ContractLevels, routing: Routing, experts: int, calibrate_all: bool) -> tuple[str, list[Counter], str]:
    """What each expert's Linears must receive in one call, by mode and the implementation's declared levels:
    ``(rule, per expert a multiset of token indices, what that is in words)``. Routed mode: exactly the routed
    tokens. All experts: every token once (coverage ``all_tokens_once``), then the routed ones again where the
    output comes from a second, routed pass (output ``discard_pass``); every token, duplicates allowed
    (``all_tokens``); for coverage that does not promise every token per call, only that each row is a token."""
    if not calibrate_all:
        return EXACT, [Counter(tokens) for tokens in routing.routed], "routed tokens only"
    everyone = Counter(range(routing.tokens.shape[0]))
    if levels.coverage == "all_tokens_once":
        if levels.output == "discard_pass":
            return EXACT, [everyone + Counter(tokens) for tokens in routing.routed], "every token once, then its routed tokens again"
        return EXACT, [everyone] * experts, "every token, once"
    if levels.coverage == "all_tokens":
        return AT_LEAST, [everyone] * experts, "every token, duplicates allowed"
    return TOKENS_ONLY, [Counter()] * experts, f"coverage {levels.coverage}: rows of the block's tokens"


def _check_observed(seen, routing: Routing, rule: str, expected: list[Counter], label: str, what: str) -> None:
    """Every Linear of expert ``e`` received the token rows ``expected[e]`` as ``rule`` compares them."""
    hidden = routing.tokens.shape[-1]
    for e, linears in enumerate(seen):
        want = expected[e]
        count = sum(want.values())
        for name, calls in linears.items():
            rows = torch.cat(calls) if calls else routing.tokens.new_zeros(0, 0)
            if (rule == EXACT and rows.shape[0] != count) or (rule == AT_LEAST and rows.shape[0] < count):
                expectation = f"at least {count}" if rule == AT_LEAST else str(count)
                raise fail(label, f"expert {e} {name} received {rows.shape[0]} token rows, expected {expectation} ({what})")
            if rows.shape[0] == 0 or rows.shape[-1] != hidden:
                continue  # inner projections: the row count is what can be checked
            got = scaled_row_indices(rows, routing, e) if routing.expert_rows is not None else row_indices(rows, routing.tokens)
            if None in got:
                raise fail(label, f"expert {e} {name} received a row that is none of the block's tokens ({what})")
            received = Counter(got)
            missing = sorted((want - received).elements())
            extra = sorted((received - want).elements()) if rule == EXACT else []
            if missing or extra:
                raise fail(
                    label,
                    f"expert {e} {name} received tokens {_fmt(sorted(got))}, expected {_fmt(sorted(want.elements()))} "
                    f"({what}; missing {_fmt(missing)}, unexpected or repeated {_fmt(extra)})",
                )


def wrap_and_observe(case: ArchCase, impl: Implementation, run: BlockRun, calibrate_all: bool, label: str | None = None, where: str = ""):
    """Observe the original's routing, then let the implementation calibrate the block (wrap it, or convert
    it) and run that with its expert Linears recorded; fail unless they received what ``expected_rows`` says.
    Returns the original's and the calibrating module's outputs."""
    label = label or run.label
    want, routing = observe_original(case, run.block, run.args, run.kwargs, label)  # before any conversion
    with calibrating_block(impl, run, calibrate_all, label) as module:
        with record_linear_inputs(find_experts(module, case, impl, label)) as seen:
            got = run_implementation(module, run.args, run.kwargs, label, "the wrapper")
    rule, expected, what = expected_rows(impl.levels, routing, case.experts, calibrate_all)
    _check_observed(seen, routing, rule, expected, label, f"calibrate_all_experts={calibrate_all}: {what}{where}")
    return want, got


def check_all_experts_observed(case: ArchCase, impl: Implementation, setting: Setting, shapes: Sequence[Shape] = SHAPES) -> None:
    """Per shape: the original's routing observed, then every expert Linear of the wrapper built (the block
    converted) in the setting's mode (all experts) recorded; judged at the declared coverage and output levels."""
    for shape in shapes:
        wrap_and_observe(case, impl, build_block(case, setting, shape), setting.calibrate_all_experts)


def check_routed_tokens_only(case: ArchCase, impl: Implementation, setting: Setting, shapes: Sequence[Shape] = SHAPES) -> None:
    """Per shape: as ``check_all_experts_observed``, in the routed mode: each expert's Linears must see exactly
    the tokens the original routed to it."""
    for shape in shapes:
        wrap_and_observe(case, impl, build_block(case, setting, shape), setting.calibrate_all_experts)


def check_output_matches(case: ArchCase, impl: Implementation, setting: Setting, shapes: Sequence[Shape] = SHAPES) -> None:
    """Per shape: the original's output computed before wrapping (or converting), then the calibrating
    module's, compared element-wise (router logits too) within the dtype's tolerance."""
    for shape in shapes:
        run = build_block(case, setting, shape)
        want = run_original(run.block, run.args, run.kwargs, run.label, f"the original {case.block}")
        with calibrating_block(impl, run, setting.calibrate_all_experts, run.label) as module:
            got = run_implementation(module, run.args, run.kwargs, run.label, "the wrapper")
        compare_outputs(got, want, run.label)


def dispatched_experts(experts: nn.Module | None) -> bool:
    """A transformers v5 ``@use_experts_implementation`` experts module, whose forward dispatches on
    ``config._experts_implementation``."""
    return experts is not None and hasattr(experts, "is_concatenated") and hasattr(getattr(experts, "config", None), "_experts_implementation")


# What varies in check_experts_implementation is the original's dispatch (eager, batched_mm, grouped_mm): two
# shapes, several tokens (some experts getting none) and a single token, cover it; the other shapes exercise
# the wrapper's own indexing, which the other checks run on every shape.
DISPATCH_SHAPES: tuple[Shape, ...] = (SHAPES[0], SHAPES[1])


def check_experts_implementation(case: ArchCase, impl: Implementation, setting: Setting, shapes: Sequence[Shape] = DISPATCH_SHAPES) -> Any:
    """Under each experts implementation (the original's dispatch set on its experts' config), the wrapper's
    output and its expert Linears' tokens, as in the other routing checks. On CUDA ``batched_mm`` and
    ``grouped_mm`` are the real kernels; one that cannot run the original in the setting's dtype there makes
    the check n/a, naming it, once the others have passed."""
    probe = build_block(case, setting, None, purpose="dispatch probe").block
    if not dispatched_experts(getattr(probe, "experts", None)):
        raise NotApplicable(f"{setting.id}: {case.block}'s experts have no experts_implementation dispatch here")
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    names = ["eager", *(n for n in ("batched_mm", "grouped_mm") if n in ALL_EXPERTS_FUNCTIONS)]
    unsupported: dict[str, str] = {}
    for name in names:
        for shape in shapes:
            run = build_block(case, setting, shape, purpose=f"experts_implementation={name}")
            run.block.experts.config._experts_implementation = name
            label = setting.label(shape, f"experts_implementation={name}")
            try:
                want, got = wrap_and_observe(case, impl, run, setting.calibrate_all_experts, label, f" under {name}")
            except HarnessError:
                refusal = None if name == "eager" else _kernel_refusal(case, setting, shape, name)
                if refusal is None:
                    raise
                unsupported[name] = refusal
                break
            compare_outputs(got, want, label)
    if unsupported:
        checked = [n for n in names if n not in unsupported]
        raise NotApplicable(
            f"{setting.id}: " + "; ".join(f"{n} cannot run {case.block}'s experts here ({why})" for n, why in unsupported.items())
            + f"; {', '.join(checked)} checked and matched"
        )


def _kernel_refusal(case: ArchCase, setting: Setting, shape: Shape, name: str) -> str | None:
    """Why the *original* block, freshly built, raises under the experts implementation ``name`` (its kernel
    has no support for the setting's dtype on its device), or None where it runs: then the harness error was
    something else and stands. Asked only after a failure, so a passing run pays nothing for it."""
    run = build_block(case, setting, shape, purpose=f"experts_implementation={name} refusal")
    run.block.experts.config._experts_implementation = name
    try:
        run_original(run.block, run.args, run.kwargs, run.label, f"the original {case.block} under {name}")
    except HarnessError as error:
        cause = error.__cause__
        return f"{type(cause).__name__}: {str(cause).splitlines()[0][:200]}" if cause is not None else str(error)
    return None
