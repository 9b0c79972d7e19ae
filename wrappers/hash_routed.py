"""DeepSeek-V4: standard fused experts, routed by a learned top-k router or, on the first layers, by a fixed
token-id -> experts table (``forward(hidden, input_ids)``). The block's own forward does either; the generic
``FusedExpertsMechanism`` serves it."""

from .blocks import register_generic

register_generic("DeepseekV4SparseMoeBlock")
