"""GPTQModel's all-experts mode ``ExpertsRoutingBypass`` (``QuantizeConfig(moe=MoEConfig(routing=
ExpertsRoutingBypass()))``), on the structure it gets from Defuser. Its loader unfuses the experts with
``defuser.convert_model(model, cleanup_original=False)`` (``models/loader.py``); while a layer is calibrated,
its ``ModuleLooper.MoELifecycleContext`` swaps each MoE block's forward for ``hooks.forward_to_all_experts``
(``models/moe_lifecycle.py``): every expert's gate/up/down Linears called on all of the block's tokens (what
its processor's hooks record), then the block's own routed forward for the output, with the processor's hooks
paused. ``calibration_mode`` puts the same wrapper on every block with numbered experts, built from
GPTQModel's own ``GateUpDownMoELifecycleHooks`` (``W1W3W2MoELifecycleHooks`` for w1/w3/w2 experts), with the
subset of every expert projection, as the looper passes it.

The suite hooks the Linears themselves, which also run in the routed pass (GPTQModel pauses its own
statistics there, not the Linears): each sees every token, then its routed tokens again — coverage
all_tokens_once, output discard_pass.
"""

from __future__ import annotations

import contextlib
from importlib.metadata import version
from types import SimpleNamespace

from . import defuser_convert

CONTRACT_LEVELS = {"coverage": "all_tokens_once", "output": "discard_pass", "restore": "permanent"}
PROJECT = "GPTQModel"

FORM = "defuser.convert_model + ExpertsRoutingBypass (forward_to_all_experts)"

expert_linears = defuser_convert.expert_linears
coverage_note = defuser_convert.coverage_note


def require() -> None:
    from gptqmodel.models.moe_lifecycle import GateUpDownMoELifecycleHooks  # noqa: F401
    from defuser import convert_model  # noqa: F401


def project_version() -> str:
    return version("gptqmodel")


def prepare_model(model):
    """What GPTQModel's loader does to a loaded model (``_convert_model_with_defuser``)."""
    from defuser import convert_model

    from . import without_gc_collect

    with without_gc_collect():
        convert_model(model, cleanup_original=False)
    return model


def _lifecycle_hooks(expert):
    from gptqmodel.models.moe_lifecycle import GateUpDownMoELifecycleHooks, W1W3W2MoELifecycleHooks

    for hooks in (GateUpDownMoELifecycleHooks, W1W3W2MoELifecycleHooks):
        if all(hasattr(expert, name) for name in (hooks.gate_proj_name, hooks.up_proj_name, hooks.down_proj_name)):
            return hooks()
    return None


def moe_blocks(model):
    """(path, block, hooks, subset) for every module whose ``experts`` GPTQModel's hooks can replay."""
    for path, block in model.named_modules():
        experts = getattr(block, "experts", None)
        if experts is None or not hasattr(experts, "__iter__"):
            continue
        members = list(experts)
        hooks = _lifecycle_hooks(members[0]) if members else None
        if hooks is None:
            continue
        names = (hooks.gate_proj_name, hooks.up_proj_name, hooks.down_proj_name)
        subset = {f"{path}.experts.{i}.{n}": getattr(e, n) for i, e in enumerate(members) for n in names}
        yield path, block, hooks, subset


@contextlib.contextmanager
def calibration_mode(model, calibrate_all_experts: bool):
    """``MoELifecycleContext.__enter__``/``__exit__`` on every MoE block at once (the looper does one layer at a
    time); GPTQModel's hook pausing is its own statistics', so the looper stand-in pauses nothing."""
    if not calibrate_all_experts:
        yield
        return
    looper = SimpleNamespace(_set_processor_hooks_paused=lambda processor, paused: None)
    processor = SimpleNamespace()
    patched = []
    for path, block, hooks, subset in list(moe_blocks(model)):
        original_forward = block.forward

        def moe_forward_wrapper(hidden_states, _block=block, _hooks=hooks, _subset=subset, _path=path, _original=original_forward, **kwargs):
            return _hooks.forward_to_all_experts(
                moe_block=_block, hidden_states=hidden_states, processor=processor, subset=_subset,
                ordered_module_names=list(_subset), original_forward=_original, model_class=None,
                module_looper=looper, moe_block_prefix=_path, replica_module=None, **kwargs,
            )

        block.forward = moe_forward_wrapper
        patched.append(block)
    try:
        yield
    finally:
        for block in patched:
            del block.forward  # the instance attribute: the class's forward again
