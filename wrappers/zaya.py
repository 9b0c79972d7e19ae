"""ZAYA (transformers 5.x): served by the generic wrapper.

``ZayaSparseMoeBlock`` calls standard fused experts as ``experts(x, top_k_index, top_k_weights)``; its router
(4 outputs: logits, weights, indices and the router state the next layer's router reads) picks top-1 of E + 1
classes, the extra "skip" class being sent to expert 0 with weight 0, which the one dispatch loop reproduces
as is. The block's own forward keeps its ``(out, router_hidden_states)`` return.
"""

from .blocks import register_generic

register_generic("ZayaSparseMoeBlock")
