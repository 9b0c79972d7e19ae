"""The one table from original block class to calibration mechanism; importing it registers every name.

Every name here is registered for ``CalibrationMoEBlock``, which keeps the block's own forward and replaces
only the expert dispatch. Which dispatch is decided per instance, from the installed transformers' layout
(``blocks.choose_mechanism``), in this order:

1. experts that are v5 fused experts (``@use_experts_implementation``, called ``experts(x, idx, weights)``):
   ``FusedExpertsMechanism``, whatever this table says — in 5.x most of the blocks below are that;
2. otherwise the mechanism the table gives the class name;
3. otherwise (``GENERIC``) a ``ModuleList`` of experts and a ``moe(x, idx, weights)`` method (4.x
   DeepSeek-style blocks): ``MoeMethodMechanism``; anything else is refused loudly.

A block that is not listed is still wrapped when its class's source shows a structure a generic mechanism
serves (``blocks.mechanism_for_class``, the registry's class resolver): a new transformers release's blocks are
covered the day they land. Listing one makes that explicit (and covers it where the source cannot be read).
"""

from __future__ import annotations

from moe_conformance.reference import MoECalibrationModule

from .blocks import CalibrationMoEBlock
from .capacity_routed import NllbMoeMechanism, SwitchMechanism
from .dbrx import DbrxMechanism
from .gpt_oss import GptOssDenseRoutingMechanism
from .inline_topk import (
    AriaTopKMechanism,
    BareOutputMechanism,
    ErnieTopKMechanism,
    InlineTopKMechanism,
    JitteredInputMechanism,
    NoRenormalisationMechanism,
    SparseMixerMechanism,
    TransposedFusedTopKMechanism,
)
from .llama4 import Llama4Mechanism
from .parallel_experts import ParallelExpertsMechanism

__all__ = ["BLOCK_MECHANISMS", "GENERIC", "register_generic"]

# The block's structure picks a generic mechanism: fused experts (5.x), or its moe() method (4.x).
GENERIC = None

