"""The first six architectures (GLM-4.7, GLM-4.7-Flash, GLM-5, AFMoE/Trinity, DeepSeek-V3, Qwen3-MoE): all
served by the generic wrapper, in transformers 4.57 (ModuleList experts) and 5.x (fused experts) alike."""

from .blocks import register_generic

register_generic(
    "AfmoeSparseMoeBlock",  # 5.x only; its router takes the block's expert_bias, which the block's forward passes
    "DeepseekV3MoE",
    "Glm4MoeLiteMoE",  # 5.x only
    "Glm4MoeMoE",
    "GlmMoeDsaMoE",  # 5.x only
    "Qwen3MoeSparseMoeBlock",  # 4.57: legacy_inline_topk.py's family forward; 5.x: fused experts
)
