"""GPTQModel 7.7.0: `ExpertsRoutingOverride(num_experts_per_tok="all")` on LongCat-Flash raises the router's top-k to
its 8 real experts, but the router chooses among 10 slots (2 "zero experts" that pass the token through), so
tokens still skip real experts.

Standalone: a tiny LongcatFlashForCausalLM built from a config (no hub), randomised, unfused by
`defuser.convert_model` (as GPTQModel's loader does). GPTQModel's `set_moe_topk(model, n)` (what its
`MoERoutingOverrideContext` applies for "all": its definition's `get_num_experts(config)`, 8) leaves the router
choosing 8 of its `n_routed_experts` 10 slots (zero experts included). Forward pre-hooks count the
token rows each real expert's gate projection receives in one forward with the override on. Exits 0.
Needs transformers 5.24: on 5.25 Defuser's conversion of LongCat-Flash raises first (`defuser-longcat-5.25.py`),
which the script reports before it exits.
"""

import sys

import torch
from transformers import LongcatFlashConfig, LongcatFlashForCausalLM

from defuser import convert_model
from gptqmodel.models.auto import MODEL_MAP
from gptqmodel.utils.model import restore_moe_topk, set_moe_topk

config = LongcatFlashConfig(
    hidden_size=32, num_attention_heads=4, num_key_value_heads=4, head_dim=8, vocab_size=128, max_position_embeddings=64,
    kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, num_layers=1,
    ffn_hidden_size=64, expert_ffn_hidden_size=24, moe_intermediate_size=24, n_routed_experts=8, moe_topk=2,
    zero_expert_num=2, routed_scaling_factor=1.0,
)
torch.manual_seed(0)
model = LongcatFlashForCausalLM(config).eval()
try:
    convert_model(model, cleanup_original=False)
except AttributeError as exc:  # transformers 5.25: defuser-longcat-5.25.md
    print(f"convert_model raised AttributeError: {exc} (Defuser on transformers 5.25: defuser-longcat-5.25.md); "
          "GPTQModel cannot load LongCat-Flash here, so the override is never reached")
    sys.exit(0)
block = model.model.layers[0].mlp
experts = [e for e in block.experts if hasattr(e, "gate_proj")]
rows = [0] * len(experts)
for e, expert in enumerate(experts):
    expert.gate_proj.register_forward_pre_hook(lambda m, a, e=e: rows.__setitem__(e, rows[e] + a[0].reshape(-1, a[0].shape[-1]).shape[0]))
router = block.router
print(f"router: top_k {router.top_k}, num_experts {router.num_experts}, n_routed_experts {router.n_routed_experts}")
every = MODEL_MAP["longcat_flash"].get_num_experts(config)  # "all", as routing_override(num_experts) resolves it
state = set_moe_topk(model, every)
print("set_moe_topk changed:", [(type(module).__name__, name, old, getattr(module, name)) for module, name, old in state])
ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    model(input_ids=ids)
restore_moe_topk(state)
print(f"override on: token rows per real expert {rows} (the batch has {ids.numel()} tokens; 'all' promises "
      f"{ids.numel()} to every expert)")
