"""Defuser 0.0.28: GPT-OSS's interleaved gate/up rows are split into halves, so the unfused `gate_proj` and
`up_proj` Linears each hold a mix of gate and up rows.

Standalone: a tiny GptOssForCausalLM built from a config (no hub). GptOssExperts stores `gate_up_proj` as
[E, H, 2I] with gate and up *interleaved* (columns 0, 2, 4, ... are gate; 1, 3, 5, ... are up). Defuser's
generic unfuse chunks that dimension into two halves. The output still matches (its loop re-concatenates the
halves and the experts class's `_apply_gate` de-interleaves them), but the Linears named gate_proj/up_proj do
not hold the gate and up projections: a quantizer calibrating them, and a checkpoint saved with these names,
get mixed rows. Exits 0; prints how many rows of each Linear equal the true gate / up rows.
"""

import torch
from transformers import GptOssConfig, GptOssForCausalLM

from defuser import convert_model

config = GptOssConfig(
    vocab_size=128, hidden_size=32, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=8, num_local_experts=8, num_experts_per_tok=2,
    max_position_embeddings=64, layer_types=["full_attention", "full_attention"],
)
torch.manual_seed(0)
model = GptOssForCausalLM(config).eval()
with torch.no_grad():
    for p in model.parameters():
        p.normal_(0, 0.2)
experts = model.model.layers[0].mlp.experts
gate_true = experts.gate_up_proj[0, :, 0::2].T.detach().clone()  # [I, H], as transformers reads it
up_true = experts.gate_up_proj[0, :, 1::2].T.detach().clone()
ids = torch.randint(0, 128, (1, 5), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    want = model(input_ids=ids).logits
convert_model(model)
expert0 = getattr(model.model.layers[0].mlp.experts, "0")
with torch.no_grad():
    got = model(input_ids=ids).logits
print(f"output after convert_model: max rel diff {float((got - want).abs().max() / want.abs().max()):.1e} (the forward is right)")
for name, linear in (("gate_proj", expert0.gate_proj), ("up_proj", expert0.up_proj)):
    rows = linear.weight.detach()
    as_gate = sum(bool((rows[i] == gate_true).all(-1).any()) for i in range(rows.shape[0]))
    as_up = sum(bool((rows[i] == up_true).all(-1).any()) for i in range(rows.shape[0]))
    print(f"expert 0 {name}: {rows.shape[0]} rows, {as_gate} of them gate rows, {as_up} of them up rows")
