"""Defuser 0.0.28: a partial conversion leaves the unconverted MoE layers unable to run, and converting one
model patches the transformers experts class for the whole process.

Standalone: a tiny 2-layer Qwen3-MoE built from a config (no hub). `convert_model(model, filter=...)` (the
documented way to convert some layers) unfuses the experts of the selected layer only, but sets
`model.config._experts_implementation = "linear_loop"` on the config every layer shares, so the layer left
fused now dispatches to the per-expert loop and raises. The class-attribute lines show `__getitem__`,
`__len__` and `__iter__` added to `Qwen3MoeExperts` itself (every instance, converted or not, in every model
of the process). Exits 0; prints what it found.
"""

import torch
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeExperts

from defuser import convert_model


def tiny():
    config = Qwen3MoeConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_experts=4,
        num_experts_per_tok=2, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
    )
    torch.manual_seed(0)
    model = Qwen3MoeForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


before = {name for name in ("__getitem__", "__len__", "__iter__") if name in vars(Qwen3MoeExperts)}
model = tiny()
ids = torch.randint(0, 64, (1, 5), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    want = model(input_ids=ids).logits
convert_model(model, filter=[r"layers\.0\."])
unfused = [i for i, layer in enumerate(model.model.layers) if hasattr(layer.mlp.experts, "0")]
print(f"filter=layers.0: unfused layers {unfused}; config._experts_implementation = {model.config._experts_implementation!r}")
try:
    with torch.no_grad():
        got = model(input_ids=ids).logits
    print(f"forward after the partial conversion: max rel diff {float((got - want).abs().max() / want.abs().max()):.1e}")
except AttributeError as exc:
    print(f"forward after the partial conversion raised AttributeError: {exc}")
after = {name for name in ("__getitem__", "__len__", "__iter__") if name in vars(Qwen3MoeExperts)}
print(f"Qwen3MoeExperts class attributes before converting: {sorted(before)}; after: {sorted(after)}")
