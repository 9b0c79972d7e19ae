"""llm-compressor 0.14.0.1, Defuser 0.0.28 and auto-round 0.16.1: unfusing transformers v5 experts copies expert
weights that could be views of the fused tensors, so converting a layer allocates that layer's expert bytes again
(all of them for llm-compressor; gate_proj and up_proj, two thirds, for Defuser and auto-round) before the fused
tensors are dropped. Per layer of DeepSeek-V3 that is 22.5 GB (15 GB) of transient GPU memory.

Every expert's gate, up and down weight is a contiguous block of the fused tensors in the default layout
(``gate_up_proj[e, :I]``, ``gate_up_proj[e, I:]``, ``down_proj[e]``), so an ``nn.Linear`` can hold a view of it:
bit-exact, no second copy (the reference's ``linear_view``; 0 bytes).

Standalone: a tiny Qwen3-MoE built from a config (no hub), bf16 as ``from_pretrained(dtype=torch.bfloat16)`` leaves
it, converted the way each project's calibration flow does (llm-compressor: ``linearize_moe``; Defuser:
``convert_model``; auto-round: ``special_model_handler.update_module`` then ``materialize_model_``). Prints, per
projection, how many expert Linears view the fused storage, and the bytes of expert weights the conversion
allocated anew over the fused experts' bytes. Run it in each project's environment:

    python peers-conversion-copies.py llmcompressor | defuser | auto_round

Exits 0.
"""

import sys

import torch
from torch import nn
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM


def convert(project, model):
    if project == "llmcompressor":
        from llmcompressor.modeling.moe.linearize import linearize_moe

        linearize_moe(model)
    elif project == "defuser":
        from defuser import convert_model

        convert_model(model)
    else:
        from auto_round.modeling.fused_moe.replace_modules import materialize_model_
        from auto_round.special_model_handler import update_module

        model = update_module(model, formats=None, cleanup_original=False)
        materialize_model_(model)
    return model


project = sys.argv[1] if len(sys.argv) > 1 else "llmcompressor"
config = Qwen3MoeConfig(vocab_size=64, hidden_size=256, intermediate_size=512, moe_intermediate_size=128, num_experts=8,
                        num_experts_per_tok=2, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=64)
torch.manual_seed(0)
model = Qwen3MoeForCausalLM(config).to(torch.bfloat16).eval()
model.config.dtype = torch.bfloat16  # what from_pretrained(dtype=torch.bfloat16) sets
fused = [p for layer in model.model.layers for p in layer.mlp.experts.parameters()]  # held, so their storage stays
ranges = [(p.untyped_storage().data_ptr(), p.untyped_storage().nbytes()) for p in fused]
fused_bytes = sum(p.numel() * p.element_size() for p in fused)


def views_fused(t):
    ptr = t.untyped_storage().data_ptr()
    return any(start <= ptr < start + size for start, size in ranges)


model = convert(project, model)
counts, new_bytes = {}, 0
for name, module in model.named_modules():
    if isinstance(module, nn.Linear) and ".experts." in name:
        projection = name.rsplit(".", 1)[-1]
        shared = views_fused(module.weight)
        total, views = counts.get(projection, (0, 0))
        counts[projection] = (total + 1, views + shared)
        if not shared:
            new_bytes += module.weight.numel() * module.weight.element_size()
per_projection = ", ".join(f"{p} {v}/{t} views" for p, (t, v) in sorted(counts.items()))
print(f"{project}: expert Linears: {per_projection}; allocated anew {new_bytes / 2**20:.2f} MiB of "
      f"{fused_bytes / 2**20:.2f} MiB fused expert weights ({new_bytes / fused_bytes:.2f}x)")
