"""dots3_note's vision MoE: standard fused experts behind a sigmoid router with a correction bias.

``Dots3NoteVisionMoE`` (the sparse layers of the vision tower, built from ``per_layer_config[layer_idx]``)
passes its ``e_score_correction_bias`` buffer to the router (sigmoid, top-k on score + bias, renormalise,
x ``router_scaling_factor``) and calls ``experts(x[T, H], idx, weights)``: the generic contract. The text MoE
(``Dots3NoteTextMoE``) is registered with the other standard v5 blocks.
"""

from .blocks import register_generic

register_generic("Dots3NoteVisionMoE")
