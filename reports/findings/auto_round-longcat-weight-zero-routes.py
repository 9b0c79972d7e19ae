"""auto-round 0.16.1 on transformers 5.25: a prepared LongCat-Flash model (and ZAYA model) calibrates experts on
tokens they never serve.

5.25's LongCat-Flash sends each zero-expert route to a real expert as a dummy row with weight 0 (to spread
expert-parallel traffic); the original adds nothing from those rows. auto-round's unfused experts loop over every
routed slot, weight 0 included, so in routed mode (AR_FORCE_MOE_ROUTING_ALL_EXPERTS unset) an expert's Linears
receive rows of tokens whose only route to it is a dummy. Standalone: a tiny LongcatFlashForCausalLM built from a
config (no hub), prepared as AutoRound prepares a model object (special_model_handler.update_module, then
materialize_model_); hooks count each expert's gate_proj rows against its routes of non-zero and of zero weight.
ZAYA (every 5.x) sends its "skip" class to expert 0 with weight 0: the same count for a tiny ZayaForCausalLM,
its balancing biases randomised so that tokens skip. Exits 0.
"""

import os

import torch
from transformers import LongcatFlashConfig, LongcatFlashForCausalLM

from auto_round.modeling.fused_moe.replace_modules import materialize_model_
from auto_round.special_model_handler import update_module

os.environ.pop("AR_FORCE_MOE_ROUTING_ALL_EXPERTS", None)  # routed mode: each expert its routed tokens only
config = LongcatFlashConfig(
    vocab_size=128, hidden_size=32, num_layers=2, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
    head_dim=8, ffn_hidden_size=64, expert_ffn_hidden_size=24, moe_intermediate_size=24, n_routed_experts=8,
    num_local_experts=8, moe_topk=2, num_experts_per_tok=2, zero_expert_num=2, routed_scaling_factor=1.0,
    max_position_embeddings=64, pad_token_id=0, q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=8,
    qk_rope_head_dim=8, v_head_dim=8,
)
torch.manual_seed(0)
model = LongcatFlashForCausalLM(config).eval()
with torch.no_grad():
    for p in model.parameters():
        p.normal_(0, 0.2) if p.dim() > 1 else p.normal_(1.0, 0.1)
routing = {}
model.model.layers[0].mlp.experts.register_forward_pre_hook(lambda m, a: routing.update(index=a[1].clone(), weights=a[2].clone()))
ids = torch.randint(3, 128, (2, 8), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    want = model(input_ids=ids).logits
model = update_module(model, formats=None, cleanup_original=False)
materialize_model_(model)
experts = model.model.layers[0].mlp.experts
rows = {}
for e in range(config.n_routed_experts):
    getattr(experts, str(e)).gate_proj.register_forward_pre_hook(
        lambda m, a, e=e: rows.__setitem__(e, rows.get(e, 0) + a[0].reshape(-1, a[0].shape[-1]).shape[0])
    )
with torch.no_grad():
    got = model(input_ids=ids).logits
print(f"logits max rel diff from the original: {float((got - want).abs().max() / want.abs().max()):.1e}")
index, weights = routing["index"], routing["weights"]
for e in range(config.n_routed_experts):
    served = int(((index == e) & (weights != 0)).any(-1).sum())
    dummy = int(((index == e) & (weights == 0)).sum())
    print(f"expert {e}: gate_proj received {rows.get(e, 0)} rows; tokens routed to it with weight != 0: {served}; "
          f"weight-0 dummy routes: {dummy}")


# ZAYA: top-1 of E + 1 classes, the skip class sent to expert 0 with weight 0
from transformers import ZayaConfig, ZayaForCausalLM  # noqa: E402

config = ZayaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=8, max_position_embeddings=64, moe_intermediate_size=24,
                    num_experts=8, num_experts_per_tok=1, pad_token_id=0)
torch.manual_seed(0)
model = ZayaForCausalLM(config).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        p.normal_(0, 0.2) if p.dim() > 1 else p.normal_(1.0, 0.1)
    for name, b in model.named_buffers():
        if "balancing_biases" in name:
            b.normal_(0, 2.0)
block = next(m for m in model.modules() if type(m).__name__ == "ZayaSparseMoeBlock")
routing.clear()
block.experts.register_forward_pre_hook(lambda m, a: routing.update(index=a[1].clone(), weights=a[2].clone()))
with torch.no_grad():
    model(input_ids=ids)
model = update_module(model, formats=None, cleanup_original=False)
materialize_model_(model)
rows.clear()
getattr(block.experts, "0").gate_proj.register_forward_pre_hook(
    lambda m, a: rows.__setitem__(0, rows.get(0, 0) + a[0].reshape(-1, a[0].shape[-1]).shape[0])
)
with torch.no_grad():
    model(input_ids=ids)
index, weights = routing["index"], routing["weights"]
served = int(((index == 0) & (weights != 0)).any(-1).sum())
skips = int(((index == 0) & (weights == 0)).sum())
print(f"ZAYA expert 0: gate_proj received {rows.get(0, 0)} rows; tokens routed to it with weight != 0: {served}; "
      f"skip-class routes (weight 0): {skips}")