# Original block class name -> the mechanism for a layout that is not v5 fused experts (GENERIC: none needed).
BLOCK_MECHANISMS: dict[str, type[CalibrationMoEBlock] | None] = {
    # -- DeepSeek-style routing (sigmoid or softmax, groups, correction bias, scaling) inside the block --------
    # 4.x: a ModuleList and a moe() method; 5.x: fused experts. Routers that take the block's correction bias
    # (AFMoE's expert_bias, HY-V3's and MiniMax-M2's e_score_correction_bias) get it from the block's forward.
    "AfmoeSparseMoeBlock": GENERIC,
    "DeepseekV2MoE": GENERIC,  # the 4.57 name
    "DeepseekV2Moe": GENERIC,  # the 5.x name
    "DeepseekV3MoE": GENERIC,
    "DeepseekV32MoE": GENERIC,
    "Dots1MoE": GENERIC,
    "Glm4MoeLiteMoE": GENERIC,
    "Glm4MoeMoE": GENERIC,
    "Glm4vMoeTextMoE": GENERIC,
    "GlmMoeDsaMoE": GENERIC,
    "Glm5NextTextMoE": GENERIC,
    # LongCat-Flash: identity ("zero") experts beside the routed ones; 4.57's ModuleList ends in nn.Identity
    # members, 5.x's fused gate_up_proj has rows for them, which LinearExperts turns into nn.Identity members.
    "LongcatFlashMoE": GENERIC,
    # DeepSeek-V4: a learned router or, on the first layers, a token id -> experts table (forward(x, input_ids)).
    "DeepseekV4SparseMoeBlock": GENERIC,
    # -- softmax top-k, the Mixtral / Qwen family ----------------------------------------------------------------
    # 4.57 routes and loops over a ModuleList inline: a family forward (inline_topk.py); 5.x: fused experts.
    "FlexOlmoSparseMoeBlock": InlineTopKMechanism,
    "OlmoeSparseMoeBlock": InlineTopKMechanism,
    "Qwen2MoeSparseMoeBlock": InlineTopKMechanism,
    "Qwen3MoeSparseMoeBlock": InlineTopKMechanism,
    "Qwen3NextSparseMoeBlock": InlineTopKMechanism,
    "Qwen3OmniMoeTalkerTextSparseMoeBlock": InlineTopKMechanism,
    "Qwen3OmniMoeThinkerTextSparseMoeBlock": InlineTopKMechanism,
    "MiniMaxSparseMoeBlock": JitteredInputMechanism,
    "MixtralSparseMoeBlock": JitteredInputMechanism,
    "JambaSparseMoeBlock": NoRenormalisationMechanism,
    "HunYuanMoEV1Moe": BareOutputMechanism,
    "PhimoeSparseMoeBlock": SparseMixerMechanism,
    "Ernie4_5_MoeSparseMoeBlock": ErnieTopKMechanism,
    "Qwen3VLMoeTextSparseMoeBlock": TransposedFusedTopKMechanism,  # 4.57: undecorated transposed 3-D experts
    "AriaTextMoELayer": AriaTopKMechanism,  # 4.57: grouped-GEMM experts fed sorted tokens
    # -- transformers-5-only blocks that route themselves and call experts(x, top_k_index, top_k_weights) -------
    "AXK1MoE": GENERIC,
    "AXK2MoE": GENERIC,
    "BailingHybridMoE": GENERIC,
    "BeamMoE": GENERIC,
    "Cohere2MoeSparseMoeBlock": GENERIC,
    "DeepseekOcr2TextMoe": GENERIC,
    "ExaoneMoeSparseMoEBlock": GENERIC,
    "FlintSparseMoeBlock": GENERIC,
    "HYV3MoE": GENERIC,
    "HYV4MoE": GENERIC,
    "HYV4VLMoE": GENERIC,  # hy_v4_vl's text MoE: HYV4's block with clamped SwiGLU experts
    "InklingMoE": GENERIC,  # its shared experts (3-D parameters, gated by the router) are not routed: left as they are
    "Inkling2SparseMoeBlock": GENERIC,  # softcapped SwiGLU experts, reproduced through their _apply_gate
    "Inkling2LoopSparseMoeBlock": GENERIC,  # Inkling2's block, called once per loop pass in looped layers
    "KimiLinearMoE": GENERIC,
    "Kolibri1SparseMoeBlock": GENERIC,
    "Kolibri1_1SparseMoeBlock": GENERIC,  # Kolibri-1's routing; its config validates a sliding/indexed attention layout
    "LagunaSparseMoeBlock": GENERIC,
    "LaraMiniSparseMoeBlock": GENERIC,  # softmax routing in float32, an ungated shared expert
    "Lfm2MoeSparseMoeBlock": GENERIC,  # its router takes the block's expert_bias
    "MellumSparseMoeBlock": GENERIC,
    "MiMoV2FlashMoE": GENERIC,
    "MiniCPM5MoeMoE": GENERIC,
    "MiniMaxM2SparseMoeBlock": GENERIC,
    "MiniMaxM3VLSparseMoeBlock": GENERIC,  # clamped SwiGLU experts, reproduced through their _apply_gate
    "Mistral4MoE": GENERIC,
    "MistralLarge4TextMoE": GENERIC,
    "NemotronHMoE": GENERIC,  # non-gated experts (has_gate=False), optionally in a latent space the block projects to
    "Qwen3_5MoeSparseMoeBlock": GENERIC,
    "Qwen4ExpTextSparseMoeBlock": GENERIC,
    "SolarOpenMoE": GENERIC,
    "Step3p7SparseMoeBlock": GENERIC,  # fused but undecorated: the default layout, with its own clamping _apply_gate
    "UnlimitedOcrTextMoe": GENERIC,
    # dots3_note: the text MoE, and the vision tower's sparse layers (built from per_layer_config[layer_idx]),
    # each a sigmoid router with a correction bias over standard fused experts.
    "Dots3NoteTextMoE": GENERIC,
    "Dots3NoteVisionMoE": GENERIC,
    # MuseSpark: tokens projected to a latent moe_hidden_size and normalised, then standard fused experts
    # decorated with has_post_expert_norm (each ExpertMLP ends with the one shared norm).
    "MuseSparkMoE": GENERIC,
    # Ergo: its experts class wraps the decorated dispatch (one row per route, a per-expert RMSNorm after it):
    # only the dispatch becomes per-expert Linears (decorated.py), the wrapping forward runs as it is.
    "ErgoMoE": GENERIC,
    # ZAYA: top-1 of E + 1 classes, the extra "skip" class sent to expert 0 with weight 0 (a weight-0 route: the
    # one dispatch loop skips it, routed_tokens_only does not count it); the block's own forward keeps its
    # (out, router_hidden_states) return.
    "ZayaSparseMoeBlock": GENERIC,
    # Ernie-4.5-VL: the inner per-modality block (a float32 top-k router over fused experts) is what holds and
    # routes to experts; the outer Ernie4_5_VLMoeMoeBlock's modality dispatch runs unchanged around the wrappers.
    "Ernie4_5_VLMoeSparseMoeBlock": GENERIC,
    # Gemma 4 and DiffusionGemma: no MoE block class; the decoder layer runs a dense MLP and a routed expert path
    # side by side and calls self.experts(x, idx, weights), so the layer is the block. Its attention, MLP and
    # norms are adopted as they are; the context does not descend into a replaced block.
    "Gemma4TextDecoderLayer": GENERIC,
    "DiffusionGemmaEncoderTextLayer": GENERIC,
    "DiffusionGemmaDecoderTextLayer": GENERIC,
    # -- layouts no generic mechanism serves, in some or every version -------------------------------------------
    # gpt-oss: 5.x decorated fused experts (interleaved gate/up, biases, clamped SwiGLU); 4.57 undecorated, with
    # dense router scores and keyword calls. The privacy filter (concatenated gate/up) is 5.x only.
    "GptOssMLP": GptOssDenseRoutingMechanism,
    "OpenAIPrivacyFilterMLP": GENERIC,
    "Llama4TextMoe": Llama4Mechanism,  # every version: dense expert compute on score-scaled inputs
    "DbrxFFN": DbrxMechanism,  # every version: experts stacked in 2-D tensors
    # Two ParallelExperts modules fed expert-sorted rows: granite in 4.57 (fused experts in 5.x), jetmoe always.
    "GraniteMoeMoE": ParallelExpertsMechanism,
    "GraniteMoeSharedMoE": ParallelExpertsMechanism,
    "GraniteMoeHybridMoE": ParallelExpertsMechanism,
    "JetMoeMoE": ParallelExpertsMechanism,
    "GraniteMoeSWAMoE": GENERIC,  # 5.x only: fused experts
    # Capacity-limited routers over a ModuleDict of per-expert MLPs.
    "SwitchTransformersSparseMLP": SwitchMechanism,
    "NllbMoeSparseMLP": NllbMoeMechanism,
}


def register_generic(*block_class_names: str) -> None:
    """Serve more original block classes (a package's own, say) by the generic mechanisms: they join the table
    and are registered for ``CalibrationMoEBlock``."""
    for name in block_class_names:
        BLOCK_MECHANISMS.setdefault(name, GENERIC)
        MoECalibrationModule.register_value(CalibrationMoEBlock, name)


register_generic(*BLOCK_MECHANISMS)
