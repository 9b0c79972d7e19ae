"""A transformers config's defaults shrunk to tiny sizes, by rules over attribute names.

The hand-written fixture entries (``fixtures/*.toml``) each shrink one config by hand. These rules are what
they learned, made generic, so that a block no one has written an entry for yet can still be checked
(``derived_fixtures.py``): hidden 32, experts <= 8 with top-k <= 2, expert width 24 (so that 2I != H and
I != H and every fused layout can be told apart by shape), shared experts 40 wide, dense MLPs 64, 3 layers,
4 heads of 8, LoRA ranks 16, 128 tokens, and the heads of linear-attention, indexer, sliding-window and Mamba
layers made as small as the attention's. Relations between defaults are kept where the model needs them
(key/value heads equal to the heads; ``head_dim`` = nope + rope dims; per-layer lists, found by their length,
cut to the layers kept, and lists of layer indices renumbered).
Whatever the rules miss, ``derived_fixtures`` finds through the whole model's largest tensor.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["tiny_overrides", "SIZES"]

SIZES = {
    "hidden": 32,
    "expert_width": 24,
    "shared_width": 40,
    "dense_width": 64,
    "experts": 8,
    "top_k": 2,
    "shared_experts": 2,
    "layers": 3,
    "heads": 4,
    "kv_heads": 2,
    "head_dim": 8,
    "rank": 16,
    "vocab": 128,
    "positions": 64,
    "window": 4,
    "state": 16,
    "other_width": 16,  # any other width left over 64 (a latent, a router, a projection)
}

# Integer rules, first match wins: (pattern over the attribute name, new value from (value, defaults)).
# A rule returning None leaves the attribute alone.
_S = SIZES
_INT_RULES: list[tuple[str, Any]] = [
    (r"token_ids?$", lambda v, d: v if v < _S["vocab"] else 0),  # pad/bos/eos ids inside the tiny vocabulary
    (r"(^|_)vocab_size", lambda v, d: min(v, _S["vocab"])),
    (r"^max_position_embeddings$", lambda v, d: min(v, _S["positions"])),
    (r"^(num_hidden_layers|num_layers|n_layers)$", lambda v, d: min(v, _S["layers"])),
    # the first dense layers, or where MoE layers start: one dense layer at most, so the MoE ones remain
    (r"^(first_k_dense_replace|num_dense_layers|moe_layer_start_index)$", lambda v, d: min(v, 1)),
    (r"^moe_layer_end_index$", lambda v, d: _S["layers"] - 1),
    (r"(^|_)layer_index_start$", lambda v, d: min(v, 1)),
    (r"(^|_)layer_index_end$", lambda v, d: min(v, _S["layers"] - 1)),
    (r"^max_window_layers$", lambda v, d: min(v, _S["layers"])),
    (r"^n_layers_per_", lambda v, d: 1),  # layers grouped in blocks whose bounds must be multiples of it
    # routing
    (r"^(num_experts_per_tok|num_experts_per_token|moe_k|moe_topk|moe_top_k|top_k|top_k_experts)$", lambda v, d: min(v, _S["top_k"])),
    (r"^(n|num|moe_num)_shared_experts$", lambda v, d: min(v, _S["shared_experts"])),
    (r"^(n_group|num_expert_group)$", lambda v, d: 2 if v > 1 else v),
    (r"^topk_group$", lambda v, d: 1 if v > 1 else v),
    (r"^zero_expert_num$", lambda v, d: min(v, 2)),  # identity experts (LongCat): a few
    (r"^((n|num)_(routed_|local_)?experts|moe_num_experts)$", lambda v, d: _S["experts"] if v > 0 else v),
    # widths
    (r"shared.*(intermediate|_dim)|share_expert_dim", lambda v, d: _S["shared_width"] if v > 0 else v),
    (r"(moe|expert).*(intermediate|ffn)|^expert_dim$", lambda v, d: _S["expert_width"]),
    (r"intermediate|ffn_hidden_size|ffn_dim|mlp_dim", lambda v, d: _S["dense_width"] if v > 0 else v),
    (r"^hidden_size$", lambda v, d: _S["hidden"]),
    # attention (plain, sliding-window swa_*, linear_*, indexer index_*, Mamba mamba_*)
    (r"^(.*_)?num_key_value_heads$", lambda v, d: None),  # _kv_heads, which needs the key's prefix
    (r"key_heads$", lambda v, d: min(v, _S["kv_heads"])),
    (r"value_heads$|heads$|heads_per", lambda v, d: min(v, _S["heads"])),
    (r"(^|_)head_dim$|_d_head$|^rotary_dim$", lambda v, d: _S["head_dim"] if v > 0 else v),
    (r"(lora_)?rank$|lowrank$", lambda v, d: _S["rank"] if v > 0 else v),
    (r"(^|_)n_groups$|_groups$", lambda v, d: 1),  # Mamba / output groups: 1 divides any head count
    (r"ssm_state_size$|d_state$", lambda v, d: min(v, _S["state"])),
    (r"^sliding_window(_size)?$", lambda v, d: _S["window"] if v > 0 else v),
]

# Widths no rule names: a key ending in _size/_dim(s) over 64, unless it is one of these kinds.
_NOT_A_WIDTH = re.compile(r"chunk|block_size|patch|image|kernel|sampl|hop|window|position|vocab|bins|channels")


# Sizes some configs leave None by default although their model needs them (Dots1's expert counts, HunYuan's
# head_dim, Qwen4-Exp's indexer heads): filled in, as a hand entry would.
_NONE_FILLS: list[tuple[str, int]] = [
    (r"^((n|num)_(routed_|local_)?experts|moe_num_experts)$", _S["experts"]),
    (r"^(num_experts_per_tok|num_experts_per_token|moe_k|moe_topk|moe_top_k|top_k_experts)$", _S["top_k"]),
    (r"^(n|num|moe_num)_shared_experts$", 1),
    (r"(moe|expert).*intermediate", _S["expert_width"]),
    (r"(^|_)head_dim$", _S["head_dim"]),
    (r"kv_heads$", _S["kv_heads"]),
    (r"(^|_)(num_|n_)heads$", _S["heads"]),
]


def _kv_heads(key: str, value: int, defaults: dict[str, Any]) -> int:
    """Key/value heads: as many as the heads (of the same prefix: swa_, ...) where the defaults have as many
    (MLA and others need it), else fewer."""
    prefix = key[: -len("num_key_value_heads")]
    heads = defaults.get(f"{prefix}num_attention_heads") or defaults.get("num_attention_heads") or 1
    return _S["heads"] if value >= heads else min(value, _S["kv_heads"])


def _int_rule(key: str, value: int, defaults: dict[str, Any]) -> int | None:
    if key.endswith("num_key_value_heads"):
        return _kv_heads(key, value, defaults)
    for pattern, rule in _INT_RULES:
        if re.search(pattern, key):
            return rule(value, defaults)
    sized = re.search(r"(_size|_dim|_dims)$", key) and not _NOT_A_WIDTH.search(key)
    if sized and value == defaults.get("hidden_size"):
        return _S["hidden"]  # another name for the hidden width (an adapter's input, a latent as wide)
    if sized and value > 64:
        return _S["other_width"]
    return None


def _none_fill(key: str) -> int | None:
    return next((size for pattern, size in _NONE_FILLS if re.search(pattern, key)), None)


def _kept_layers(defaults: dict[str, Any]) -> list[int] | None:
    """Which of the default layers the tiny model keeps: the first of each distinct kind (across every
    per-layer list: attention kind, dense/MoE, ...), then the layers right after the last one, up to 3."""
    count = defaults.get("num_hidden_layers")
    if not isinstance(count, int) or count <= _S["layers"]:
        return None
    per_layer = [v for k, v in defaults.items() if _is_per_layer(v, count) and not _is_index_list(k, v)]
    kinds = [tuple(str(v[i]) for v in per_layer) for i in range(count)]
    kept = list(dict.fromkeys(kinds[i] for i in range(count)))[: _S["layers"]]
    chosen = [kinds.index(k) for k in kept]
    # then the layers after the last kind found (more of the MoE layers), then any earlier ones
    for i in [*range(max(chosen) + 1, count), *range(count)]:
        if len(chosen) >= _S["layers"]:
            break
        if i not in chosen:
            chosen.append(i)
    return sorted(chosen)


def _is_per_layer(value: Any, count: int) -> bool:
    return isinstance(value, list) and len(value) == count


def _is_index_list(key: str, value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(re.search(r"(_layers|_indexes|_indices|_layer_ids)$", key))
        and all(isinstance(i, int) and not isinstance(i, bool) for i in value)
    )


def _scaled_sections(sections: list[int], target: int) -> list[int]:
    """Integer sections in the same proportions, summing to ``target`` (multimodal RoPE's ``mrope_section``,
    whose sections split half the rotary width; a section may be 0)."""
    total = sum(sections) or 1
    raw = [s * target / total for s in sections]
    out = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: out[i] - raw[i])[: target - sum(out)]:
        out[i] += 1
    return out


def _rope(value: Any, rotary_width: int, mrope: bool) -> Any:
    """RoPE parameters (flat, or per attention kind) fitted to the tiny rotary width: a partial factor that
    leaves no rotary pair gets 0.5; ``mrope_section`` (added where ``mrope``: the model reads one the config
    does not hold) splits half the rotary width actually used."""
    if not isinstance(value, dict):
        return value
    if not any(isinstance(v, dict) for v in value.values()):  # one set of parameters
        out = dict(value)
        factor = out.get("partial_rotary_factor")
        if isinstance(factor, (int, float)) and int(rotary_width * factor) < 2:
            out["partial_rotary_factor"] = factor = 0.5
        half = int(rotary_width * (factor or 1.0)) // 2
        if isinstance(out.get("mrope_section"), list):
            out["mrope_section"] = _scaled_sections(out["mrope_section"], half)
        elif mrope:
            out["mrope_section"] = _scaled_sections([1, 1, 1], half)
        return out
    return {k: _rope(v, rotary_width, mrope) for k, v in value.items()}


def tiny_overrides(defaults: dict[str, Any], mrope: bool = False) -> dict[str, Any]:
    """The config kwargs (only those that change) that shrink a config whose ``to_dict()`` is ``defaults``;
    ``mrope``: the model reads a multimodal-RoPE ``mrope_section`` (its modeling code names one)."""
    out: dict[str, Any] = {}
    kept = _kept_layers(defaults)
    count = defaults.get("num_hidden_layers")
    for key, value in defaults.items():
        if key.startswith("_") or key in ("id2label", "label2id"):
            continue
        if isinstance(value, bool):
            continue
        if value is None and key == "mlp_layer_types":
            # transformers' convention for per-layer MLP kinds; a config that leaves it None (DeepSeek-OCR-2's
            # text model) still reads it per layer: one dense layer, then MoE ones, as the hand entries have it
            new = ["dense"] + ["sparse"] * (_S["layers"] - 1)
        elif value is None:
            new = _none_fill(key)
        elif isinstance(value, int):
            new = _int_rule(key, value, defaults)
        elif isinstance(value, float):
            new = 0.0 if "jitter" in key else None
        elif isinstance(value, list) and "token_id" in key:
            new = [v if not isinstance(v, int) or v < _S["vocab"] else 0 for v in value]
        elif kept is not None and _is_per_layer(value, count):
            # one entry per layer (found by its length, whatever its name): the kept layers' entries; where the
            # entries name layers (Kolibri-1.1's kv_source_layers), renumbered, a layer whose one is not kept
            # naming itself
            new = [value[i] for i in kept]
            if _is_index_list(key, value):
                new = [kept.index(v) if v in kept else n for n, v in enumerate(new)]
        elif kept is not None and _is_index_list(key, value):
            new = [kept.index(i) for i in value if i in kept]
        else:
            new = None
        if new is not None and new != value:
            out[key] = new
    _keep_relations(defaults, out)
    merged = {**defaults, **out}
    # the rotary width: MLA's rope dims, else the head width (hidden / heads where no head_dim is set)
    rotary = merged.get("qk_rope_head_dim") or merged.get("head_dim") or (merged.get("hidden_size") or _S["hidden"]) // (merged.get("num_attention_heads") or 1)
    if isinstance(defaults.get("rope_parameters"), dict):
        rope = _rope(defaults["rope_parameters"], rotary, mrope)
        if rope != defaults["rope_parameters"]:
            out["rope_parameters"] = rope
    factor = defaults.get("partial_rotary_factor")
    if isinstance(factor, float) and int(rotary * factor) < 2:
        out["partial_rotary_factor"] = 0.5
    # no window set, yet sliding-window layers kept or configured (Step-3.7's sliding heads): a tiny window
    kinds = [v for value in merged.values() if isinstance(value, list) for v in value if isinstance(v, str)]
    sliding = any("sliding" in k for k in kinds) or any("sliding" in k and k != "sliding_window" for k in defaults)
    if "sliding_window" in defaults and defaults["sliding_window"] is None and sliding:
        out["sliding_window"] = _S["window"]
    return out


def _keep_relations(defaults: dict[str, Any], out: dict[str, Any]) -> None:
    """Relations the defaults hold that the model checks or relies on: ``head_dim`` and ``qk_head_dim`` =
    nope + rope dims (MLA); Mamba heads x head width = expand x hidden."""
    def new(key: str) -> Any:
        return out.get(key, defaults.get(key))

    nope, rope = defaults.get("qk_nope_head_dim"), defaults.get("qk_rope_head_dim")
    if isinstance(nope, int) and isinstance(rope, int):
        for key in ("head_dim", "qk_head_dim"):
            if defaults.get(key) == nope + rope:
                out[key] = new("qk_nope_head_dim") + new("qk_rope_head_dim")
    heads = next((k for k in ("mamba_n_heads", "mamba_num_heads") if isinstance(defaults.get(k), int)), None)
    width = next((k for k in ("mamba_d_head", "mamba_head_dim") if isinstance(defaults.get(k), int)), None)
    expand, hidden = defaults.get("mamba_expand"), defaults.get("hidden_size")
    if heads and width and isinstance(expand, int) and defaults[heads] * defaults[width] == expand * hidden:
        out[heads] = max(1, expand * new("hidden_size") // new(width))
