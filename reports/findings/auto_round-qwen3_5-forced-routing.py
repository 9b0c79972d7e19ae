"""auto-round 0.16.1: with AR_FORCE_MOE_ROUTING_ALL_EXPERTS=1, a Qwen3.5-MoE block's output is computed from
the forced rotating routes instead of the router's, so calibrating changes what the model computes.

Standalone: a tiny Qwen3_5MoeForCausalLM built from a config (no hub), prepared as AutoRound prepares a model
object (special_model_handler.update_module, then materialize_model_), then run with the variable off and on.
The generic experts path (every other fused-experts model) runs the forced routes as an auxiliary pass and
discards it; Qwen3.5-MoE's replacement block (LinearQwen3_5MoeSparseMoeBlock) replaces `selected_experts` and
`routing_weights` with the forced ones and returns that output. Exits 0; prints the relative differences.
"""

import os

import torch
from transformers import Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig

from auto_round.modeling.fused_moe.replace_modules import materialize_model_
from auto_round.special_model_handler import update_module

config = Qwen3_5MoeTextConfig(
    vocab_size=128, hidden_size=32, intermediate_size=64, moe_intermediate_size=24, shared_expert_intermediate_size=40,
    num_experts=8, num_experts_per_tok=2, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    head_dim=8, max_position_embeddings=64,
)
torch.manual_seed(0)
model = Qwen3_5MoeForCausalLM(config).eval()
with torch.no_grad():
    for p in model.parameters():
        p.normal_(0, 0.2)
ids = torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    want = model(input_ids=ids, use_cache=False).logits
model = update_module(model, formats=None, cleanup_original=False)
materialize_model_(model)
print(f"block after preparing: {type(model.model.layers[0].mlp).__name__}")
for flag in ("0", "1"):
    os.environ["AR_FORCE_MOE_ROUTING_ALL_EXPERTS"] = flag
    with torch.no_grad():
        got = model(input_ids=ids, use_cache=False).logits
    print(f"AR_FORCE_MOE_ROUTING_ALL_EXPERTS={flag}: logits max rel diff from the original {float((got - want).abs().max() / want.abs().max()):.1e}")
