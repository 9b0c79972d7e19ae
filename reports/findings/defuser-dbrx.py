"""Defuser 0.0.28: converting a DBRX model breaks its forward (and the unfused Linears are transposed).

Standalone: a tiny DbrxForCausalLM built from a config (no hub), randomised, converted with
`convert_model(model)`, then run. DBRX stores its experts stacked 2-D ([E*I, H] for w1/v1/w2, with w2 applied
as `intermediate @ w2[e]`, i.e. stored [in, out]). Prints the first unfused Linear's shape against
transformers' [I, H] gate weight, and what the converted model's forward does. Exits 0.
"""

import torch
from transformers import DbrxConfig, DbrxForCausalLM

from defuser import convert_model

config = DbrxConfig(
    d_model=32, n_heads=4, n_layers=2, max_seq_len=64, vocab_size=128,
    attn_config={"kv_n_heads": 2, "rope_theta": 10000.0, "clip_qkv": 8.0},
    ffn_config={"ffn_hidden_size": 24, "moe_num_experts": 8, "moe_top_k": 2},
)
torch.manual_seed(0)
model = DbrxForCausalLM(config).eval()
with torch.no_grad():
    for p in model.parameters():
        p.normal_(0, 0.2)
ids = torch.randint(0, 128, (1, 5), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    want = model(input_ids=ids).logits
print(f"converted: {convert_model(model)}")
linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".experts." in n]
name, first = linears[0]
print(f"{len(linears)} expert Linears; {name}: weight {tuple(first.weight.shape)} (in {first.in_features}, out "
      f"{first.out_features}); transformers' expert gate weight is [I, H] = (24, 32)")
try:
    with torch.no_grad():
        got = model(input_ids=ids).logits
    print(f"forward: max rel diff {float((got - want).abs().max() / want.abs().max()):.1e}")
except RuntimeError as exc:
    print(f"forward raised RuntimeError: {exc}")
