"""ModelOpt 0.47: `moe_calib_experts_ratio` does nothing for transformers v5's fused experts (Qwen3-MoE, Mixtral,
DeepSeek-V3, ...): every expert is still calibrated on its routed tokens only.

Standalone: a tiny Qwen3MoeForCausalLM built from a config (no hub), randomised, quantized with
`mtq.quantize(model, config, forward_loop)` at FP8 with the algorithm `{"method": "max",
"moe_calib_experts_ratio": 1.0}` ("force forward tokens to % of experts during the calibration pass"; the field's
documentation names Qwen3Moe and Mixtral). A pre-hook on layer 0's `gate_up_proj_input_quantizer` (the
`_QuantFusedExperts` input quantizer whose calibrator collects the statistics) counts the rows it receives per
expert, by `_current_expert_idx` (the index ModelOpt picks that expert's weight quantizer by). The ratio lives on
`_QuantSparseSequentialMoe`, which ModelOpt's structural detector (`_is_sparse_sequaential_moe_block`) refuses for
blocks whose `experts` is not iterable, i.e. every v5 fused experts module; nothing warns. Then a tiny Switch
Transformers model (per-expert modules, routed by a `router`, not a `gate`): not detected either. Exits 0; prints
the counts for ratio 1.0 and for no ratio, and Switch's with ratio 1.0.
"""

import torch
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

import modelopt.torch.quantization as mtq

config = Qwen3MoeConfig(
    vocab_size=128, hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=1,
    num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_experts=8, num_experts_per_tok=2,
)
ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(1))
for ratio in (1.0, None):
    torch.manual_seed(0)
    model = Qwen3MoeForCausalLM(config).eval()
    algorithm = {"method": "max"} if ratio is None else {"method": "max", "moe_calib_experts_ratio": ratio}
    rows = [0] * config.num_experts
    hooked = []

    def forward_loop(m):
        experts = m.model.layers[0].mlp.experts
        if not hooked:
            experts.gate_up_proj_input_quantizer.register_forward_pre_hook(
                lambda q, a: rows.__setitem__(experts._current_expert_idx, rows[experts._current_expert_idx] + a[0].shape[0]))
            hooked.append(experts)
        with torch.no_grad():
            m(input_ids=ids)

    mtq.quantize(model, {"quant_cfg": mtq.FP8_DEFAULT_CFG["quant_cfg"], "algorithm": algorithm}, forward_loop)
    block = model.model.layers[0].mlp
    print(f"moe_calib_experts_ratio={ratio}: MoE block is {type(block).__name__} (has the ratio attribute: "
          f"{hasattr(block, '_moe_calib_experts_ratio')}), experts {type(block.experts).__name__}; token rows per expert "
          f"seen by the calibrating input quantizer: {rows} (the batch has {ids.numel()} tokens; ratio 1.0 promises "
          f"{ids.numel()} to every expert)")

# Per-expert modules routed by a `router` rather than a `gate` (Switch Transformers; NLLB-MoE alike): the detector's
# other test (a `gate` with `top_k`, or `top_k` on the block) fails too, and the ratio is not applied either.
from transformers import SwitchTransformersConfig, SwitchTransformersForConditionalGeneration  # noqa: E402

switch_config = SwitchTransformersConfig(
    vocab_size=128, d_model=32, d_ff=64, num_heads=4, d_kv=8, num_layers=2, num_decoder_layers=2,
    num_sparse_encoder_layers=1, num_sparse_decoder_layers=1, num_experts=8, expert_capacity=64, router_jitter_noise=0.0,
)
torch.manual_seed(0)
switch = SwitchTransformersForConditionalGeneration(switch_config).eval()
mlp = switch.encoder.block[1].layer[1].mlp
switch_rows = [0] * switch_config.num_experts
for e in range(switch_config.num_experts):
    mlp.experts[f"expert_{e}"].wi.register_forward_pre_hook(
        lambda m, a, e=e: switch_rows.__setitem__(e, switch_rows[e] + a[0].reshape(-1, a[0].shape[-1]).shape[0]))
algorithm = {"method": "max", "moe_calib_experts_ratio": 1.0}
with torch.no_grad():
    mtq.quantize(switch, {"quant_cfg": mtq.FP8_DEFAULT_CFG["quant_cfg"], "algorithm": algorithm},
                 lambda m: m(input_ids=ids, decoder_input_ids=ids))
print(f"Switch Transformers, moe_calib_experts_ratio=1.0: encoder MoE block is {type(mlp).__name__} (has the ratio "
      f"attribute: {hasattr(mlp, '_moe_calib_experts_ratio')}); token rows per expert's wi: {switch_rows} (the batch has "
      f"{ids.numel()} tokens)")
