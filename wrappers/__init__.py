"""Reference calibration wrappers. Importing this package registers them with ``reference.MoECalibrationModule``.

Every block below is served by ``CalibrationMoEBlock``, which keeps the block's own routing and replaces only
the expert dispatch (see ``blocks.py``). Adding an architecture whose block calls ``experts(x, idx, weights)``
(transformers v5) or ``self.moe(x, idx, weights)`` (4.x DeepSeek style) is one name in ``GENERIC_BLOCKS``.
"""

from reference import MoECalibrationModule

from . import softmax_topk  # noqa: F401  (registers its 4.x layouts)
from .blocks import CalibrationMoEBlock, FusedExpertsMechanism, MoeMethodMechanism
from .experts import ExpertMLP, LinearExperts, dispatch_to_experts

# Original block class names served by the generic wrapper, in any supported transformers version.
GENERIC_BLOCKS = (
    "AfmoeSparseMoeBlock",
    "DeepseekV3MoE",
    "Glm4MoeLiteMoE",
    "Glm4MoeMoE",
    "GlmMoeDsaMoE",
    "Qwen3MoeSparseMoeBlock",
)

for _name in GENERIC_BLOCKS:
    MoECalibrationModule.register_value(CalibrationMoEBlock, _name)

__all__ = [
    "GENERIC_BLOCKS",
    "CalibrationMoEBlock",
    "ExpertMLP",
    "FusedExpertsMechanism",
    "LinearExperts",
    "MoeMethodMechanism",
    "dispatch_to_experts",
]
