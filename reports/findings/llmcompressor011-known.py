"""llm-compressor 0.11.0's MoE calibration wrappers: the three known defects, on whichever of the models the
installed transformers has (Llama 4 and Qwen3-VL-MoE as on its 4.57.6 pin; GLM-4.7-Flash (glm4_moe_lite) on v5).

Standalone: tiny models built from configs (no hub), randomised, run before and inside llm-compressor's own
`moe_calibration_context(model, calibrate_all_experts=...)`. Prints per model what the context's wrappers did:
raised (and what), or the logits' relative difference, and for Qwen3-VL-MoE the unpacked expert Linears'
declared in/out features against their weights. Exits 0.
"""

import importlib

import torch

from llmcompressor.modeling.moe_context import moe_calibration_context

BASE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=8, vocab_size=128, max_position_embeddings=64)
MODELS = [
    ("llama4", "Llama4TextConfig", "Llama4ForCausalLM",
     dict(intermediate_size=24, intermediate_size_mlp=64, num_local_experts=8, num_experts_per_tok=1,
          interleave_moe_layer_step=1, pad_token_id=0, bos_token_id=1, eos_token_id=2)),
    ("qwen3_vl_moe", "Qwen3VLMoeTextConfig", "Qwen3VLMoeTextModel",
     dict(moe_intermediate_size=24, num_experts=8, num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[],
          rope_scaling={"rope_type": "default", "mrope_section": [2, 1, 1]})),
    ("qwen3_vl_moe", "Qwen3VLMoeTextConfig", "Qwen3VLMoeTextModel",  # top-1: the wrapper's squeeze(0) drops the k axis
     dict(moe_intermediate_size=24, num_experts=8, num_experts_per_tok=1, decoder_sparse_step=1, mlp_only_layers=[],
          rope_scaling={"rope_type": "default", "mrope_section": [2, 1, 1]})),
    ("glm4_moe_lite", "Glm4MoeLiteConfig", "Glm4MoeLiteForCausalLM",
     dict(moe_intermediate_size=24, n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, n_group=1,
          topk_group=1, first_k_dense_replace=0, num_key_value_heads=4, q_lora_rank=16, kv_lora_rank=16,
          qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8)),
]


def output(model, ids):
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


for name, config_name, model_name, values in MODELS:
    try:
        module = importlib.import_module(f"transformers.models.{name}")
        config = getattr(module, config_name)(**{**BASE, **values})
        model = getattr(module, model_name)(config).eval()
    except (ImportError, AttributeError) as exc:
        print(f"{name}: not buildable with this transformers ({type(exc).__name__})")
        continue
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2) if p.dim() > 1 else p.normal_(1.0, 0.1)
    ids = torch.randint(3, 128, (2, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = output(model, ids)
    for all_experts in (True, False):
        try:
            with torch.no_grad(), moe_calibration_context(model, calibrate_all_experts=all_experts):
                got = output(model, ids)
                lies = [(n, tuple(m.weight.shape), m.in_features, m.out_features) for n, m in model.named_modules()
                        if isinstance(m, torch.nn.Linear) and ".experts." in n and tuple(m.weight.shape) != (m.out_features, m.in_features)]
            line = f"logits max rel diff {float((got - want).abs().max() / want.abs().max()):.1e}"
            if lies:
                n, shape, i, o = lies[0]
                line += f"; {len(lies)} expert Linears whose features lie, e.g. {n}: weight {shape}, in_features {i}, out_features {o}"
        except Exception as exc:
            line = f"raised {type(exc).__name__}: {str(exc)[:100]}"
        print(f"{name} (top-{config.num_experts_per_tok}) calibrate_all_experts={all_experts}: {line}")
