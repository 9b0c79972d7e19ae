"""ModelOpt 0.47: forcing the eager experts implementation misses experts built from a per-layer config
(Dots3-Note's vision tower), so under `batched_mm` / `grouped_mm` their calibration sees no token.

Standalone: a tiny Dots3NoteVisionModel built from a config (no hub) with `experts_implementation="batched_mm"`,
quantized with `mtq.quantize` (FP8, max calibration, one forward of two images as the loop).
`force_eager_experts_impl_on_the_fly` sets `_experts_implementation = "eager"` on the model's config and its
text/vision/audio/speech sub-configs, because `_QuantFusedExperts` only sees `F.linear`; each sparse vision
layer builds its experts from `config.per_layer_config[layer]`, another object, which keeps `batched_mm`. Prints
the model config's and the experts' own configs' setting after quantize and how many times layer 1's experts' input quantizer was called against
the token rows its router sent them. Exits 0.
"""

import torch
from transformers.models.dots3_note.configuration_dots3_note import Dots3NoteVisionConfig
from transformers.models.dots3_note.modeling_dots3_note import Dots3NoteVisionModel

import modelopt.torch.quantization as mtq

config = Dots3NoteVisionConfig(
    hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, moe_intermediate_size=24,
    num_experts_per_tok=2, pyramid_num_routed=[-1, 8, 8], adapter_in_dim=32, adapter_out_dim=32, patch_size=2,
    vocab_size=128, experts_implementation="batched_mm",
)
torch.manual_seed(0)
model = Dots3NoteVisionModel(config).eval()
pixels = torch.randn(24, 12, generator=torch.Generator().manual_seed(1))
grid = torch.tensor([[1, 4, 4], [1, 2, 4]])
counts = {"input quantizer calls": 0, "routed rows": 0}


def forward_loop(m):
    experts = next(mod for name, mod in m.named_modules() if name.endswith("experts") and hasattr(mod, "gate_up_proj_input_quantizer"))
    experts.gate_up_proj_input_quantizer.register_forward_pre_hook(
        lambda q, a: counts.__setitem__("input quantizer calls", counts["input quantizer calls"] + 1))
    experts.register_forward_pre_hook(lambda mod, a: counts.__setitem__("routed rows", counts["routed rows"] + a[0].shape[0]))
    with torch.no_grad():
        m(pixel_values=pixels, grid_thw=grid)


mtq.quantize(model, {"quant_cfg": mtq.FP8_DEFAULT_CFG["quant_cfg"], "algorithm": "max"}, forward_loop)
held = {n: m.config._experts_implementation for n, m in model.named_modules() if n.endswith("experts") and hasattr(m, "config")}
print(f"after quantize: model config {model.config._experts_implementation!r}, the configs the experts hold {held}; "
      f"first sparse layer's experts: {counts['routed rows']} token rows routed to them, input quantizer called "
      f"{counts['input quantizer calls']} times")
