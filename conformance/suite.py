"""The suite: which checks exist, where each runs, and ``run_checks`` to run them as plain functions.

``CHECKS`` is the one declaration the pytest layer (``test_conformance.py``), the summary table, the reports,
``run_checks`` and ``python -m moe_conformance --list-checks`` (README's check table) read, like torch's OpInfo
database: per check its name, table heading, one-line contract, and the variants, modes and dtypes it runs under
— which ``CheckSpec.settings`` turns into ``Setting``s.
"""

from __future__ import annotations

import os

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .cases import ArchCase
from .device import dtypes_for, run_device
from .checks_lifecycle import check_no_side_effects, check_partial_conversion, check_restore_semantics
from .checks_model import check_whole_model
from .checks_properties import check_routing_properties
from .checks_routing import check_all_experts_observed, check_experts_implementation, check_output_matches, check_routed_tokens_only
from .checks_structure import check_covered, check_experts_are_linear
from .impl import ContractLevels, Implementation
from .outcomes import Outcome, evaluate
from .setting import RUN_SEED, Setting
from .smoke import check_calibration_smoke

__all__ = ["CHECKS", "CheckResult", "CheckSpec", "run_checks"]


@dataclass(frozen=True)
class CheckSpec:
    name: str
    short: str  # the summary table's column heading
    doc: str  # the contract: what must hold, in one line
    function: Callable[[ArchCase, Implementation, Setting], Any]
    modes: tuple[str | None, ...]  # None: the check runs in no single mode
    # None: the check does not depend on the dtype; DTYPES (the CPU's): every dtype of the device it runs on
    dtypes: tuple[torch.dtype | None, ...]
    per_variant: bool  # run for every routing variant, or for "default" only
    # The contract levels (``impl.ContractLevels``) the check judges, per level key: an implementation that
    # declares another level is "not offered" the check. Empty for checks that guard what calibration always
    # needs: those are never "not offered".
    needs: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def not_offered(self, levels: ContractLevels) -> str | None:
        """Why ``levels`` does not offer what this check judges (the declared level and the ones judged), or None."""
        for key, wanted in self.needs:
            if not levels.offers(key, wanted):
                return f"{key} {getattr(levels, key)!r}; {self.name} judges {key} {' or '.join(map(repr, wanted))}"
        return None

    def dtypes_on(self, device: str) -> tuple[torch.dtype | None, ...]:
        """The dtypes this check runs in on ``device``: a check declared with ``DTYPES`` runs in every dtype of
        the device (``device.DTYPES``: float16 too on CUDA); others as declared."""
        return dtypes_for(device) if self.dtypes == DTYPES else self.dtypes

    def settings(self, case: ArchCase, variants: Sequence[str] | None = None, device: str | None = None, seed: int = RUN_SEED) -> Iterator[Setting]:
        """Every setting this check runs in for ``case``, on ``device`` (default: the run's, ``--device``)."""
        device = device or run_device()
        dtypes = self.dtypes_on(device)
        for variant in (variants or list(case.variants)) if self.per_variant else [None]:
            for mode in self.modes:
                for dtype in dtypes:
                    for load in loads() if dtype not in (None, torch.float32) else (None,):
                        yield Setting(case.model_type, self.name, variant, mode, dtype, device, seed, load=load)


LOAD_VAR = "MOE_CONFORMANCE_LOAD"
LOAD_CHOICES = {"cast": (None,), "config_dtype": ("config_dtype",), "both": ("cast", "config_dtype")}


def loads() -> tuple[str | None, ...]:
    """How models in a dtype other than float32 are loaded (``--load`` / ``$MOE_CONFORMANCE_LOAD``): ``cast``
    (default; ``.to(dtype)``, ids unchanged), ``config_dtype`` (as ``from_pretrained(dtype=...)``), or ``both``,
    each its own setting with the load in its id, so a failure says which path broke."""
    choice = os.environ.get(LOAD_VAR, "cast")
    if choice not in LOAD_CHOICES:
        raise ValueError(f"{LOAD_VAR}={choice!r}; one of {', '.join(LOAD_CHOICES)}")
    return LOAD_CHOICES[choice]


