"""Checks of a calibration's lifecycle: what the implementation's calibration context leaves behind (after a
normal exit and after an exception in its body), that building and running a wrapper (or converting a block)
leaves the original, its configs and its classes untouched, and that calibrating one block leaves a sibling of
the same class working (partial conversion)."""

from __future__ import annotations

import copy
import gc
import weakref

from torch import nn

from ..cases.arch import SHAPES, ArchCase, randomise_
from ..cases.setting import Setting, block_inputs, build_block
from ..implementations.block_model import BLOCK_PATH, BlockModel
from ..implementations.protocol import Implementation
from ..vocabulary import ConformanceFailure, HarnessError, fail
from .instruments import find_experts
from .snapshots import ClassState, ConfigState, Snapshot, TensorValues, classes_of
from .verdicts import calibrating_block, calibrating_model, compare_outputs, run_implementation, run_original

__all__ = ["check_no_side_effects", "check_partial_conversion", "check_restore_semantics"]


class _BodyError(Exception):
    """Raised inside the calibration context to test its exception safety."""


def _unchanged(model: nn.Module, before: Snapshot, label: str, when: str) -> None:
    difference = before.difference(model)
    if difference:
        raise fail(label, f"{when}: {difference}")


def _block_of(model: nn.Module, label: str) -> nn.Module:
    try:
        return model.get_submodule(BLOCK_PATH)
    except AttributeError:
        raise fail(label, f"the model inside the context has no module at '{BLOCK_PATH}', where the block was") from None


def check_restore_semantics(case: ArchCase, impl: Implementation, setting: Setting) -> None:
    """A block in a minimal model, snapshotted, run through the implementation's context in the setting's mode:
    inside, replaced (a registry) or converted (per-expert Linears under the block) and matching; after it, the
    snapshot again (non-permanent), or the wrapper still there, still matching, with the replaced block
    collected (a permanent registry wrapper). Then a fresh block whose context body raises: the exception must
    come out unchanged and the model be as snapshotted. Judged only where the implementation restores."""
    # The same block twice (no shape in its seed), for the normal exit and for the exception in the body.
    run = build_block(case, setting, None, purpose="restore")
    args, kwargs = block_inputs(case, setting, SHAPES[0], purpose="restore")
    label, block = setting.label(SHAPES[0]), run.block
    want = run_original(block, args, kwargs, label, f"the original {case.block}")
    model = BlockModel(block, run.model_config)
    before = Snapshot.of(model)
    with calibrating_model(impl, model, setting.calibrate_all_experts, label) as active:
        inside = _block_of(active, label)
        if impl.converts_in_place:
            find_experts(inside, case, impl, label)
        elif inside is block:
            raise fail(label, f"the calibration context did not replace the {case.block} block")
        got = run_implementation(active, args, kwargs, label, "the model inside the context")
        compare_outputs(got, want, label, "output inside the context")
    if getattr(inside, "is_permanent", False):
        if model.block is not inside:
            raise fail(label, "a permanent wrapper did not stay in the model after the context")
        got = run_implementation(model, args, kwargs, label, "the model after the context")
        compare_outputs(got, want, label, "output after the context")
        # The block it replaced must be released: held on to, its expert weights stay alive beside the
        # wrapper's (llm-compressor's contexts once doubled the memory that way).
        replaced = weakref.ref(block)
        del block, run, before, inside, active
        gc.collect()
        if replaced() is not None:
            raise fail(label, f"the replaced {case.block} is still alive after the context (held by the wrapper or the context)")
    else:
        _unchanged(model, before, label, "after the context")

    # An exception in the body: it propagates unchanged and the model is exactly as before, permanent or not.
    fresh = build_block(case, setting, None, purpose="restore")
    model = BlockModel(fresh.block, fresh.model_config)
    before = Snapshot.of(model)
    try:
        with calibrating_model(impl, model, setting.calibrate_all_experts, label) as active:
            run_implementation(active, args, kwargs, label, "the model inside the context")
            raise _BodyError("raised by the check inside the context")
    except _BodyError:
        pass
    except (ConformanceFailure, HarnessError):
        raise
    except Exception as exc:
        raise fail(label, f"an exception in the context body came out as {type(exc).__name__}: {exc}") from exc
    else:
        raise fail(label, "the calibration context swallowed an exception raised in its body")
    _unchanged(model, before, label, "after an exception in the context body")


def check_no_side_effects(case: ArchCase, impl: Implementation, setting: Setting) -> None:
    """The original block snapshotted (its modules, tensors and hooks; for a conversion, which replaces modules
    by design, the values of its original tensors), its configs' attributes and its classes' attributes; then
    wrapped (converted) in the setting's mode and run on every shape; then each compared with its snapshot."""
    run = build_block(case, setting, None, purpose="side-effects")
    # Inputs first: building some (a decoder layer's, through its model) runs transformers code that adds to
    # torch's classes once per process, which is not the implementation's doing.
    inputs = {shape: block_inputs(case, setting, shape, purpose="side-effects") for shape in SHAPES}
    before = Snapshot.of(run.block)
    values = TensorValues.of(run.block)
    configs = ConfigState.of(**{"the block's config": run.config, "the model's config": run.model_config})
    classes = ClassState.of(classes_of(run.block))
    with calibrating_block(impl, run, setting.calibrate_all_experts, run.label) as module:
        for shape, (args, kwargs) in inputs.items():
            run_implementation(module, args, kwargs, setting.label(shape), "the wrapper")
    patched = classes.difference()
    if patched:
        classes.restore()  # for the checks after this one; the patch is this implementation's failure
    state = values.difference() if impl.converts_in_place else before.difference(run.block)
    difference = patched or configs.difference() or state
    if difference:
        raise fail(run.label, f"the original block after wrapping (converting) and running it: {difference}")


def check_partial_conversion(case: ArchCase, impl: Implementation, setting: Setting) -> None:
    """Two blocks of the block's class sharing one config (the sibling a copy with its own random weights, as
    a model's layers are); the implementation calibrates the first alone (wraps it, or converts a model holding
    only it) in the setting's mode. The sibling, left as it is, must still give its original output while the
    first calibrates and after: a patched class, a changed shared config or a global mode that only converted
    blocks understand breaks every block that was not converted."""
    run = build_block(case, setting, SHAPES[0], purpose="partial")
    sibling = copy.deepcopy(run.block, memo={id(run.config): run.config})  # shares the config, as layers do
    randomise_(sibling, setting.seed_for("partial sibling"))
    label, args, kwargs = run.label, run.args, run.kwargs
    want = run_original(sibling, args, kwargs, label, f"the sibling {case.block}")
    with calibrating_block(impl, run, setting.calibrate_all_experts, label) as module:
        run_implementation(module, args, kwargs, label, "the wrapper")
        got = run_implementation(sibling, args, kwargs, label, f"the sibling {case.block} while the other calibrates")
        compare_outputs(got, want, label, "the sibling's output while the other calibrates")
    got = run_implementation(sibling, args, kwargs, label, f"the sibling {case.block} after the other calibrated")
    compare_outputs(got, want, label, "the sibling's output after the other calibrated")
