"""ModelOpt 0.47: `_QuantFusedExperts` claims fused experts whose forward never calls `F.linear` (Aria, the OpenAI
privacy filter: `current_state @ self.gate_up_proj[e]`), so calibration feeds none of their quantizers.

Standalone: a tiny AriaTextForCausalLM built from a config (no hub), randomised, quantized with
`mtq.quantize(model, FP8 config with max calibration, forward_loop)`. ModelOpt's structural detector
(`_fused_experts_wrapper_class`: `num_experts` and 3-D `gate_up_proj`/`down_proj`) wraps the experts as
`_QuantFusedExperts`, which only intercepts `F.linear`; Aria's eager experts multiply with `@`. Forward
pre-hooks count the calls of layer 0's experts' input and per-expert weight quantizers during calibration, and
the tokens the router sent to the experts. Exits 0; prints the counts and the experts' calibrated amax. On
transformers 5.25 the same for a tiny ErgoForCausalLM (up/down only, `current_state @ self.up_proj[e]`), which
ModelOpt wraps as `_QuantNonGatedFusedExperts`.
"""

import torch
from transformers import AriaTextConfig, AriaTextForCausalLM

import modelopt.torch.quantization as mtq

config = AriaTextConfig(
    vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
    num_key_value_heads=2, head_dim=8, moe_num_experts=8, moe_topk=2, moe_num_shared_experts=1,
)
torch.manual_seed(0)
model = AriaTextForCausalLM(config).eval()
ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(1))
calls = {"input": 0, "weight": 0, "routed tokens": 0}


def forward_loop(m):
    experts = m.model.layers[0].mlp.experts
    experts.gate_up_proj_input_quantizer.register_forward_pre_hook(lambda q, a: calls.__setitem__("input", calls["input"] + 1))
    for q in experts.gate_up_proj_weight_quantizers:
        q.register_forward_pre_hook(lambda q, a: calls.__setitem__("weight", calls["weight"] + 1))
    experts.register_forward_pre_hook(lambda mod, a: calls.__setitem__("routed tokens", calls["routed tokens"] + a[0].shape[0]))
    with torch.no_grad():
        m(input_ids=ids)


mtq.quantize(model, {"quant_cfg": mtq.FP8_DEFAULT_CFG["quant_cfg"], "algorithm": "max"}, forward_loop)
experts = model.model.layers[0].mlp.experts
print(f"experts wrapped as {type(experts).__mro__[1].__name__}; during calibration the experts got "
      f"{calls['routed tokens']} token rows, their gate_up input quantizer was called {calls['input']} times and "
      f"their per-expert weight quantizers {calls['weight']} times; input quantizer amax after calibration: "
      f"{experts.gate_up_proj_input_quantizer.amax}")

# transformers 5.25's Ergo: up/down only (`up_proj` [E, H, I], relu2), each expert computed as
# `current_state @ self.up_proj[e]`. ModelOpt wraps it as its non-gated variant (`up_proj_input_quantizer`).
try:
    from transformers import ErgoConfig, ErgoForCausalLM
except ImportError:
    print("Ergo: not in this transformers (5.25 and later)")
else:
    config = ErgoConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        moe_intermediate_size=24, num_experts=8, num_experts_per_tok=2, shared_intermediate_size=40,
        first_dense_intermediate_size=64, sliding_window=4, mlp_layer_types=["dense", "sparse"],
        layer_types=["sliding_attention", "full_attention"],
    )
    torch.manual_seed(0)
    model = ErgoForCausalLM(config).eval()
    calls = {"input": 0, "weight": 0, "routed tokens": 0}

    def ergo_loop(m):
        experts = m.model.layers[1].mlp.experts
        experts.up_proj_input_quantizer.register_forward_pre_hook(lambda q, a: calls.__setitem__("input", calls["input"] + 1))
        for q in experts.up_proj_weight_quantizers:
            q.register_forward_pre_hook(lambda q, a: calls.__setitem__("weight", calls["weight"] + 1))
        experts.register_forward_pre_hook(lambda mod, a: calls.__setitem__("routed tokens", calls["routed tokens"] + a[0].shape[0]))
        with torch.no_grad():
            m(input_ids=ids)

    mtq.quantize(model, {"quant_cfg": mtq.FP8_DEFAULT_CFG["quant_cfg"], "algorithm": "max"}, ergo_loop)
    experts = model.model.layers[1].mlp.experts
    print(f"Ergo: experts wrapped as {type(experts).__mro__[1].__name__}; during calibration the experts got "
          f"{calls['routed tokens']} token rows, their up input quantizer was called {calls['input']} times and "
          f"their per-expert weight quantizers {calls['weight']} times; input quantizer amax after calibration: "
          f"{experts.up_proj_input_quantizer.amax}")
