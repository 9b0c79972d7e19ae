"""Architectures that exist since transformers 4.57 and route the standard way: every one is served by the
generic wrapper. In 5.x their blocks call fused ``@use_experts_implementation`` experts as
``experts(x, idx, w)`` (``FusedExpertsMechanism``); in 4.57 they hold a ``ModuleList`` of experts (or, for
Qwen3-VL-MoE and Aria, undecorated 3-D experts) and either route inline (the family forwards of
``legacy_inline_topk.py``) or call ``self.moe(x, idx, w)`` (``MoeMethodMechanism``)."""

from .blocks import register_generic

register_generic(
    "MixtralSparseMoeBlock",
    "Qwen2MoeSparseMoeBlock",
    "Qwen3NextSparseMoeBlock",
    "OlmoeSparseMoeBlock",
    "FlexOlmoSparseMoeBlock",
    "MiniMaxSparseMoeBlock",
    "PhimoeSparseMoeBlock",
    "JambaSparseMoeBlock",
    "Qwen3OmniMoeThinkerTextSparseMoeBlock",
    "Qwen3OmniMoeTalkerTextSparseMoeBlock",
    "Ernie4_5_MoeSparseMoeBlock",
    "HunYuanMoEV1Moe",
    "DeepseekV2MoE",  # 4.57 name: moe() method
    "DeepseekV2Moe",  # 5.x name
    "Dots1MoE",  # 4.57: moe() method
    "Glm4vMoeTextMoE",  # 4.57: moe() method
    "Qwen3VLMoeTextSparseMoeBlock",
    "AriaTextMoELayer",
)
