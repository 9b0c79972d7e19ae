"""MuseSpark: standard fused experts in a latent width, with a post-expert norm.

``MuseSparkMoE`` projects the tokens down to ``moe_hidden_size`` (``pre_expert_proj`` + a centred RMSNorm),
routes them with sigmoid scores + correction bias (renormalised, x ``routed_scaling_factor``), and calls
``experts(x[T, moe_hidden], idx, weights)``; the experts are decorated with ``has_post_expert_norm=True`` and
normalise each expert's output before the routing weight. ``LinearExperts`` unpacks that layout (each
``ExpertMLP`` ends with the one shared norm), so the generic mechanism serves the block.
"""

from .blocks import register_generic

register_generic("MuseSparkMoE")
