"""GPTQModel's all-experts mode ``ExpertsRoutingOverride(num_experts_per_tok="all")`` on Defuser's structure
(``gptqmodel_bypass.prepare_model``). GPTQModel's looper runs each layer's calibration forward inside
``MoERoutingOverrideContext`` (``set_moe_topk``: every router's top-k field raised to its expert count, then
``restore_moe_topk``) and takes the layer's output from a separate replay forward without the override
(``forward_executor``: "replay forwards opt out of quant-time MoE overrides"). "all" is the model's expert count
(``get_num_experts(config)`` of the definition's ``dynamic_expert_index``); a definition without one gets no
override. ``calibration_mode`` makes each MoE block do both per call: the overridden forward, its output dropped,
then the routed one — coverage all_tokens_once, output discard_pass.
"""

from __future__ import annotations

import contextlib
import copy

from . import defuser_convert, gptqmodel_bypass

CONTRACT_LEVELS = {"coverage": "all_tokens_once", "output": "discard_pass", "restore": "permanent"}
SPEC = "gptqmodel_override"
PROJECT = gptqmodel_bypass.PROJECT

FORM = 'defuser.convert_model + ExpertsRoutingOverride(num_experts_per_tok="all") (set_moe_topk), replayed routed'

prepare_model = gptqmodel_bypass.prepare_model
project_version = gptqmodel_bypass.project_version
expert_linears = defuser_convert.expert_linears
coverage_note = gptqmodel_bypass.coverage_note


def require() -> None:
    from gptqmodel.utils.model import restore_moe_topk, set_moe_topk  # noqa: F401

    gptqmodel_bypass.require()


def _own_cache(value):
    """A transformers KV cache deep-copied (the dropped forward writes its copy), anything else as it is."""
    from transformers.cache_utils import Cache

    return copy.deepcopy(value) if isinstance(value, Cache) else value


@contextlib.contextmanager
def calibration_mode(model, calibrate_all_experts: bool):
    defined = gptqmodel_bypass.definition(model)
    if not calibrate_all_experts or getattr(defined, "dynamic_expert_index", None) is None:  # the looper's condition
        yield
        return
    from gptqmodel.utils.model import restore_moe_topk, set_moe_topk

    every = defined.get_num_experts(model.config)  # routing_override(num_experts) resolves "all" to this

    patched = []
    for block in [m for m in model.modules() if getattr(m, "experts", None) is not None]:  # each MoE block
        original_forward = block.forward

        def overridden_then_replayed(*args, _block=block, _original=original_forward, **kwargs):
            state = set_moe_topk(_block, every)  # clamped to each router's own expert count
            try:
                # GPTQModel's two forwards of a layer each run on its cached inputs; where the module with the
                # experts is a decoder layer (Gemma 4's family), the dropped one must not write the model's KV cache
                _original(*map(_own_cache, args), **{k: _own_cache(v) for k, v in kwargs.items()})
            finally:
                restore_moe_topk(state)
            return _original(*args, **kwargs)

        block.forward = overridden_then_replayed
        patched.append(block)
    try:
        yield
    finally:
        for block in patched:
            del block.forward
