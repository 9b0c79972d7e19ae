"""llm-compressor 0.14: linearize_moe raises on a text-only Llama 4 model (Llama4ForCausalLM).

Standalone: builds a tiny Llama4ForCausalLM from a Llama4TextConfig (no hub), runs linearize_moe, prints what
happened. Llama4TextExperts has no `config` attribute, so linearize_moe passes the model's config, a
Llama4TextConfig, to Llama4LinearExperts.from_experts_module, which reads `config.text_config`.
Exits 0 either way; the printed line says whether the defect is present.
"""

import torch
from transformers import Llama4ForCausalLM, Llama4TextConfig

from llmcompressor.modeling.moe.linearize import get_non_linearized_moes, linearize_moe

config = Llama4TextConfig(
    vocab_size=64, hidden_size=32, intermediate_size=16, intermediate_size_mlp=48, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_local_experts=4, num_experts_per_tok=1,
    interleave_moe_layer_step=1, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)
torch.manual_seed(0)
model = Llama4ForCausalLM(config).eval()
found = [name for name, _ in get_non_linearized_moes(model)]
print(f"llm-compressor's detector finds {len(found)} experts modules: {found}")
try:
    linearize_moe(model)
    print("linearize_moe: converted (defect absent)")
except AttributeError as exc:
    print(f"linearize_moe raised AttributeError: {exc}  (defect present: a text-only Llama 4 cannot be linearized)")
