"""The suite: which checks exist, where each runs, and ``run_checks`` to run them as plain functions.

``CHECKS`` is the one declaration the pytest layer (``test_conformance.py``), the summary table, the reports,
``run_checks`` and ``python -m moe_conformance --list-checks`` (docs/checks.md's check table) read, like torch's OpInfo
database: per check its name, table heading, one-line contract, and the variants, modes and dtypes it runs under
— which ``CheckSpec.settings`` turns into ``Setting``s.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..cases.arch import ArchCase
from ..cases.devices import DEFAULT as DEFAULT_DEVICE
from ..implementations.protocol import Implementation
from .lifecycle import check_no_side_effects, check_partial_conversion, check_restore_semantics
from .model import check_whole_model
from .outcomes import Outcome, evaluate
from .properties import check_routing_properties
from .routing import (
    check_all_experts_observed,
    check_experts_implementation,
    check_output_matches,
    check_routed_tokens_only,
)
from .smoke import check_calibration_smoke
from .spec import DTYPES, CheckSpec
from .structure import check_covered, check_experts_are_linear

__all__ = ["CHECKS", "run_checks"]

BOTH_MODES = ("all_experts", "routed")
# Contract levels (impl.LEVELS) some checks need; see CheckSpec.needs.
ALL_TOKENS = (("coverage", ("all_tokens_once", "all_tokens")),)
RESTORES = (("restore", ("restores",)),)
LINEAR_EXPERTS = (("experts", ("linear",)),)

F32 = (torch.float32,)

CHECKS: dict[str, CheckSpec] = {
    spec.name: spec
    for spec in (
        CheckSpec("covered", "covered", "The implementation has a wrapper for the block class (a conversion: converting one leaves "
                  "per-expert Linears): otherwise calibration is silently skipped. An uncovered block is this one failure, its other "
                  "checks skipped as uncovered (--covered-only: a skip too).",
                  check_covered, (None,), (None,), False),
        CheckSpec("all_experts_observed", "all_seen", "calibrate_all_experts=True: every Linear of every expert receives every token, once (after its routed tokens "
                  "again for a discard pass; duplicates allowed at coverage all_tokens; not offered at coverage rotating or routed_only).",
                  check_all_experts_observed, ("all_experts",), DTYPES, True, ALL_TOKENS),
        CheckSpec("routed_tokens_only", "routed", "calibrate_all_experts=False: each expert receives exactly the tokens the original routes to it with a "
                  "non-zero weight (a weight-0 route, such as LongCat-Flash's dummy rows, contributes nothing: calibrating the "
                  "expert on it would skew its statistics with a token it never serves).",
                  check_routed_tokens_only, ("routed",), DTYPES, True),
        CheckSpec("output_matches", "output", "The wrapper's (converted block's) output equals the original block's (computed before): same structure, "
                  "dtype, shape, every element (router logits too), within the dtype's tolerance.",
                  check_output_matches, BOTH_MODES, DTYPES, True),
        CheckSpec("experts_are_linear", "linear", "Experts are nn.Linear: experts x projections of them (plus the block's other Linears), "
                  "in/out features matching their weights, each weight a bit-exact slice of the original's.",
                  check_experts_are_linear, ("all_experts",), DTYPES, False, LINEAR_EXPERTS),
        CheckSpec("restore_semantics", "restore", "Through the implementation's context, non-permanent wrappers (a restoring conversion) leave the same "
                  "module objects, bitwise-equal parameters and buffers and no hooks, also when the body raises; permanent wrappers "
                  "stay, still match, and release the block they replaced. Not offered where the implementation declares restore permanent.",
                  check_restore_semantics, BOTH_MODES, F32, False, RESTORES, follows=("output_matches",)),
        CheckSpec("no_side_effects", "no_side_fx", "Building and running the wrapper leaves the original block's modules, parameters and "
                  "buffers bitwise unchanged (a conversion, which replaces modules by design: the original tensors' values), and the configs' "
                  "and the block's classes' attributes as they were: a patched experts class changes every model in the process.",
                  check_no_side_effects, BOTH_MODES, DTYPES, False),
        CheckSpec("partial_conversion", "partial", "Wrapping or converting one block leaves a sibling block of the same class, "
                  "sharing its config, working: it still matches its original output while the other calibrates and after.",
                  check_partial_conversion, BOTH_MODES, F32, False, follows=("output_matches", "no_side_effects")),
        CheckSpec("whole_model", "model", "A tiny whole model (dense layers too where the architecture has them): the context replaces "
                  "exactly the MoE blocks (a conversion: every MoE block has per-expert Linears and nothing outside them is replaced); "
                  "the logits inside it and after it equal the logits before. In bfloat16 every call of every MoE block is fed the "
                  "original model's input for that call and its output compared too, since rounding noise can flip a later layer's "
                  "top-k on a near tie.",
                  check_whole_model, BOTH_MODES, DTYPES, False, follows=("output_matches",)),
        CheckSpec("experts_implementation", "exp_impl", "transformers 5.x: under every experts implementation (eager, batched_mm, "
                  "grouped_mm; whole models default to grouped_mm) the output still matches and the expert Linears still see their "
                  "tokens: a fused fast path that bypasses them calibrates nothing (n/a where the experts have no such dispatch).",
                  check_experts_implementation, BOTH_MODES, DTYPES, False,
                  follows=("output_matches", "all_experts_observed", "routed_tokens_only")),
        CheckSpec("routing_properties", "hypothesis", "Over any combination of the fixture's routing knobs, any small shape and seed: "
                  "observation, routing and outputs hold in both modes.",
                  check_routing_properties, (None,), F32, False,
                  follows=("output_matches", "all_experts_observed", "routed_tokens_only")),
        CheckSpec("calibration_smoke", "smoke", "A tiny whole model calibrated on two tokens inside the context leaves every expert "
                  "Linear with finite min/max statistics of at least one non-zero row; the run prints how many experts natural routing "
                  "left unseen without it. Not offered at coverage rotating or routed_only.",
                  check_calibration_smoke, (None,), F32, False, ALL_TOKENS, follows=("all_experts_observed",)),
    )
}




def run_checks(
    case: ArchCase,
    impl: Implementation,
    checks: Sequence[str] | None = None,
    variants: Sequence[str] | None = None,
    stop_at_first_failure: bool = False,
    covered_only: bool = False,
    device: str = DEFAULT_DEVICE,
) -> list[Outcome]:
    """Every setting ``CHECKS`` declares for ``case`` (of ``checks``, default all) on ``device`` (default: the
    run's), one result each, through the same ``evaluate`` as the pytest layer (up to the first failure or error
    with ``stop_at_first_failure``; ``covered_only`` as ``--covered-only``: a block the implementation does not
    cover is skipped, not failed)."""
    results = []
    for name in checks or CHECKS:
        spec = CHECKS[name]
        for setting in spec.settings(case, variants, device):
            result = evaluate(case, spec, setting, impl, covered_only)
            results.append(result)
            if stop_at_first_failure and not result.passed:
                return results
    return results
