"""Defuser 0.0.28: a converted Llama 4 text model feeds every expert Linear one row per token, all-zero for the
tokens not routed to that expert, so calibration statistics are gathered over rows that are mostly zeros.

Standalone: a tiny Llama4ForCausalLM built from a config (no hub), randomised, converted with convert_model
(its batched-input forward keeps transformers' dense expert-major compute); hooks count, per expert, the rows
its gate_proj receives and how many are all-zero, against the tokens actually routed to it. Exits 0.
"""

import torch
from transformers import Llama4ForCausalLM, Llama4TextConfig

from defuser import convert_model

config = Llama4TextConfig(
    vocab_size=128, hidden_size=32, intermediate_size=24, intermediate_size_mlp=64, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_local_experts=8, num_experts_per_tok=2,
    router_jitter_noise=0.0, moe_layers=[0, 2], max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)
torch.manual_seed(0)
model = Llama4ForCausalLM(config).eval()
with torch.no_grad():
    for p in model.parameters():
        p.normal_(0, 0.2) if p.dim() > 1 else p.normal_(1.0, 0.1)
convert_model(model)
experts = model.model.layers[0].feed_forward.experts
seen = {}
for e in range(config.num_local_experts):
    getattr(experts, str(e)).gate_proj.register_forward_pre_hook(lambda m, a, e=e: seen.__setitem__(e, a[0].reshape(-1, a[0].shape[-1])))
ids = torch.randint(3, 128, (2, 5), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
for e in range(3):
    rows = seen[e]
    zero = int((rows.abs().sum(-1) == 0).sum())
    print(f"expert {e}: gate_proj received {rows.shape[0]} rows for {ids.numel()} tokens, {zero} of them all-zero "
          f"({rows.shape[0] - zero} non-zero: the tokens routed to it)")
