"""auto-round 0.16.1: a partial conversion leaves the unconverted MoE layers unable to run, and converting one
model patches the transformers experts class for the whole process (Defuser adapted this code from auto-round;
see defuser-partial-conversion.py).

Standalone: a tiny 2-layer Qwen3-MoE built from a config (no hub). `prepare_model_for_moe_quantization(model,
skip_prefixes=[...])` (public; auto-round itself skips prefixes for qwen3_omni_moe's talker) unfuses every
experts module outside the skipped prefix, then sets `model.config._experts_implementation` (its per-expert
forward) on the config every layer shares, so the skipped, still-fused layer dispatches to the per-expert
forward and raises. The class-attribute lines show `__getitem__`, `__len__` and `__iter__` added to
`Qwen3MoeExperts` itself. Exits 0; prints what it found.
"""

import torch
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeExperts

from auto_round.modeling.fused_moe.moe_experts_interface import prepare_model_for_moe_quantization


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
prepare_model_for_moe_quantization(model, skip_prefixes=["model.layers.1."])
unfused = [i for i, layer in enumerate(model.model.layers) if hasattr(layer.mlp.experts, "0")]
print(f"skip_prefixes=[model.layers.1.]: unfused layers {unfused}; config._experts_implementation = {model.config._experts_implementation!r}")
try:
    with torch.no_grad():
        got = model(input_ids=ids).logits
    print(f"forward after the partial conversion: max rel diff {float((got - want).abs().max() / want.abs().max()):.1e}")
except AttributeError as exc:
    print(f"forward after the partial conversion raised AttributeError: {exc}")
after = {name for name in ("__getitem__", "__len__", "__iter__") if name in vars(Qwen3MoeExperts)}
print(f"Qwen3MoeExperts class attributes before converting: {sorted(before)}; after: {sorted(after)}")
