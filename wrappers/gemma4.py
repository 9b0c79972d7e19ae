"""Gemma 4 and DiffusionGemma: the router and experts hang off the decoder layer itself.

There is no MoE block class. ``Gemma4TextDecoderLayer`` (and DiffusionGemma's encoder and decoder text layers,
copies of it) runs a dense MLP and a routed expert path in parallel: the router reads the residual stream
(RMSNorm without scale, x ``scale`` x H^-0.5, linear, softmax, top-k, renormalise, x ``per_expert_scale`` of
the chosen experts), the experts read ``pre_feedforward_layernorm_2(residual)``, and the layer calls
``self.experts(x[T, H], top_k_index, top_k_weights)`` on fused ``@use_experts_implementation`` experts.

That is the generic contract, so the decoder layer is the block: ``FusedExpertsMechanism`` keeps the layer's
own forward (attention, dense MLP, norms, routing) and replaces only ``experts`` with per-expert Linears. The
wrapper adopts the attention and MLP modules as they are; the calibration context does not descend into a
replaced block, and none of those modules is an MoE block.
"""

from .blocks import register_generic

register_generic("Gemma4TextDecoderLayer", "DiffusionGemmaEncoderTextLayer", "DiffusionGemmaDecoderTextLayer")
