"""Architectures that exist only in transformers 5.x and route inside the block, then call fused experts as
``experts(hidden[T, H], top_k_index, top_k_weights)``: all served by the generic wrapper's
``FusedExpertsMechanism``. Routing (grouped sigmoid, softmax, correction biases held by the block or the
router, scaling before or after the experts) stays the block's own, so none of it is repeated here."""

from .blocks import register_generic

register_generic(
    "AXK1MoE",
    "AXK2MoE",
    "BailingHybridMoE",  # 5.23 only
    "BeamMoE",  # 5.23 only
    "Cohere2MoeSparseMoeBlock",
    "DeepseekOcr2TextMoe",
    "DeepseekV32MoE",
    "Dots3NoteTextMoE",  # 5.23 only; the text MoE (the vision tower has its own MoE class)
    "ExaoneMoeSparseMoEBlock",
    "FlintSparseMoeBlock",  # 5.23 only
    "Glm5NextTextMoE",
    "HYV3MoE",  # its router takes the block's e_score_correction_bias, which the block's forward passes
    "HYV4MoE",
    "HYV4VLMoE",  # 5.24 only; the text MoE of hy_v4_vl, HYV4's block with clamped SwiGLU experts
    "InklingMoE",  # the shared experts (3-D parameters, gated by the router) are not routed: left as they are
    "Inkling2SparseMoeBlock",  # 5.23 only; softcapped SwiGLU experts, reproduced through their _apply_gate
    "Inkling2LoopSparseMoeBlock",  # 5.24 only; Inkling2's block, called once per loop pass in looped layers
    "KimiLinearMoE",
    "Kolibri1SparseMoeBlock",  # 5.23 only
    "LagunaSparseMoeBlock",
    "LaraMiniSparseMoeBlock",  # 5.24 only; softmax routing in float32, an ungated shared expert
    "Lfm2MoeSparseMoeBlock",  # its router takes the block's expert_bias
    "MellumSparseMoeBlock",
    "MiMoV2FlashMoE",
    "MiniMaxM2SparseMoeBlock",  # its router takes the block's e_score_correction_bias
    "MiniMaxM3VLSparseMoeBlock",  # clamped SwiGLU experts, reproduced through their _apply_gate
    "Mistral4MoE",
    "MistralLarge4TextMoE",  # 5.23 only
    "NemotronHMoE",  # non-gated experts (has_gate=False), optionally in a latent space the block projects to
    "Qwen3_5MoeSparseMoeBlock",
    "Qwen4ExpTextSparseMoeBlock",
    "SolarOpenMoE",
    "Step3p7SparseMoeBlock",  # fused but undecorated: the default layout, with its own clamping _apply_gate
    "UnlimitedOcrTextMoe",  # 5.23 only
)
