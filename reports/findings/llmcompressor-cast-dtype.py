"""llm-compressor 0.14: linearize_moe on a model cast with .to(bfloat16) builds float32 expert Linears.

Standalone: a tiny Qwen3-MoE built from a config (no hub), cast to bfloat16 the usual way (`model.to(...)`,
which leaves `config.dtype` unset), then linearized. LinearExperts2D creates its Linears in `config.dtype`
(None -> float32) and copies the bfloat16 weights into them, so the experts are float32 in a bfloat16 model and
the forward fails on the dtype mismatch. Loading with `from_pretrained(dtype=torch.bfloat16)` sets
`config.dtype` and works; the line for that path is printed too. Exits 0 either way.
"""

import torch
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

from llmcompressor.modeling.moe.linearize import linearize_moe


def tiny(config_dtype):
    config = Qwen3MoeConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_experts=4,
        num_experts_per_tok=2, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
    )
    torch.manual_seed(0)
    model = Qwen3MoeForCausalLM(config).to(torch.bfloat16).eval()
    if config_dtype:  # what from_pretrained(dtype=torch.bfloat16) leaves on the config
        model.config.dtype = torch.bfloat16
    return model


for path, config_dtype in (("model.to(torch.bfloat16)", False), ("from_pretrained(dtype=torch.bfloat16)", True)):
    model = tiny(config_dtype)
    ids = torch.randint(0, 64, (1, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(input_ids=ids).logits
    linearize_moe(model)
    expert = model.model.layers[0].mlp.experts[0]
    line = f"{path}: config.dtype={model.config.dtype}, linearized gate_proj dtype {expert.gate_proj.weight.dtype}"
    try:
        with torch.no_grad():
            got = model(input_ids=ids).logits
        print(f"{line}; logits max rel diff {float((got - want).abs().max() / want.abs().max()):.1e}")
    except RuntimeError as exc:
        print(f"{line}; forward raised RuntimeError: {exc}")
