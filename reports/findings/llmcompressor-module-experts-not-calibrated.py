"""llm-compressor 0.14: `moe_calibration_context()` changes nothing for MoE blocks whose experts are already
per-expert modules (Switch Transformers, NLLB-MoE): their experts keep seeing only the tokens routed to them.

Standalone: a tiny SwitchTransformersForConditionalGeneration built from a config (no hub), randomised; forward
hooks count the token rows each expert's first Linear receives in one forward, before and inside
llm-compressor's calibration context (after linearize_moe, which finds nothing to convert there: the experts are
already Linears). Since 0.12 the all-experts mode is a flag read only by LinearExperts2D, so blocks it does not
linearize are silently calibrated on routed tokens only. Exits 0; prints the counts.
"""

import torch
from transformers import SwitchTransformersConfig, SwitchTransformersForConditionalGeneration

from llmcompressor.modeling.moe.context import moe_calibration_context
from llmcompressor.modeling.moe.linearize import get_non_linearized_moes, linearize_moe

config = SwitchTransformersConfig(
    vocab_size=128, d_model=32, d_ff=64, num_heads=4, d_kv=8, num_layers=2, num_decoder_layers=2,
    num_sparse_encoder_layers=1, num_sparse_decoder_layers=1, num_experts=8, expert_capacity=64, router_jitter_noise=0.0,
)
torch.manual_seed(0)
model = SwitchTransformersForConditionalGeneration(config).eval()
with torch.no_grad():
    for p in model.parameters():
        p.normal_(0, 0.2) if p.dim() > 1 else p.normal_(1.0, 0.1)
print(f"llm-compressor's detector finds {len(get_non_linearized_moes(model))} experts modules to linearize")
linearize_moe(model)
mlp = model.encoder.block[1].layer[1].mlp
experts = [mlp.experts[name] for name in sorted(mlp.experts, key=lambda n: int(n.split("_")[-1]))]
rows = [0] * len(experts)
for e, expert in enumerate(experts):
    expert.wi.register_forward_pre_hook(lambda m, a, e=e: rows.__setitem__(e, rows[e] + a[0].reshape(-1, a[0].shape[-1]).shape[0]))
ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(1))
for label, context in (("without the context", None), ("inside moe_calibration_context()", moe_calibration_context)):
    rows[:] = [0] * len(experts)
    with torch.no_grad():
        if context is None:
            model(input_ids=ids, decoder_input_ids=ids)
        else:
            with context():
                model(input_ids=ids, decoder_input_ids=ids)
    print(f"{label}: token rows per expert of encoder layer 1: {rows} (the block has {ids.numel()} tokens)")
