"""Ernie-4.5-VL-MoE (transformers 5.x): the inner per-modality block, served by the generic wrapper.

The decoder layer's ``Ernie4_5_VLMoeMoeBlock`` holds no experts of its own: it sends text tokens to
``text_moe`` and image/video tokens to ``vision_moe`` (two ``Ernie4_5_VLMoeSparseMoeBlock``, each a float32
top-k router over standard fused experts) and adds the shared experts. The inner class is the registry key:
it is what holds and routes to experts (the class the discovery scan finds), one registration serves both
modalities, and the outer block's modality dispatch, written with in-place masked assignments, runs unchanged
around the wrappers instead of being re-implemented.
"""

from .blocks import register_generic

register_generic("Ernie4_5_VLMoeSparseMoeBlock")
