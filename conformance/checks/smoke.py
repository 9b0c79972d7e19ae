"""End-to-end calibration smoke: the seeds' README flow (calibrate a model inside ``moe_calibration_context``),
on a tiny whole model with no network, through the implementation's calibration (its context, or its conversion
and calibration mode).

Min/max observers — what a static-activation quantizer (FP8, INT8, NVFP4 input scales) records — hang on every
expert Linear; one calibration pass runs with a deliberately tiny token budget, so natural routing leaves most
experts unseen. Inside the implementation's context every expert Linear must end with finite statistics of
at least one row that is not all zero. The same pass without the context shows which experts natural routing left unseen: that contrast is
why calibration wrappers exist.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from ..cases.arch import ArchCase
from ..cases.setting import Setting, build_model
from ..implementations.protocol import Implementation
from ..vocabulary import HarnessError, fail
from .instruments import find_experts, recording_routing
from .verdicts import calibrating_model, run_implementation, run_original

__all__ = ["MinMaxObserver", "SmokeResult", "calibration_smoke", "check_calibration_smoke"]


class MinMaxObserver:
    """Running min/max of a Linear's input, as a static quantizer's observer keeps them, and how many of its rows
    were not all zero: a Linear fed only zero rows (an expert "run on every token" with the tokens it was not
    routed masked out) has statistics of nothing, and its scales would be degenerate."""

    def __init__(self):
        self.count = 0
        self.nonzero_rows = 0
        self.min = float("inf")
        self.max = float("-inf")

    def __call__(self, module: nn.Module, args: tuple) -> None:
        x = args[0].detach()
        if x.numel() == 0:
            return
        rows = x.reshape(-1, x.shape[-1])
        self.count += rows.shape[0]
        self.nonzero_rows += int((rows != 0).any(dim=-1).sum())
        self.min = min(self.min, x.min().item())
        self.max = max(self.max, x.max().item())

    @property
    def calibrated(self) -> bool:
        return self.nonzero_rows > 0 and torch.isfinite(torch.tensor([self.min, self.max])).all().item()


@dataclass
class SmokeResult:
    arch: str
    tokens: int
    experts: int  # routed experts over all MoE blocks of the model
    unseen_without_context: dict[str, list[int]] = field(default_factory=dict)  # block name -> expert ids

    @property
    def unseen_count(self) -> int:
        return sum(map(len, self.unseen_without_context.values()))

    def summary(self) -> str:
        return (
            f"{self.arch}: {self.tokens} tokens; without the context {self.unseen_count}/{self.experts} experts "
            f"unseen; with it 0/{self.experts}"
        )


def calibration_smoke(case: ArchCase, impl: Implementation, setting: Setting | None = None, tokens: int = 2) -> SmokeResult:
    """Calibrate a tiny whole model on ``tokens`` tokens inside the implementation's context (all experts: what
    calibration asks for); every expert Linear of every MoE block must end with finite, non-empty min/max
    statistics of a non-zero row. ``setting`` defaults to the check's own, in float32 on the CPU."""
    setting = setting or Setting(case.model_type, "calibration_smoke", dtype=torch.float32)
    run = build_model(case, setting, (1, tokens), purpose="smoke")
    model, inputs, label = run.model, run.inputs, run.label
    blocks = [name for name, m in model.named_modules() if type(m).__name__ == case.block]
    if not blocks:
        raise HarnessError(f"{label}: the fixture's {case.model_class} holds no {case.block}")
    modules = dict(model.named_modules())

    result = SmokeResult(case.model_type, tokens, case.experts * len(blocks))
    with contextlib.ExitStack() as stack:
        routings = {name: stack.enter_context(recording_routing(case, modules[name], label)) for name in blocks}
        run_original(model, (), inputs, label, f"{case.model_class} without the context")
    result.unseen_without_context = {
        name: [e for e, tokens in enumerate(routing().routed) if not tokens] for name, routing in routings.items()
    }

    observers: dict[tuple[str, int, str], MinMaxObserver] = {}
    with calibrating_model(impl, model, True, label) as active:
        inside = dict(active.named_modules())
        handles = []
        for name in blocks:
            for e, expert in enumerate(find_experts(inside[name], case, impl, label)):
                for lname, linear in expert.linears.items():
                    observer = observers[(name, e, lname)] = MinMaxObserver()
                    handles.append(linear.register_forward_pre_hook(observer))
        try:
            run_implementation(active, (), inputs, label, f"{case.model_class} inside the context")
        finally:
            for h in handles:
                h.remove()
    missing = [key for key, observer in observers.items() if not observer.calibrated]
    if missing:
        block, e, lname = missing[0]
        observer = observers[missing[0]]
        raise fail(
            label, f"{len(missing)} expert Linear(s) ended calibration with no finite statistics of a non-zero row, "
            f"e.g. {block} expert {e} {lname} ({observer.count} rows, {observer.nonzero_rows} not all zero; without "
            f"the context {result.unseen_count}/{result.experts} experts were unseen; inside it every one must be observed)"
        )
    return result


def check_calibration_smoke(case: ArchCase, impl: Implementation, setting: Setting) -> SmokeResult:
    """``calibration_smoke`` in the setting; its result says how many experts natural routing left unseen."""
    return calibration_smoke(case, impl, setting)
