"""Defuser 0.0.28 (transformers 5.24 and 5.25): converting a MiniMax model removes its lightning-attention layers' decay
buffers, so the converted model cannot run.

Standalone: a tiny MiniMaxForCausalLM built from a config (no hub), randomised, converted with convert_model, run.
Prints which modules outside the experts lost registered buffers and what the forward does. Exits 0.
"""

import torch
from transformers import MiniMaxConfig, MiniMaxForCausalLM

from defuser import convert_model

config = MiniMaxConfig(
    vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=8, max_position_embeddings=64, num_local_experts=8, num_experts_per_tok=2,
    layer_types=["linear_attention", "full_attention"], block_size=4,
)
torch.manual_seed(0)
model = MiniMaxForCausalLM(config).eval()
with torch.no_grad():
    for p in model.parameters():
        p.normal_(0, 0.2) if p.dim() > 1 else p.normal_(1.0, 0.1)
before = {name: set(m._buffers) for name, m in model.named_modules() if m._buffers}
ids = torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    want = model(input_ids=ids, use_cache=False).logits
convert_model(model)
modules = dict(model.named_modules())
lost = {name: sorted(kept - set(modules[name]._buffers)) for name, kept in before.items() if name in modules and kept - set(modules[name]._buffers)}
print(f"buffers removed by convert_model: {lost or 'none'}")
try:
    with torch.no_grad():
        got = model(input_ids=ids, use_cache=False).logits
    print(f"forward: max rel diff {float((got - want).abs().max() / want.abs().max()):.1e}")
except AttributeError as exc:
    print(f"forward raised AttributeError: {exc}")
