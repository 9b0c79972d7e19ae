"""Defuser 0.0.28 (which GPTQModel 7.7.0 unfuses with) on transformers 5.25.0: converting a LongCat-Flash model raises
(`LongcatFlashExperts` has no `total_experts` there).

Standalone: a tiny LongcatFlashForCausalLM built from a config (no hub), then `defuser.convert_model(model,
cleanup_original=False)`, as GPTQModel's loader calls it. Prints the transformers version and what conversion
does. Exits 0.
"""

import torch
import transformers
from transformers import LongcatFlashConfig, LongcatFlashForCausalLM

from defuser import convert_model

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
    print(f"transformers {transformers.__version__}: convert_model ran")
except AttributeError as exc:
    print(f"transformers {transformers.__version__}: convert_model raised AttributeError: {exc}")
