"""llm-compressor 0.14: GPT-OSS experts are linearized with a hard-coded SwiGLU clamp limit of 7.0, whatever the
config's `swiglu_limit` says.

Standalone: two tiny GptOssForCausalLM built from configs (no hub), one with the default swiglu_limit (7.0) and
one with 0.4, randomised, linearized with linearize_moe, compared with their own output before. MoEConfig's
gpt_oss special case sets `limit = 7.0` after reading the config. Exits 0; prints both differences.
"""

import torch
from transformers import GptOssConfig, GptOssForCausalLM

from llmcompressor.modeling.moe.linearize import linearize_moe

for limit in (7.0, 0.4):
    config = GptOssConfig(
        vocab_size=128, hidden_size=32, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, num_local_experts=8, num_experts_per_tok=2,
        max_position_embeddings=64, layer_types=["full_attention", "full_attention"], swiglu_limit=limit,
    )
    torch.manual_seed(0)
    model = GptOssForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    ids = torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(input_ids=ids).logits
    linearize_moe(model)
    with torch.no_grad():
        got = model(input_ids=ids).logits
    experts = model.model.layers[0].mlp.experts
    print(f"config swiglu_limit={limit}: linearized experts clamp at {experts.limit}; logits max rel diff "
          f"{float((got - want).abs().max() / want.abs().max()):.1e}")
