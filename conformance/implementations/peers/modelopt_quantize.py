"""NVIDIA ModelOpt: ``mtq.quantize(model, config, forward_loop)`` split where ModelOpt itself splits it. First
the conversion (``apply_mode(model, [("quantize", config)])``, what ``quantize`` does before calibrating): its
``QuantModuleRegistry`` replaces modules in place, and detects MoE structurally — a block with ``gate`` and
``experts`` becomes ``_QuantSparseSequentialMoe``, a transformers v5 fused experts module ``_QuantFusedExperts``
(forced to the eager experts implementation). Then calibration, as ``calibrate``/``max_calibrate`` run it
around the user's ``forward_loop``: the algorithm's ``moe_calib_experts_ratio`` set on every MoE block
(``1.0`` for all experts; unset routes as the model does), ``enable_stats_collection`` (quantization off,
calibrators collecting) before the forwards; after them, collection stops (ModelOpt's
``finish_stats_collection``, which then loads the amax and switches fake quantization on, is the quantized
model's business, not calibration's).

``_QuantFusedExperts`` keeps the 3-D weights fused by design: it intercepts ``F.linear`` inside the experts'
forward, recovers the expert from the weight view's storage offset, and runs one input quantizer shared by all
experts (its calibrator sees every expert's rows) and one weight quantizer per expert. There is no per-expert
``nn.Linear``, so the adapter declares experts ``fused_observed`` and ``expert_linears`` gives, per expert and
projection, a tap module called with the rows ModelOpt's input quantizer receives while it computes that
expert (``_current_expert_idx``, the index ModelOpt itself picks the weight quantizer by): coverage is judged
on the calls ModelOpt's calibrators really see. The all-experts mode runs a discarded forward with
``gate.top_k`` raised to ``round(num_experts * ratio)``, then the routed forward.
"""

from __future__ import annotations

import contextlib
import weakref
from importlib.metadata import version

from torch import nn

CONTRACT_LEVELS = {"coverage": "all_tokens_once", "output": "discard_pass", "experts": "fused_observed", "restore": "permanent"}
SPEC = "modelopt"
PROJECT = "ModelOpt"

FORM = "apply_mode quantize (FP8_DEFAULT_CFG) + max calibration, moe_calib_experts_ratio=1.0"

ALL_EXPERTS_RATIO = 1.0  # the algorithm field's value for every expert (its hf_ptq example defaults to 0.25)


def require() -> None:
    import modelopt.torch.quantization  # noqa: F401


def project_version() -> str:
    return version("nvidia-modelopt")


def _config() -> dict:
    import modelopt.torch.quantization as mtq

    return {"quant_cfg": mtq.FP8_DEFAULT_CFG["quant_cfg"], "algorithm": {"method": "max", "moe_calib_experts_ratio": ALL_EXPERTS_RATIO}}


def prepare_model(model):
    """What ``mtq.quantize`` does before it calibrates (``model_quant.quantize``)."""
    from modelopt.torch.opt.conversion import apply_mode
    from modelopt.torch.quantization.mode import QuantizeModeRegistry

    return apply_mode(model, mode=[("quantize", _config())], registry=QuantizeModeRegistry)


@contextlib.contextmanager
def calibration_mode(model, calibrate_all_experts: bool):
    """``mode.wrapped_calib_func`` (the ratio on every module that has the attribute) and ``max_calibrate``'s
    steps around ``forward_loop(model)``; the body of this context is the forward loop."""
    from modelopt.torch.quantization.model_calib import enable_stats_collection
    from modelopt.torch.quantization.nn import TensorQuantizer

    ratio = ALL_EXPERTS_RATIO if calibrate_all_experts else None
    for module in model.modules():
        if hasattr(module, "_moe_calib_experts_ratio"):
            module._moe_calib_experts_ratio = ratio
    enable_stats_collection(model)
    try:
        yield
    finally:
        # Calibration over: the calibrators keep what they collected. ``finish_stats_collection`` (amax loaded,
        # fake quantization switched on) is the quantization that follows calibration, not judged here: it
        # changes the model's outputs on purpose.
        for module in model.modules():
            if isinstance(module, TensorQuantizer) and module._if_calib:
                module.disable_calib()


class ExpertRowsTap(nn.Module):
    """Called with the rows one expert's projection is computed on; computes nothing (the suite hooks it)."""

    def forward(self, rows):
        return None


# _QuantFusedExperts -> per expert {projection: tap}; the taps are kept outside the model (no submodule added)
_taps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tapped(experts) -> list[dict[str, nn.Module]]:
    """Taps for a ``_QuantFusedExperts``, fed by pre-hooks on its two input quantizers: the first projection's is
    called after ModelOpt set ``_current_expert_idx`` from the weight's storage offset, the down projection's
    reuses it (``functionals_to_replace``)."""
    if experts in _taps:
        return _taps[experts]
    first = experts._first_proj_attr  # gate_up_proj, or up_proj for non-gated experts (NemotronH)
    taps = [{first: ExpertRowsTap(), "down_proj": ExpertRowsTap()} for _ in range(experts.num_experts)]
    for projection in (first, "down_proj"):
        quantizer = getattr(experts, f"{projection}_input_quantizer")

        def feed(module, args, _projection=projection, _experts=experts, _taps_of=taps):
            _taps_of[_experts._current_expert_idx][_projection](args[0].reshape(-1, args[0].shape[-1]))

        quantizer.register_forward_pre_hook(feed)
    _taps[experts] = taps
    return taps


def expert_linears(block):
    """Per expert, its projections' taps, for a block whose experts ModelOpt converted to ``_QuantFusedExperts``;
    None elsewhere (the suite then looks for per-expert nn.Linear, as ModelOpt's sequential experts have)."""
    from modelopt.torch.quantization.plugins.huggingface import _QuantFusedExperts

    fused = [m for m in block.modules() if isinstance(m, _QuantFusedExperts)]
    return _tapped(fused[0]) if len(fused) == 1 else None
