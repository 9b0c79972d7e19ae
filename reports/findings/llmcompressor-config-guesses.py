"""llm-compressor 0.14: linearize_moe sizes and drives the per-expert Linears from guesses about the config (and
borrows the experts class's `_apply_gate` without the attributes it reads), so several architectures its own
detector selects cannot be linearized or run afterwards.

Standalone: for each architecture below that the installed transformers has, a tiny model built from a config
(no hub), randomised, linearized with linearize_moe, then run and compared with its output before. Prints one
line per architecture: what linearize_moe or the forward raised, or the relative difference. Exits 0.
Within llm-compressor's own pin (transformers <= 5.17): ernie4_5_vl_moe, minimax_m3_vl. Beyond it (5.23+): aria,
muse_spark, inkling2.
"""

import importlib

import torch

from llmcompressor.modeling.moe.linearize import get_non_linearized_moes, linearize_moe

BASE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=8, vocab_size=128, max_position_embeddings=64)
CASES = [  # model_type, package, config class, model class, config values (what the config guess misreads)
    ("ernie4_5_vl_moe", "ernie4_5_vl_moe", "Ernie4_5_VLMoeTextConfig", "Ernie4_5_VLMoeTextModel",
     dict(moe_intermediate_size=[24, 40], moe_num_experts=8, num_experts=8, moe_k=2, num_experts_per_tok=2, moe_num_shared_experts=1,
          num_hidden_layers=3, mlp_layer_types=["dense", "sparse", "sparse"],
          rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]})),
    ("minimax_m3_vl", "minimax_m3_vl", "MiniMaxM3VLTextConfig", "MiniMaxM3VLForCausalLM",
     dict(dense_intermediate_size=64, num_experts=8, num_local_experts=8, num_experts_per_tok=2, router_jitter_noise=0.0,
          shared_intermediate_size=40, num_hidden_layers=3, mlp_layer_types=["dense", "sparse", "sparse"])),
    ("aria", "aria", "AriaTextConfig", "AriaTextForCausalLM", dict(moe_num_experts=8, moe_topk=2, moe_num_shared_experts=1)),
    ("muse_spark", "muse_spark", "MuseSparkTextConfig", "MuseSparkTextModel",
     dict(moe_hidden_size=16, moe_intermediate_size=24, num_local_experts=8, num_experts_per_tok=2, num_hidden_layers=3)),
    ("inkling2", "inkling2", "Inkling2TextConfig", "Inkling2ForCausalLM",
     dict(intermediate_size=24, moe_intermediate_size=24, n_routed_experts=8, num_local_experts=8, num_experts_per_tok=2, unpadded_vocab_size=120)),
]


def output(model, ids):
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


for model_type, package, config_name, model_name, values in CASES:
    try:
        module = importlib.import_module(f"transformers.models.{package}")
        config = getattr(module, config_name)(**{**BASE, **values})
        model_cls = getattr(module, model_name)
    except (ImportError, AttributeError):
        print(f"{model_type}: not in this transformers")
        continue
    torch.manual_seed(0)
    model = model_cls(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2) if p.dim() > 1 else p.normal_(1.0, 0.1)
    ids = torch.randint(3, 120, (1, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = output(model, ids)
    found = len(get_non_linearized_moes(model))
    try:
        linearize_moe(model)
    except Exception as exc:
        print(f"{model_type}: detector finds {found} experts modules; linearize_moe raised {type(exc).__name__}: {str(exc)[-120:].strip()}")
        continue
    try:
        with torch.no_grad():
            got = output(model, ids)
        print(f"{model_type}: detector finds {found}; linearized; output max rel diff {float((got - want).abs().max() / want.abs().max()):.1e}")
    except Exception as exc:
        print(f"{model_type}: detector finds {found}; linearized; the forward raised {type(exc).__name__}: {str(exc)[-120:]}")
