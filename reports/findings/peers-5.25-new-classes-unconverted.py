"""Defuser 0.0.28 and auto-round 0.16.1 on transformers 5.25: which of the release's three new MoE blocks are left
fused. Defuser leaves all three (ErgoMoE, Kolibri1_1SparseMoeBlock, MiniCPM5MoeMoE); auto-round unfuses
Kolibri-1.1's and MiniCPM5's (its generic unfuse) but leaves Ergo's, whose experts class subclasses the decorated
one. A block left fused has no per-expert nn.Linear for a quantizer to observe: its calibration is silently
skipped. (Defuser: convert_model; auto-round: special_model_handler.update_module then materialize_model_, as
AutoRound prepares a model object.) Standalone: a tiny causal LM of each built from a config (no hub).

    python peers-5.25-new-classes-unconverted.py defuser
    python peers-5.25-new-classes-unconverted.py auto_round

Exits 0; prints, per model, the experts module's class and whether it holds any nn.Linear after preparing.
"""

import sys

import torch
from torch import nn

try:
    from transformers import (ErgoConfig, ErgoForCausalLM, Kolibri1_1Config, Kolibri1_1ForCausalLM, MiniCPM5MoeConfig,
                              MiniCPM5MoeForCausalLM)
except ImportError:
    print("this transformers has none of 5.25's new MoE models; nothing to reproduce")
    raise SystemExit(0)

project = sys.argv[1] if len(sys.argv) > 1 else "defuser"
base = dict(vocab_size=128, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            head_dim=8, max_position_embeddings=64, pad_token_id=0, moe_intermediate_size=24, num_experts_per_tok=2)
models = {
    "ergo": (ErgoForCausalLM, ErgoConfig(**base, num_experts=8, shared_intermediate_size=40,
             first_dense_intermediate_size=64, sliding_window=4, mlp_layer_types=["dense", "sparse", "sparse"],
             layer_types=["sliding_attention", "sliding_attention", "full_attention"])),
    "kolibri1_1": (Kolibri1_1ForCausalLM, Kolibri1_1Config(**{**base, "head_dim": 16, "num_key_value_heads": 1},
                   num_local_experts=8, index_num_heads=2, index_pool_size=16, sliding_window=4,
                   shared_expert_intermediate_size=40, mlp_only_intermediate_size=64,
                   layer_types=["sliding_attention", "indexed_attention", "sliding_attention"], index_layers=[1],
                   kv_source_layers=[0, 1, 2], mlp_only_layers=[0])),
    "minicpm5_moe": (MiniCPM5MoeForCausalLM, MiniCPM5MoeConfig(**base, n_routed_experts=8, n_shared_experts=1, n_group=2,
                     topk_group=1, mlp_layer_types=["dense", "sparse", "sparse"])),
}
for name, (model_class, config) in models.items():
    torch.manual_seed(0)
    model = model_class(config).eval()
    if project == "defuser":
        from defuser import convert_model

        convert_model(model)
    else:
        from auto_round.modeling.fused_moe.replace_modules import materialize_model_
        from auto_round.special_model_handler import update_module

        model = update_module(model, formats=None, cleanup_original=False)
        materialize_model_(model)
    experts = next(m.experts for m in model.modules() if hasattr(m, "experts") and type(m).__name__.endswith(("MoE", "MoeBlock")))
    linears = sum(isinstance(m, nn.Linear) for m in experts.modules())
    fused = sorted(n for n, p in experts.named_parameters(recurse=False) if p.dim() == 3)
    print(f"{project} / {name}: experts {type(experts).__name__}, {linears} nn.Linear, fused 3-D parameters {fused}")
