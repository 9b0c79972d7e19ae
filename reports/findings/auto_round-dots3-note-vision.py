"""auto-round 0.16.1: preparing a Dots3-Note vision tower unfuses its experts, whose forward still reads the fused
`gate_up_proj`, so the prepared model cannot run.

Standalone: a tiny Dots3NoteVisionModel built from a config (no hub; transformers 5.23+), randomised, run on
random patches, prepared as AutoRound prepares a model object (special_model_handler.update_module, then
materialize_model_), run again. auto-round's generic unfuse takes every `@use_experts_implementation` experts
module; Dots3NoteExperts is one, but its forward is its own and indexes `self.gate_up_proj`, which the unfuse
deleted. Exits 0; prints what happened.
"""

import torch

try:
    from transformers.models.dots3_note import Dots3NoteVisionConfig, Dots3NoteVisionModel
except ImportError:
    print("this transformers has no Dots3-Note; nothing to reproduce")
    raise SystemExit(0)

from auto_round.modeling.fused_moe.replace_modules import materialize_model_
from auto_round.special_model_handler import update_module

config = Dots3NoteVisionConfig(
    hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, moe_intermediate_size=24,
    num_experts_per_tok=2, pyramid_num_routed=[-1, 8, 8], adapter_in_dim=32, adapter_out_dim=32, patch_size=2,
    vocab_size=128,
)
torch.manual_seed(0)
model = Dots3NoteVisionModel(config).eval()
with torch.no_grad():
    for p in model.parameters():
        p.normal_(0, 0.2) if p.dim() > 1 else p.normal_(1.0, 0.1)
inputs = {"pixel_values": torch.randn(24, 12, generator=torch.Generator().manual_seed(1)),
          "grid_thw": torch.tensor([[1, 4, 4], [1, 2, 4]])}
with torch.no_grad():
    want = model(**inputs).last_hidden_state
model = update_module(model, formats=None, cleanup_original=False)
materialize_model_(model)
experts = next(m for n, m in model.named_modules() if type(m).__name__ == "Dots3NoteExperts")
print(f"after preparing, Dots3NoteExperts holds per-expert containers: {hasattr(experts, '0')}; gate_up_proj: {hasattr(experts, 'gate_up_proj')}")
try:
    with torch.no_grad():
        got = model(**inputs).last_hidden_state
    print(f"forward: max rel diff {float((got - want).abs().max() / want.abs().max()):.1e}")
except AttributeError as exc:
    print(f"forward raised AttributeError: {exc}")
