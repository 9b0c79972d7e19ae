"""GPTQModel 7.7.0: `ExpertsRoutingBypass` does not reach the experts of several MoE model types on transformers 5.x.

Standalone, in two parts. First GPTQModel's own model definitions (`models.auto.MODEL_MAP`) for MoE model types of
transformers 5.24: the bypass needs the definition's `moe_lifecycle_hooks` (without them `ModuleLooper` warns
"MoE optimization will be disabled") and its projection names; `ExpertsRoutingOverride` needs its
`dynamic_expert_index` (without one the looper applies no override). Then a tiny Lfm2MoeForCausalLM built from a
config (no hub), unfused by `defuser.convert_model` as GPTQModel's loader does: its definition's hooks name the
projections w1/w3/w2 (`W1W3W2MoELifecycleHooks`, as its module tree does), Defuser names them
gate_proj/up_proj/down_proj, so the subset the looper builds from those names holds none of them and
`forward_to_all_experts` replays no expert. Counts the token rows each expert's down projection receives in one
calibration forward through the bypass. Exits 0.
"""

import torch
from transformers import Lfm2MoeConfig, Lfm2MoeForCausalLM
from types import SimpleNamespace

from defuser import convert_model
from gptqmodel.models.auto import MODEL_MAP

for model_type in ("qwen3_moe", "mixtral", "lfm2_moe", "minimax", "minimax_m2", "diffusion_gemma", "ernie4_5_moe", "gpt_oss",
                   "granitemoe", "granitemoehybrid", "jamba", "phimoe", "nemotron_h", "dbrx", "jetmoe", "switch_transformers", "nllb_moe"):
    definition = MODEL_MAP.get(model_type)
    hooks = getattr(definition, "moe_lifecycle_hooks", None)
    names = (hooks.gate_proj_name, hooks.up_proj_name, hooks.down_proj_name) if hooks is not None else None
    print(f"{model_type}: definition {getattr(definition, '__name__', None)}, lifecycle hooks "
          f"{type(hooks).__name__ if hooks is not None else None} {names or ''}; dynamic_expert_index "
          f"{getattr(definition, 'dynamic_expert_index', None)!r}")

config = Lfm2MoeConfig(
    vocab_size=128, hidden_size=32, intermediate_size=64, moe_intermediate_size=24, num_experts=8, num_experts_per_tok=2,
    num_hidden_layers=2, num_dense_layers=1, layer_types=["conv", "full_attention"], num_attention_heads=4, num_key_value_heads=2,
)
torch.manual_seed(0)
model = Lfm2MoeForCausalLM(config).eval()
convert_model(model, cleanup_original=False)
block = model.model.layers[1].feed_forward
hooks = MODEL_MAP["lfm2_moe"].moe_lifecycle_hooks
experts = list(block.experts)
print(f"lfm2_moe after Defuser: expert 0's Linears {sorted(n for n, m in experts[0].named_children() if isinstance(m, torch.nn.Linear))}; "
      f"the hooks look for {hooks.gate_proj_name}/{hooks.up_proj_name}/{hooks.down_proj_name}")
names = (hooks.gate_proj_name, hooks.up_proj_name, hooks.down_proj_name)
subset = {f"feed_forward.experts.{i}.{n}": getattr(e, n) for i, e in enumerate(experts) for n in names if hasattr(e, n)}
rows = [0] * len(experts)
for e, expert in enumerate(experts):
    expert.down_proj.register_forward_pre_hook(lambda m, a, e=e: rows.__setitem__(e, rows[e] + a[0].reshape(-1, a[0].shape[-1]).shape[0]))
looper = SimpleNamespace(_set_processor_hooks_paused=lambda processor, paused: None)
original = block.forward
block.forward = lambda hidden_states, **kw: hooks.forward_to_all_experts(
    moe_block=block, hidden_states=hidden_states, processor=SimpleNamespace(), subset=subset, ordered_module_names=list(subset),
    original_forward=original, model_class=None, module_looper=looper, moe_block_prefix="feed_forward", **kw)
ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    model(input_ids=ids)
print(f"subset from the hooks' names: {len(subset)} modules; token rows per expert's down_proj through the bypass: {rows} "
      f"(the batch has {ids.numel()} tokens: the bypass promises every one to every expert)")
