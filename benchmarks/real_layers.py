"""The real-size MoE layers the GPU benchmarks build (bench_calibration_forward.py, bench_cost.py): each from its
transformers config class at the published model's dims, with a tiny variant of the same layer for CPU dry runs."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LAYERS", "Layer"]


@dataclass(frozen=True)
class Layer:
    name: str
    module: str  # under transformers.models
    config_class: str
    block_class: str
    config: dict
    experts: int
    hidden: int
    intermediate: int
    top_k: int
    cpu: dict = field(default_factory=dict)  # --cpu: the same layer, tiny


LAYERS = (
    Layer("GLM-4.7-Flash", "glm4_moe_lite", "Glm4MoeLiteConfig", "Glm4MoeLiteMoE",
          dict(hidden_size=2048, moe_intermediate_size=1536, n_routed_experts=64, num_experts_per_tok=4, n_shared_experts=1,
               n_group=1, topk_group=1), 64, 2048, 1536, 4, dict(hidden_size=64, moe_intermediate_size=48)),
    Layer("Qwen3.5-35B-A3B", "qwen3_5_moe", "Qwen3_5MoeTextConfig", "Qwen3_5MoeSparseMoeBlock",
          dict(hidden_size=2048, moe_intermediate_size=512, num_experts=256, num_experts_per_tok=8,
               shared_expert_intermediate_size=512), 256, 2048, 512, 8,
          dict(hidden_size=64, moe_intermediate_size=16, shared_expert_intermediate_size=16)),
    Layer("DeepSeek-V3", "deepseek_v3", "DeepseekV3Config", "DeepseekV3MoE",
          dict(hidden_size=7168, moe_intermediate_size=2048, n_routed_experts=256, num_experts_per_tok=8, n_shared_experts=1,
               n_group=8, topk_group=4), 256, 7168, 2048, 8, dict(hidden_size=64, moe_intermediate_size=32)),
    Layer("gpt-oss-120b", "gpt_oss", "GptOssConfig", "GptOssMLP",
          dict(hidden_size=2880, intermediate_size=2880, num_local_experts=128, num_experts_per_tok=4), 128, 2880, 2880, 4,
          dict(hidden_size=64, intermediate_size=64)),
    Layer("Mixtral-8x7B", "mixtral", "MixtralConfig", "MixtralSparseMoeBlock",
          dict(hidden_size=4096, intermediate_size=14336, num_local_experts=8, num_experts_per_tok=2), 8, 4096, 14336, 2,
          dict(hidden_size=64, intermediate_size=224)),
)
