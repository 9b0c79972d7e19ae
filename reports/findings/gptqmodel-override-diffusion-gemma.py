"""GPTQModel 7.7.0: `ExpertsRoutingOverride(num_experts_per_tok="all")` does nothing for DiffusionGemma: its router
has no top-k field for `set_moe_topk` to raise (it reads `config.top_k_experts` at every forward).

Standalone: a tiny DiffusionGemmaForBlockDiffusion (the composite model GPTQModel's `diffusion_gemma` definition
loads) built from a config (no hub; a one-layer vision tower), randomised, unfused by `defuser.convert_model` (as
GPTQModel's loader does). The definition declares `dynamic_expert_index = "num_experts"`, so GPTQModel's looper
applies the override (`MoERoutingOverrideContext`: `set_moe_topk(layer, num_experts)`); the script applies it to
the whole model and lists what it changed, then counts the token rows each expert's down projection receives in
one forward (prompt encoded by the encoder layers, canvas by the decoder layers) with the override on, and after
`restore_moe_topk`. Exits 0.
"""

import torch
from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

from defuser import convert_model
from gptqmodel.models.definitions.diffusion_gemma import DiffusionGemmaQModel
from gptqmodel.utils.model import find_moe_routing_modules, restore_moe_topk, set_moe_topk

text = dict(
    vocab_size=128, hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=8, global_head_dim=8, moe_intermediate_size=24, num_experts=8, top_k_experts=2,
    enable_moe_block=True, hidden_size_per_layer_input=0, num_kv_shared_layers=0,
)
vision = dict(
    hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
    head_dim=8, position_embedding_size=16, patch_size=2,
)
config = DiffusionGemmaConfig(text_config=text, vision_config=vision)
torch.manual_seed(0)
model = DiffusionGemmaForBlockDiffusion(config).eval()
for p in model.parameters():  # randomise (norm scales and per-expert scales start at 1, some weights at 0)
    torch.nn.init.normal_(p, std=0.2)
convert_model(model, cleanup_original=False)

layers = {
    "encoder": model.model.encoder.language_model.layers[0],
    "decoder": model.model.decoder.layers[0],
}
router = layers["encoder"].router
num_experts = DiffusionGemmaQModel.get_num_experts(config)  # what the looper resolves "all" to
print(f"definition: dynamic_expert_index={DiffusionGemmaQModel.dynamic_expert_index!r}, 'all' = {num_experts} experts")
print(f"router {type(router).__name__}: top_k field? {hasattr(router, 'top_k')}; reads config.top_k_experts = "
      f"{router.config.top_k_experts}")
print("routing modules set_moe_topk finds:", [type(m).__name__ for m in find_moe_routing_modules(model)])

rows = {where: [0] * text["num_experts"] for where in layers}
for where, layer in layers.items():
    for e, expert in enumerate(layer.experts):
        expert.down_proj.register_forward_pre_hook(
            lambda m, a, where=where, e=e: rows[where].__setitem__(e, rows[where][e] + a[0].reshape(-1, a[0].shape[-1]).shape[0])
        )
ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(1))
canvas = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(2))


def forward():
    for counts in rows.values():
        counts[:] = [0] * len(counts)
    with torch.no_grad():
        model(input_ids=ids, decoder_input_ids=canvas)
    return {where: list(counts) for where, counts in rows.items()}


state = set_moe_topk(model, num_experts)
print("set_moe_topk changed:", [(type(module).__name__, name, old, getattr(module, name)) for module, name, old in state])
on = forward()
restore_moe_topk(state)
off = forward()
for where in layers:
    print(f"{where} layer 0: token rows per expert, override on {on[where]}, off {off[where]} "
          f"(the pass has {ids.numel()} tokens; 'all' promises {ids.numel()} to every expert)")
