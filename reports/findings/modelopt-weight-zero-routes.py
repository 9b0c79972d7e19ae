"""ModelOpt 0.47: experts calibrated on routes of weight 0 (LongCat-Flash on transformers 5.25, ZAYA, NLLB-MoE).

5.25's LongCat-Flash sends each zero-expert route to a real expert as a dummy row with weight 0 (to spread
expert-parallel traffic); ZAYA (every 5.x) sends its "skip" class to expert 0 with weight 0. The original adds
nothing from those rows, but its eager experts loop computes them, and `_QuantFusedExperts` intercepts that loop's
`F.linear`: the per-expert calls its calibrators see include tokens the expert never serves.

Standalone: a tiny LongcatFlashForCausalLM and a tiny ZayaForCausalLM built from configs (no hub), randomised,
quantized with `mtq.quantize(model, FP8 config with max calibration, forward_loop)` (routed: no
`moe_calib_experts_ratio`). A pre-hook on layer 0's experts' `gate_up_proj_input_quantizer` counts the rows each
expert's first projection is calibrated on (`_current_expert_idx`, the index ModelOpt picks the expert's weight
quantizer by); another on the experts reads the routing they are given (index, weights). Then a tiny NllbMoeModel,
whose experts container sends the weight-0 slots of its top-1 mask to expert 0 (upstream, every 5.x): the rows
expert 0's `fc1` input quantizer calibrates on. Exits 0.
"""

import torch
import transformers
from transformers import LongcatFlashConfig, LongcatFlashForCausalLM, ZayaConfig, ZayaForCausalLM

import modelopt.torch.quantization as mtq
from modelopt.torch.quantization.plugins.huggingface import _QuantFusedExperts

CFG = {"quant_cfg": mtq.FP8_DEFAULT_CFG["quant_cfg"], "algorithm": "max"}
ids = torch.randint(3, 128, (2, 8), generator=torch.Generator().manual_seed(1))


def randomise(model, biases=False):
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2) if p.dim() > 1 else p.normal_(1.0, 0.1)
        for name, b in model.named_buffers():
            if biases and "balancing_biases" in name:
                b.normal_(0, 2.0)


def calibrated_rows(model, experts_of):
    """Rows per expert at the calibrating input quantizer, and the routing the experts were given."""
    rows, routing = {}, {}

    def loop(m):
        experts = experts_of(m)
        if not isinstance(experts, _QuantFusedExperts):
            raise SystemExit(f"{type(experts).__name__} not wrapped as _QuantFusedExperts by ModelOpt here")
        experts.gate_up_proj_input_quantizer.register_forward_pre_hook(
            lambda q, a: rows.__setitem__(experts._current_expert_idx, rows.get(experts._current_expert_idx, 0) + a[0].reshape(-1, a[0].shape[-1]).shape[0])
        )
        experts.register_forward_pre_hook(lambda mod, a: routing.update(index=a[1].clone(), weights=a[2].clone()))
        with torch.no_grad():
            m(input_ids=ids)

    mtq.quantize(model, CFG, loop)
    return rows, routing["index"], routing["weights"]


print(f"transformers {transformers.__version__}")
config = LongcatFlashConfig(
    vocab_size=128, hidden_size=32, num_layers=2, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
    head_dim=8, ffn_hidden_size=64, expert_ffn_hidden_size=24, moe_intermediate_size=24, n_routed_experts=8,
    num_local_experts=8, moe_topk=2, num_experts_per_tok=2, zero_expert_num=2, routed_scaling_factor=1.0,
    max_position_embeddings=64, pad_token_id=0, q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=8,
    qk_rope_head_dim=8, v_head_dim=8,
)
torch.manual_seed(0)
model = LongcatFlashForCausalLM(config).eval()
randomise(model)
if hasattr(model.model.layers[0].mlp.experts, "total_experts"):
    print("LongCat-Flash: experts with zero-expert rows (transformers 5.24 and earlier), not wrapped by ModelOpt "
          "(modelopt-no-per-expert-calibration.md); the dummy rows are 5.25's")
else:
    rows, index, weights = calibrated_rows(model, lambda m: m.model.layers[0].mlp.experts)
    for e in range(config.n_routed_experts):
        served = int(((index == e) & (weights != 0)).any(-1).sum())
        dummy = int(((index == e) & (weights == 0)).sum())
        print(f"LongCat-Flash expert {e}: calibrated on {rows.get(e, 0)} rows; tokens routed to it with weight != 0: "
              f"{served}; weight-0 dummy routes: {dummy}")

# ZAYA: top-1 of E + 1 classes, the skip class sent to expert 0 with weight 0
config = ZayaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=8, max_position_embeddings=64, moe_intermediate_size=24,
                    num_experts=8, num_experts_per_tok=1, pad_token_id=0)
torch.manual_seed(0)
model = ZayaForCausalLM(config).eval()
randomise(model, biases=True)
first = lambda m: next(x for x in m.modules() if type(x).__name__ == "ZayaSparseMoeBlock").experts  # noqa: E731
rows, index, weights = calibrated_rows(model, first)
served = int(((index == 0) & (weights != 0)).any(-1).sum())
skips = int(((index == 0) & (weights == 0)).sum())
print(f"ZAYA expert 0: calibrated on {rows.get(0, 0)} rows; tokens routed to it with weight != 0: {served}; "
      f"skip-class routes (weight 0): {skips}")

# NLLB-MoE (every 5.x): its experts container one-hot encodes the router's 0/1 top-1 mask as if it held expert ids
# (upstream), so every slot whose mask is 0 goes to expert 0, nearly all with weight 0. Its experts are Linears
# already: ModelOpt makes them QuantLinear, whose input quantizer calibrates on exactly those rows.
from transformers import NllbMoeConfig, NllbMoeModel  # noqa: E402

config = NllbMoeConfig(
    vocab_size=128, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
    encoder_ffn_dim=24, decoder_ffn_dim=24, encoder_sparse_step=2, decoder_sparse_step=2, num_experts=8,
    expert_capacity=64, second_expert_policy="all", max_position_embeddings=64, pad_token_id=0,
)
torch.manual_seed(0)
model = NllbMoeModel(config).eval()
nllb_ids = ids[:, :5]
rows, routing = {}, {}


def nllb_loop(m):
    block = next(x for x in m.modules() if type(x).__name__ == "NllbMoeSparseMLP")
    block.experts.register_forward_pre_hook(lambda mod, a: routing.update(mask=a[1].clone(), weights=a[2].clone()))
    for e in range(2):
        block.experts[f"expert_{e}"].fc1.input_quantizer.register_forward_pre_hook(
            lambda q, a, e=e: rows.__setitem__(e, rows.get(e, 0) + a[0].reshape(-1, a[0].shape[-1]).shape[0])
        )
    with torch.no_grad():
        m(input_ids=nllb_ids, decoder_input_ids=nllb_ids)


mtq.quantize(model, CFG, nllb_loop)
mask, weights = routing["mask"], routing["weights"]
for e in range(2):
    served = int(((mask == e) & (weights != 0)).any(-1).sum())
    print(f"NLLB-MoE expert {e}: fc1 calibrated on {rows.get(e, 0)} rows for {mask.shape[0]} tokens; tokens with a "
          f"non-zero weight for it: {served}")
