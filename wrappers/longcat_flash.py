"""LongCat-Flash: routed experts plus identity ("zero") experts, which pass a token through scaled by its
routing weight. Served by the generic mechanisms: 4.57 holds a ``ModuleList`` ending in ``nn.Identity``
members and a ``moe(...)`` method (``MoeMethodMechanism``); 5.x holds fused experts whose ``gate_up_proj`` has
rows for the zero experts too, which ``LinearExperts`` turns into ``nn.Identity`` members."""

from .blocks import register_generic

register_generic("LongcatFlashMoE")
