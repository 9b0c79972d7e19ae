"""llm-compressor 0.12 and later: ``linearize_moe(model)`` replaces, in place and for good, every experts module
its own detector (``get_non_linearized_moes``: a ``@use_experts_implementation`` fused experts class, or one in
``LinearExperts2D``'s registry) finds with a ``LinearExperts2D`` (one gate/up/down ``nn.Linear`` per expert,
weights copied); ``moe_calibration_context()`` sets a module-global flag under which every expert runs on every
token and only the routed rows are kept. This is what ``oneshot`` does (it linearizes, then enters the context
when ``moe_calibrate_all_experts``).
"""

from __future__ import annotations

import contextlib
from importlib.metadata import version

CONTRACT_LEVELS = {"coverage": "all_tokens_once", "output": "exact", "restore": "permanent"}
SPEC = "llmcompressor"
PROJECT = "llm-compressor"

FORM = "linearize_moe + moe_calibration_context flag, 0.12 and later"


def registry() -> tuple[str, str] | None:
    """llm-compressor before 0.12 (no ``linearize_moe``) is a registry: its ``MoECalibrationModule`` wrappers
    (registered by importing ``llmcompressor.modeling``) and its ``moe_calibration_context``."""
    import importlib.util

    try:
        has_linearize = importlib.util.find_spec("llmcompressor.modeling.moe.linearize") is not None
    except ImportError:  # llmcompressor.modeling.moe is absent (0.11)
        has_linearize = False
    if has_linearize or importlib.util.find_spec("llmcompressor") is None:
        return None
    return "llmcompressor.modeling", "llmcompressor.modeling.moe_context"


def require() -> None:
    from llmcompressor.modeling.moe import context, linearize  # noqa: F401


def project_version() -> str:
    return version("llmcompressor")


def prepare_model(model):
    from llmcompressor.modeling.moe.linearize import linearize_moe

    linearize_moe(model)
    return model


def calibration_mode(model, calibrate_all_experts: bool):
    if not calibrate_all_experts:
        return contextlib.nullcontext()
    from llmcompressor.modeling.moe.context import moe_calibration_context

    return moe_calibration_context()
