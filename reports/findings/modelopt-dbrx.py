"""ModelOpt 0.47: quantizing a DBRX model breaks its forward: `_QuantDbrxExpertGLU` stores each expert's w1/v1
transposed.

Standalone: a tiny DbrxForCausalLM built from a config (no hub), randomised, then `mtq.quantize(model, FP8 config
with max calibration, forward_loop)`. `_QuantDbrxExpertGLU._setup` builds `nn.Linear(ffn_hidden_size,
hidden_size)` per expert holding `w1[e].T`, after its comment "DbrxExpertGLU.forward uses raw matmul: x @ w1[i]";
the installed transformers' `DbrxExpertGLU.forward` computes `x.matmul(expert_w1.T)` (w1[e] is [I, H], already
`F.linear`'s layout). With `moe_calib_experts_ratio` set, `_QuantDbrxFFN` (a
`_QuantSparseSequentialMoe`) asserts `hasattr(self, "gate")` on transformers 5.x, and DBRX's router is `router`.
Prints what the forward source says, the Linear's shape, and what calibration's forward does without and with
the ratio. Exits 0.
"""

import inspect

import torch
import transformers
from transformers import DbrxConfig, DbrxForCausalLM
from transformers.models.dbrx import modeling_dbrx

import modelopt.torch.quantization as mtq

config = DbrxConfig(
    d_model=32, n_heads=4, n_layers=1, max_seq_len=64, vocab_size=128,
    attn_config={"kv_n_heads": 2, "rope_theta": 10000.0, "clip_qkv": 8.0},
    ffn_config={"ffn_hidden_size": 24, "moe_num_experts": 8, "moe_top_k": 2},
)
ids = torch.randint(0, 128, (1, 5), generator=torch.Generator().manual_seed(1))
source = inspect.getsource(modeling_dbrx.DbrxExpertGLU.forward)
print(f"transformers {transformers.__version__}: DbrxExpertGLU.forward gate: "
      f"{next(line.strip() for line in source.splitlines() if 'expert_w1' in line and '=' in line)}")


def forward_loop(m):
    with torch.no_grad():
        m(input_ids=ids)


for algorithm in ({"method": "max"}, {"method": "max", "moe_calib_experts_ratio": 1.0}):
    torch.manual_seed(0)
    model = DbrxForCausalLM(config).eval()
    try:
        mtq.quantize(model, {"quant_cfg": mtq.FP8_DEFAULT_CFG["quant_cfg"], "algorithm": algorithm}, forward_loop)
        print(f"{algorithm}: quantize and its calibration forward ran")
    except (RuntimeError, AssertionError) as exc:
        print(f"{algorithm}: calibration forward raised {type(exc).__name__}: {exc}")
glu = model.transformer.blocks[0].ffn.experts.mlp
print(f"{type(glu).__name__}.w1_linear[0]: in {glu.w1_linear[0].in_features}, out {glu.w1_linear[0].out_features} "
      f"(the gate projection maps hidden {config.d_model} -> ffn {config.ffn_config.ffn_hidden_size})")
