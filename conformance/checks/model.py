"""The whole-model check: a tiny whole model through the implementation's calibration context, as users run it."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from ..cases.arch import ArchCase
from ..cases.setting import Setting, build_model
from ..implementations.protocol import Implementation
from ..vocabulary import ConformanceFailure, HarnessError, fail
from .instruments import feeding_recorded_inputs, find_experts, recording_calls
from .verdicts import calibrating_model, compare_outputs, run_implementation, run_original

__all__ = ["MODEL_SHAPE", "check_whole_model", "model_output"]

MODEL_SHAPE = (2, 6)  # (batch, sequence) of the whole-model inputs


def model_output(out: Any) -> torch.Tensor:
    """A *ForCausalLM's logits; a bare *Model's (multimodal families whose text stack holds the MoE) hidden
    states."""
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


def check_whole_model(case: ArchCase, impl: Implementation, setting: Setting) -> None:
    """The model's output before the context; inside it (in the setting's mode) the replaced modules must be
    exactly the MoE blocks (this entry's and ``model_also_holds``'), or for a conversion every MoE block
    converted and nothing outside them replaced, and the output unchanged; after it too.

    In bfloat16, rounding differences between a fused kernel and per-expert Linears can flip a later layer's
    top-k on a near tie and change the logits far beyond rounding (one seed in 20 did, in gpt-oss): a flake, not
    a bug. So there every call of every MoE block is fed the inputs the original model gave that call (a looped
    layer's block runs once per pass, each on its own input), and each call's output is compared too; float32
    runs free."""
    run = build_model(case, setting, MODEL_SHAPE)
    model, inputs, label = run.model, run.inputs, run.label
    before = dict(model.named_modules())
    if not any(type(m).__name__ == case.block for m in before.values()):
        raise HarnessError(f"{label}: the fixture's {case.model_class} holds no {case.block}")
    held = {case.block, *case.model_also_holds}
    moe_blocks = {name for name, m in before.items() if type(m).__name__ in held}
    forced = setting.dtype != torch.float32
    recorded: dict[str, list[tuple]] = {}  # per MoE block, each call's inputs (a looped layer's block runs per pass)
    block_outputs: dict[str, list[Any]] = {}
    with recording_calls({n: before[n] for n in moe_blocks}, recorded, block_outputs) if forced else contextlib.nullcontext():
        want = model_output(run_original(model, (), inputs, label, case.model_class))
    want_blocks = dict(block_outputs)

    def output(model: nn.Module, when: str):
        outputs: dict[str, list[Any]] = {}
        with feeding_recorded_inputs(model, moe_blocks, recorded, outputs) if forced else contextlib.nullcontext():
            got = model_output(run_implementation(model, (), inputs, label, f"{case.model_class} {when}"))
        for name in sorted(set(outputs) | set(want_blocks)):
            calls, want_calls = outputs.get(name, []), want_blocks.get(name, [])
            if len(calls) != len(want_calls):
                raise fail(label, f"{name} {when} was called {len(calls)} times; the original model calls it {len(want_calls)} times")
            for i, (got_call, want_call) in enumerate(zip(calls, want_calls)):
                call = f" call {i + 1} of {len(calls)}" if len(calls) > 1 else ""
                compare_outputs(got_call, want_call, label, f"{name}{call} {when} (fed the original's input)", setting.dtype)
        return got

    with calibrating_model(impl, model, setting.calibrate_all_experts, label) as active:
        _check_structure(case, impl, before, dict(active.named_modules()), moe_blocks, label)
        compare_outputs(output(active, "inside the context"), want, label, "logits inside the context", tolerance_dtype=setting.dtype)
    compare_outputs(output(active, "after the context"), want, label, "logits after the context", tolerance_dtype=setting.dtype)


def _check_structure(case: ArchCase, impl: Implementation, before: dict[str, nn.Module], now: dict[str, nn.Module], moe_blocks: set[str], label: str) -> None:
    """A registry's context replaces exactly the MoE blocks. A conversion may replace what lies below them;
    nothing outside them, and each block of the case's class must show per-expert Linears (converted)."""
    if not impl.converts_in_place:
        replaced = {n for n, m in before.items() if n in now and now[n] is not m and not any(n.startswith(b + ".") for b in moe_blocks)}
        if replaced != moe_blocks:
            raise fail(
                label, f"the context replaced {sorted(replaced) or 'nothing'}; expected exactly the MoE blocks "
                f"{sorted(moe_blocks)}"
            )
        return
    outside = sorted(
        n for n, m in before.items()
        if n and now.get(n) is not m and not any(n == b or n.startswith(b + ".") for b in moe_blocks)
    )
    if outside:
        raise fail(label, f"the conversion replaced {outside[:5]}, outside the MoE blocks {sorted(moe_blocks)}")
    for name in sorted(n for n in moe_blocks if type(before[n]).__name__ == case.block):
        if name not in now:
            raise fail(label, f"the MoE block '{name}' is gone after the conversion")
        try:
            find_experts(now[name], case, impl, label)
        except ConformanceFailure as failure:
            reason = str(failure).removeprefix(f"{label}: ")
            raise fail(label, f"the MoE block '{name}' was not converted: {reason}") from None
