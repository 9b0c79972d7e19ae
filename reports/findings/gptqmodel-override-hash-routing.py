"""GPTQModel 7.7.0: `ExpertsRoutingOverride(num_experts_per_tok="all")` does not reach DeepSeek-V4's hash-routed MoE
layers: `DeepseekV4HashRouter` takes each token's experts from a table indexed by its token id, whatever `top_k`
says.

Standalone: a tiny DeepseekV4ForCausalLM built from a config (no hub) whose one MoE layer is `hash_moe`,
randomised, unfused by `defuser.convert_model` (as GPTQModel's loader does). GPTQModel's `set_moe_topk` with
"all" (its definition's `get_num_experts(config)`) lists the fields it changed; forward pre-hooks count the token
rows each expert's gate projection receives in one forward with the override on. Exits 0.
"""

import torch
from transformers import DeepseekV4Config, DeepseekV4ForCausalLM

from defuser import convert_model
from gptqmodel.models.auto import MODEL_MAP
from gptqmodel.utils.model import restore_moe_topk, set_moe_topk

config = DeepseekV4Config(
    hidden_size=32, intermediate_size=24, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4, head_dim=8,
    vocab_size=128, max_position_embeddings=64, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8,
    v_head_dim=8, moe_intermediate_size=24, n_routed_experts=8, num_local_experts=8, num_experts_per_tok=2,
    n_shared_experts=1, router_jitter_noise=0.0, mlp_layer_types=["hash_moe"],
)
torch.manual_seed(0)
model = DeepseekV4ForCausalLM(config).eval()
with torch.no_grad():  # a checkpoint's table: two distinct experts per token id (a fresh model's is all zeros)
    for router in (m for m in model.modules() if hasattr(m, "tid2eid")):
        router.tid2eid.copy_(torch.stack([torch.randperm(8, generator=torch.Generator().manual_seed(t))[:2] for t in range(128)]))
convert_model(model, cleanup_original=False)
block = next(m for m in model.modules() if type(m).__name__ == "DeepseekV4SparseMoeBlock")
experts = [e for e in block.experts if hasattr(e, "gate_proj")]
rows = [0] * len(experts)
for e, expert in enumerate(experts):
    expert.gate_proj.register_forward_pre_hook(lambda m, a, e=e: rows.__setitem__(e, rows[e] + a[0].reshape(-1, a[0].shape[-1]).shape[0]))
every = MODEL_MAP["deepseek_v4"].get_num_experts(config)
state = set_moe_topk(model, every)
print(f"router {type(block.gate).__name__}; set_moe_topk({every}) changed:",
      [(type(module).__name__, name, old, getattr(module, name)) for module, name, old in state])
ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    model(input_ids=ids)
restore_moe_topk(state)
print(f"override on: token rows per expert {rows} (the batch has {ids.numel()} tokens; 'all' promises {ids.numel()} to every expert)")