BOTH_MODES = ("all_experts", "routed")
# Contract levels (impl.LEVELS) some checks need; see CheckSpec.needs.
ALL_TOKENS = (("coverage", ("all_tokens_once", "all_tokens")),)
RESTORES = (("restore", ("restores",)),)
LINEAR_EXPERTS = (("experts", ("linear",)),)
DTYPES = dtypes_for("cpu")  # float32 and bfloat16; on CUDA float16 too (CheckSpec.dtypes_on)
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
                  check_restore_semantics, BOTH_MODES, F32, False, RESTORES),
        CheckSpec("no_side_effects", "no_side_fx", "Building and running the wrapper leaves the original block's modules, parameters and "
                  "buffers bitwise unchanged (a conversion, which replaces modules by design: the original tensors' values), and the configs' "
                  "and the block's classes' attributes as they were: a patched experts class changes every model in the process.",
                  check_no_side_effects, BOTH_MODES, DTYPES, False),
        CheckSpec("partial_conversion", "partial", "Wrapping or converting one block leaves a sibling block of the same class, "
                  "sharing its config, working: it still matches its original output while the other calibrates and after.",
                  check_partial_conversion, BOTH_MODES, F32, False),
        CheckSpec("whole_model", "model", "A tiny whole model (dense layers too where the architecture has them): the context replaces "
                  "exactly the MoE blocks (a conversion: every MoE block has per-expert Linears and nothing outside them is replaced); "
                  "the logits inside it and after it equal the logits before. In bfloat16 every call of every MoE block is fed the "
                  "original model's input for that call and its output compared too, since rounding noise can flip a later layer's "
                  "top-k on a near tie.",
                  check_whole_model, BOTH_MODES, DTYPES, False),
        CheckSpec("experts_implementation", "exp_impl", "transformers 5.x: under every experts implementation (eager, batched_mm, "
                  "grouped_mm; whole models default to grouped_mm) the output still matches and the expert Linears still see their "
                  "tokens: a fused fast path that bypasses them calibrates nothing (n/a where the experts have no such dispatch).",
                  check_experts_implementation, BOTH_MODES, DTYPES, False),
        CheckSpec("routing_properties", "hypothesis", "Over any combination of the fixture's routing knobs, any small shape and seed: "
                  "observation, routing and outputs hold in both modes.",
                  check_routing_properties, (None,), F32, False),
        CheckSpec("calibration_smoke", "smoke", "A tiny whole model calibrated on two tokens inside the context leaves every expert "
                  "Linear with finite min/max statistics of at least one non-zero row; the run prints how many experts natural routing "
                  "left unseen without it. Not offered at coverage rotating or routed_only.",
                  check_calibration_smoke, (None,), F32, False, ALL_TOKENS),
    )
}


@dataclass(frozen=True)
class CheckResult:
    check: str
    variant: str
    mode: str | None
    dtype: str | None
    outcome: str  # an ``outcomes.KINDS`` kind: passed, failed, error, skipped, n/a, not offered, xfail
    message: str = ""
    id: str = ""  # the setting's id, as the pytest layer names the test
    uncovered: bool = False  # the implementation has no wrapper for the block

    @property
    def passed(self) -> bool:
        """Nothing to fix here: passed, skipped, n/a or an expected failure."""
        return self.outcome in ("passed", "skipped", "n/a", "not offered", "xfail")

    @classmethod
    def of(cls, outcome: Outcome) -> CheckResult:
        r = outcome.record()
        return cls(r["check"], r["variant"], r["mode"], r["dtype"], outcome.kind, outcome.message, r["id"], outcome.uncovered)


def run_checks(
    case: ArchCase,
    impl: Implementation,
    checks: Sequence[str] | None = None,
    variants: Sequence[str] | None = None,
    stop_at_first_failure: bool = False,
    covered_only: bool = False,
    device: str | None = None,
) -> list[CheckResult]:
    """Every setting ``CHECKS`` declares for ``case`` (of ``checks``, default all) on ``device`` (default: the
    run's), one result each, through the same ``evaluate`` as the pytest layer (up to the first failure or error
    with ``stop_at_first_failure``; ``covered_only`` as ``--covered-only``: a block the implementation does not
    cover is skipped, not failed)."""
    results = []
    for name in checks or CHECKS:
        spec = CHECKS[name]
        for setting in spec.settings(case, variants, device):
            result = CheckResult.of(evaluate(case, spec, setting, impl, covered_only))
            results.append(result)
            if stop_at_first_failure and not result.passed:
                return results
    return results
