"""GPTQModel's all-experts mode ``ExpertsRoutingBypass`` (``QuantizeConfig(moe=MoEConfig(routing=
ExpertsRoutingBypass()))``), on the structure it gets from Defuser. Its loader unfuses the experts with
``defuser.convert_model(model, cleanup_original=False)`` (``models/loader.py``); while a layer is calibrated,
its ``ModuleLooper.MoELifecycleContext`` swaps each MoE block's forward for ``hooks.forward_to_all_experts``
(``models/moe_lifecycle.py``): every expert's gate/up/down Linears called on all of the block's tokens (what
its processor's hooks record), then the block's own routed forward for the output, with the processor's hooks
paused. GPTQModel drives a model through its definition for the model type (``models.auto.MODEL_MAP``; its
loader refuses a type it lacks, so ``prepare_model`` leaves such a model alone: uncovered), and the bypass needs
the definition's ``moe_lifecycle_hooks`` (without them the looper warns and routes as usual).
``calibration_mode`` puts the looper's wrapper on every block with experts, with those hooks and the subset of
every expert projection the hooks name and the expert has, as the looper passes it.

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
SPEC = "gptqmodel"
PROJECT = "GPTQModel"

FORM = "defuser.convert_model + ExpertsRoutingBypass (forward_to_all_experts)"

expert_linears = defuser_convert.expert_linears


def require() -> None:
    from defuser import convert_model  # noqa: F401
    from gptqmodel.models.auto import MODEL_MAP  # noqa: F401


def definition(model):
    """GPTQModel's model definition for this model's type (``check_and_get_model_definition``), or None."""
    from gptqmodel.models.auto import MODEL_MAP

    return MODEL_MAP.get(getattr(getattr(model, "config", None), "model_type", None))


def coverage_note(case) -> str | None:
    from gptqmodel.models.auto import MODEL_MAP

    from . import registered_parent

    return registered_parent(case, MODEL_MAP, PROJECT)


def project_version() -> str:
    return version("gptqmodel")


def prepare_model(model):
    """What GPTQModel's loader does to a loaded model of a type it defines (``_convert_model_with_defuser``)."""
    from defuser import convert_model

    from . import without_gc_collect

    if definition(model) is None:
        return model  # GPTQModel refuses to load this model type: nothing is converted or calibrated
    with without_gc_collect():
        convert_model(model, cleanup_original=False)
    return model


def moe_blocks(model, hooks):
    """(path, block, subset) for every module with ``experts``: the subset holds each expert projection the
    hooks name (``gate_proj_name``, ...) that the expert has, as the looper's subsets hold what the model has."""
    names = (hooks.gate_proj_name, hooks.up_proj_name, hooks.down_proj_name)
    for path, block in model.named_modules():
        experts = getattr(block, "experts", None)
        if experts is None or not hasattr(experts, "__iter__"):
            continue
        subset = {f"{path}.experts.{i}.{n}": getattr(e, n) for i, e in enumerate(experts) for n in names if hasattr(e, n)}
        if subset:
            yield path, block, subset


@contextlib.contextmanager
def calibration_mode(model, calibrate_all_experts: bool):
    """``MoELifecycleContext.__enter__``/``__exit__`` on every MoE block at once (the looper does one layer at a
    time); GPTQModel's hook pausing is its own statistics', so the looper stand-in pauses nothing."""
    hooks = getattr(definition(model), "moe_lifecycle_hooks", None)
    if not calibrate_all_experts or hooks is None:  # no hooks: the looper warns and runs the routed forward
        yield
        return
    looper = SimpleNamespace(_set_processor_hooks_paused=lambda processor, paused: None)
    processor = SimpleNamespace()
    patched = []
    for path, block, subset in list(moe_blocks(model, hooks)):
        original_forward = block.forward

        def moe_forward_wrapper(hidden_states, _block=block, _subset=subset, _path=path, _original=original_forward, **kwargs):
            return hooks.forward_to_all_experts(
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
