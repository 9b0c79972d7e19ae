"""Checks of a wrapper's lifecycle: what the implementation's calibration context leaves behind (after a normal
exit and after an exception in its body), and that building and running a wrapper leaves the original block
untouched."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from torch import nn

from .cases import SHAPES, ArchCase
from .impl import Implementation
from .setting import Setting, block_inputs, build_block
from .snapshots import Snapshot
from .verdicts import ConformanceFailure, HarnessError, compare_outputs, fail, implementation_raised, run_implementation, run_original, wrap

__all__ = ["check_no_side_effects", "check_restore_semantics"]


class _Holder(nn.Module):
    """The smallest model a calibration context accepts: the block at ``.block`` and a ``.config``."""

    def __init__(self, block: nn.Module, config: Any):
        super().__init__()
        self.block = block
        self.config = config

    def forward(self, *args, **kwargs):
        return self.block(*args, **kwargs)


class _BodyError(Exception):
    """Raised inside the calibration context to test its exception safety."""


def _unchanged(model: nn.Module, before: Snapshot, label: str, when: str) -> None:
    difference = before.difference(model)
    if difference:
        raise fail(label, f"{when}: {difference}")


def check_restore_semantics(case: ArchCase, impl: Implementation, setting: Setting) -> None:
    """A block in a minimal model, snapshotted, run through the implementation's context in the setting's mode:
    inside, replaced and matching; after it, the snapshot again (non-permanent), or the wrapper still there,
    still matching, with the replaced block collected (permanent). Then a fresh block whose context body
    raises: the exception must come out unchanged and the model be as snapshotted."""
    # The same block twice (no shape in its seed), for the normal exit and for the exception in the body.
    run = build_block(case, setting, None, purpose="restore")
    args, kwargs = block_inputs(case, setting, SHAPES[0], purpose="restore")
    label, block = setting.label(SHAPES[0]), run.block
    want = run_original(block, args, kwargs, label, f"the original {case.block}")
    model = _Holder(block, run.config)
    before = Snapshot.of(model)
    with implementation_raised(label, "the calibration context"):
        with impl.calibration_context(model, calibrate_all_experts=setting.calibrate_all_experts):
            inside = model.block
            if inside is block:
                raise fail(label, f"the calibration context did not replace the {case.block} block")
            got = run_implementation(model, args, kwargs, label, "the model inside the context")
            compare_outputs(got, want, label, "output inside the context")
    if getattr(inside, "is_permanent", False):
        if model.block is not inside:
            raise fail(label, "a permanent wrapper did not stay in the model after the context")
        got = run_implementation(model, args, kwargs, label, "the model after the context")
        compare_outputs(got, want, label, "output after the context")
        # The block it replaced must be released: held on to, its expert weights stay alive beside the
        # wrapper's (llm-compressor's contexts once doubled the memory that way).
        replaced = weakref.ref(block)
        del block, run, before, inside
        gc.collect()
        if replaced() is not None:
            raise fail(label, f"the replaced {case.block} is still alive after the context (held by the wrapper or the context)")
    else:
        _unchanged(model, before, label, "after the context")

    # An exception in the body: it propagates unchanged and the model is exactly as before, permanent or not.
    fresh = build_block(case, setting, None, purpose="restore")
    model = _Holder(fresh.block, fresh.config)
    before = Snapshot.of(model)
    try:
        with impl.calibration_context(model, calibrate_all_experts=setting.calibrate_all_experts):
            run_implementation(model, args, kwargs, label, "the model inside the context")
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
    """The original block snapshotted, wrapped in the setting's mode and the wrapper run on every shape; then
    the original compared with its snapshot."""
    run = build_block(case, setting, None, purpose="side-effects")
    before = Snapshot.of(run.block)
    wrapper = wrap(impl, run.block, run.config, setting.calibrate_all_experts, run.label)
    for shape in SHAPES:
        args, kwargs = block_inputs(case, setting, shape, purpose="side-effects")
        run_implementation(wrapper, args, kwargs, setting.label(shape), "the wrapper")
    _unchanged(run.block, before, run.label, "the original block after wrapping and running the wrapper")
