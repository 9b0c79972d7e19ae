"""auto-round 0.16.1: unfusing experts that normalise each expert's output (`has_post_expert_norm`, Muse Spark)
drops that norm, so the prepared model computes something else.

Standalone: a tiny MuseSparkTextModel built from a config (no hub), prepared as AutoRound prepares a model object
(special_model_handler.update_module, then materialize_model_), run before and after. Needs a transformers with
Muse Spark (5.23+). Exits 0; prints the relative difference of the hidden states.
"""

import torch

try:
    from transformers.models.muse_spark import MuseSparkTextConfig, MuseSparkTextModel
except ImportError:
    print("this transformers has no Muse Spark; nothing to reproduce")
    raise SystemExit(0)

from auto_round.modeling.fused_moe.replace_modules import materialize_model_
from auto_round.special_model_handler import update_module

config = MuseSparkTextConfig(
    vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
    num_key_value_heads=2, head_dim=8, max_position_embeddings=64, moe_hidden_size=16, moe_intermediate_size=24,
    num_local_experts=8, num_experts_per_tok=2, bos_token_id=1, eos_token_id=2, pad_token_id=0,
)
torch.manual_seed(0)
model = MuseSparkTextModel(config).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        p.normal_(0, 0.2) if p.dim() > 1 else p.normal_(1.0, 0.1)
experts = next(m for n, m in model.named_modules() if n.endswith("experts"))
print(f"{type(experts).__name__}.has_post_expert_norm = {getattr(experts, 'has_post_expert_norm', None)}")
ids = torch.randint(3, 128, (1, 6), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    want = model(input_ids=ids).last_hidden_state
model = update_module(model, formats=None, cleanup_original=False)
materialize_model_(model)
expert0 = getattr(experts, "0", None)
print(f"expert 0 after preparing holds {sorted(n for n, _ in expert0.named_parameters()) if expert0 is not None else None}")
with torch.no_grad():
    got = model(input_ids=ids).last_hidden_state
print(f"hidden states max rel diff from the original: {float((got - want).abs().max() / want.abs().max()):.1e}")
