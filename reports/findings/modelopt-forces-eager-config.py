"""ModelOpt 0.47: quantizing a model rewrites its config's experts implementation to "eager", for good.

Standalone: a tiny Qwen3MoeForCausalLM built from a config (no hub) with `experts_implementation="batched_mm"`,
quantized with `mtq.quantize` (FP8, max calibration). `force_eager_experts_impl_on_the_fly` sets
`config._experts_implementation = "eager"` on the model's config and its text/vision/audio sub-configs, because
`_QuantFusedExperts` only intercepts `F.linear` (its docstring: the batched_mm / grouped_mm backends "bypass
F.linear"). The config object is shared with whatever else holds it (a second model built from it, saved
checkpoints' config.json); the quantized model keeps running the slow eager loop afterwards. Prints the
setting before and after. Exits 0.
"""

import torch
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

import modelopt.torch.quantization as mtq

config = Qwen3MoeConfig(
    vocab_size=128, hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=1,
    num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_experts=8, num_experts_per_tok=2,
    experts_implementation="batched_mm",
)
torch.manual_seed(0)
model = Qwen3MoeForCausalLM(config).eval()
ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(1))
before = model.config._experts_implementation
mtq.quantize(model, {"quant_cfg": mtq.FP8_DEFAULT_CFG["quant_cfg"], "algorithm": "max"}, lambda m: m(input_ids=ids))
print(f"config._experts_implementation before quantize: {before!r}, after: {model.config._experts_implementation!r} "
      f"(the same config object: {model.config is config})")
