"""Reference calibration framework (llm-compressor 0.11 compatible). ``import moe_conformance.wrappers`` registers the wrappers."""

from .calibration import (
    MoECalibrationModule,
    calibration_context,
    looks_like_moe_block,
    moe_calibration_context,
    standardize_lookup_name,
)

__all__ = [
    "MoECalibrationModule",
    "calibration_context",
    "looks_like_moe_block",
    "moe_calibration_context",
    "standardize_lookup_name",
]
