"""Defuser 0.0.28 (transformers 5.x): NLLB-MoE's experts, kept as they are, calibrate expert 0 on rows of weight 0.

5.x's NllbMoeExperts one-hot encodes the router's 0/1 top-1 mask [T, E] as if it held expert ids, with the
combined probabilities [T, E] as the weights: every slot whose mask is 0 goes to expert 0, almost all of them with
weight 0 (only the second choice of each token carries a weight there). The output is right (0 x row adds
nothing), but expert 0's Linears receive about E rows per token. Defuser's convert_model leaves NllbMoeSparseMLP's
experts (already one module per expert) as they are, so a quantizer calibrating through it gathers expert 0's
statistics over tokens it never serves. Standalone: a tiny NllbMoeModel built from a config (no hub), converted,
one encoder MoE layer hooked. Exits 0.
"""

import torch
from transformers import NllbMoeConfig, NllbMoeModel

from defuser import convert_model

config = NllbMoeConfig(
    vocab_size=128, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
    encoder_ffn_dim=24, decoder_ffn_dim=24, encoder_sparse_step=2, decoder_sparse_step=2, num_experts=8,
    expert_capacity=64, second_expert_policy="all", max_position_embeddings=64, pad_token_id=0,
)
torch.manual_seed(0)
model = NllbMoeModel(config).eval()
convert_model(model)
block = next(m for m in model.modules() if type(m).__name__ == "NllbMoeSparseMLP")
calls = {}
block.experts.register_forward_pre_hook(lambda m, a: calls.update(mask=a[1].clone(), weights=a[2].clone()))
rows = {}
for e in range(config.num_experts):
    block.experts[f"expert_{e}"].fc1.register_forward_pre_hook(
        lambda m, a, e=e: rows.__setitem__(e, rows.get(e, 0) + a[0].reshape(-1, a[0].shape[-1]).shape[0])
    )
ids = torch.randint(3, 128, (2, 5), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    model(input_ids=ids, decoder_input_ids=ids)
mask, weights = calls["mask"], calls["weights"]
tokens = mask.shape[0]
for e in range(2):
    served = int(((mask == e) & (weights != 0)).any(-1).sum())
    print(f"expert {e}: fc1 received {rows.get(e, 0)} rows for {tokens} tokens; tokens with a non-zero weight for it: {served}")
