"""GPTQModel 7.7.0: `ExpertsRoutingOverride(num_experts_per_tok="all")` does nothing for PhiMoE: its router's
`top_k` is raised, but PhiMoE's sparsemixer routing always picks two experts.

Standalone: a tiny PhimoeForCausalLM built from a config (no hub), randomised, unfused by `defuser.convert_model`
(as GPTQModel's loader does). GPTQModel's `set_moe_topk(model, num_experts)` (what its
`MoERoutingOverrideContext` applies for "all", resolved by `routing_override(num_experts)`) lists the fields it
changed; forward pre-hooks count the token rows each expert's gate projection receives in one forward with the
override on, then after `restore_moe_topk`. Exits 0.
"""

import torch
from transformers import PhimoeConfig, PhimoeForCausalLM

from defuser import convert_model
from gptqmodel.utils.model import restore_moe_topk, set_moe_topk

config = PhimoeConfig(
    vocab_size=128, hidden_size=32, intermediate_size=16, num_hidden_layers=1, num_attention_heads=4,
    num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2,
)
torch.manual_seed(0)
model = PhimoeForCausalLM(config).eval()
convert_model(model, cleanup_original=False)
experts = list(model.model.layers[0].mlp.experts)
rows = [0] * len(experts)
for e, expert in enumerate(experts):
    expert.gate_proj.register_forward_pre_hook(lambda m, a, e=e: rows.__setitem__(e, rows[e] + a[0].reshape(-1, a[0].shape[-1]).shape[0]))
ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(1))
state = set_moe_topk(model, config.num_local_experts)
print("set_moe_topk changed:", [(type(module).__name__, name, old, getattr(module, name)) for module, name, old in state])
with torch.no_grad():
    model(input_ids=ids)
print(f"override on: token rows per expert {rows} (the batch has {ids.numel()} tokens; 'all' promises {ids.numel()} to every expert)")
restore_moe_topk(state)
rows[:] = [0] * len(experts)
with torch.no_grad():
    model(input_ids=ids)
print(f"override off: token rows per expert {rows}")
