"""Defuser 0.0.28 on transformers 5.25: convert_model raises on a LongCat-Flash model.

5.25 rewrote LongCat-Flash's experts: the fused `gate_up_proj` holds the routed experts only (before, rows for the
zero experts too), and the module has no `total_experts` any more; Defuser's runtime patch still loops over
`module.total_experts`. Standalone: a tiny LongcatFlashForCausalLM built from a config (no hub), converted with
convert_model. Exits 0; prints what convert_model raised (or that it converted).
"""

import torch
import transformers
from transformers import LongcatFlashConfig, LongcatFlashForCausalLM

from defuser import convert_model

config = LongcatFlashConfig(
    vocab_size=128, hidden_size=32, num_layers=2, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
    head_dim=8, ffn_hidden_size=64, expert_ffn_hidden_size=24, moe_intermediate_size=24, n_routed_experts=8,
    num_local_experts=8, moe_topk=2, num_experts_per_tok=2, zero_expert_num=2, routed_scaling_factor=1.0,
    max_position_embeddings=64, pad_token_id=0, q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=8,
    qk_rope_head_dim=8, v_head_dim=8,
)
torch.manual_seed(0)
model = LongcatFlashForCausalLM(config).eval()
experts = model.model.layers[0].mlp.experts
print(f"transformers {transformers.__version__}: {type(experts).__name__} gate_up_proj {tuple(experts.gate_up_proj.shape)}, "
      f"has total_experts: {hasattr(experts, 'total_experts')}")
try:
    convert_model(model)
except Exception as exc:  # the defect: the conversion itself raises
    print(f"convert_model raised {type(exc).__name__}: {exc}")
else:
    print("convert_model converted it")
