"""ModelOpt 0.47: four MoE architectures get no per-expert calibration — GPT-OSS and Llama 4 are quantized with one
input and one weight quantizer per projection shared by every expert, JetMoe's and LongCat-Flash's experts are
not quantized at all.

Standalone: tiny GptOss, Llama 4 (text), JetMoe and LongCat-Flash causal LMs built from configs (no hub), each
quantized with `mtq.quantize` (FP8, max calibration of the weights: what is shown is the structure). Prints, per model, the class of
layer 0's experts module after quantization and the quantizers under it (name and count), against its number of
experts. Exits 0.
"""

import re

import torch
from transformers import (
    GptOssConfig, GptOssForCausalLM, JetMoeConfig, JetMoeForCausalLM, Llama4ForCausalLM, Llama4TextConfig,
    LongcatFlashConfig, LongcatFlashForCausalLM,
)

import modelopt.torch.quantization as mtq
from modelopt.torch.quantization.nn import TensorQuantizer

small = dict(vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, head_dim=8)
models = {
    "gpt_oss": (GptOssForCausalLM, GptOssConfig(**small, intermediate_size=16, num_local_experts=8, num_experts_per_tok=2)),
    "llama4": (Llama4ForCausalLM, Llama4TextConfig(**small, intermediate_size=16, intermediate_size_mlp=32, num_local_experts=8,
                                                    num_experts_per_tok=1, interleave_moe_layer_step=1)),
    "jetmoe": (JetMoeForCausalLM, JetMoeConfig(vocab_size=128, hidden_size=32, num_hidden_layers=1, num_key_value_heads=2,
                                               kv_channels=8, intermediate_size=16, num_local_experts=8, num_experts_per_tok=2)),
    "longcat_flash": (LongcatFlashForCausalLM, LongcatFlashConfig(vocab_size=128, hidden_size=32, num_layers=1, num_attention_heads=4,
                                                                  ffn_hidden_size=32, expert_ffn_hidden_size=16, n_routed_experts=8,
                                                                  moe_topk=2, zero_expert_num=2, kv_lora_rank=8, q_lora_rank=8,
                                                                  qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8)),
}
for name, (model_class, config) in models.items():
    torch.manual_seed(0)
    model = model_class(config).eval()
    mtq.quantize(model, {"quant_cfg": mtq.FP8_DEFAULT_CFG["quant_cfg"], "algorithm": "max"})  # the structure is what is shown
    # layer 0's MoE block (JetMoe's attention has experts too: its MLP is the one shown)
    block_path, block = next((n, m) for n, m in model.named_modules() if n.endswith(("layers.0.mlp", "layers.0.feed_forward")))
    quantizers = [n for n, m in block.named_modules() if isinstance(m, TensorQuantizer)]
    kinds = sorted({re.sub(r"\.\d+\.", ".N.", n) for n in quantizers})  # per-expert ModuleLists shown once, as .N.
    experts = {n: type(m).__name__ for n, m in block.named_children() if n in ("experts", "input_linear", "output_linear")}
    print(f"{name}: {block_path}'s experts {experts}; {len(quantizers)} quantizers in the block: {kinds} "
          f"for {getattr(config, 'num_local_experts', None) or getattr(config, 'n_routed_experts', None)} experts")
