"""Fixture cases derived from a config class's defaults, for MoE blocks that have no hand-written entry.

A transformers release adds MoE blocks before anyone writes their fixture entry. For every block the discovery
scan finds that no hand entry checks, a case is derived here from transformers alone (no implementation is asked
whether it can serve the block: a peer must be checkable on a class the reference does not cover): the config class the block is built from, its defaults shrunk by ``tiny_config``, the package's
``*ForCausalLM`` (else a ``*Model`` taking ids) as the whole model, shrunk further until it is tiny, and the
routing knobs the config has, for hypothesis. Such cases are marked ``source = "derived"``: they check the
block, but no one has reviewed them. Hand-written entries always win. A class for which no case can be
derived is reported with the reason (``Derived.problems``), never dropped silently.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from .arch import BLOCK_LAYER_IDX, ArchCase, transformers_module
from .discovery import MoEClass, discover_moe_classes
from .tiny_config import SIZES, tiny_overrides

__all__ = ["DERIVED", "HAND", "Derived", "DerivationError", "derive_case", "derived_cases"]

HAND, DERIVED = "hand", "derived"  # ArchCase.source

# tests/test_fixtures.py's limit on a whole fixture model; derived models are shrunk until they are under it.
WHOLE_MODEL_PARAMETERS = 3_000_000
_MAX_SHRINK_ROUNDS = 6

# Routing knobs a config may carry, and the values hypothesis combines (those of the hand-written entries).
_SWITCH_KNOBS = ("norm_topk_prob", "moe_renormalize", "use_expert_bias")
_SCALE_KNOBS = re.compile(r"^(moe_)?(routed|router)_scaling_factor$|^route_scale$")
_SHARED_COUNT_KNOBS = re.compile(r"^(n|num|moe_num)_shared_experts$")
_GROUPS = ((1, 1), (2, 1), (4, 2), (4, 4))  # (n_group, topk_group) over 8 experts


class DerivationError(Exception):
    """No case can be derived for a class; the message says why."""


@dataclass(frozen=True)
class Derived:
    cases: tuple[ArchCase, ...]
    problems: dict[str, str]  # discovered class name -> why no case could be derived for it


def derived_cases(hand_cases: list[ArchCase], excluded: set[str] | frozenset[str] = frozenset()) -> Derived:
    """A case for every discovered MoE class that no hand case checks and ``excluded`` (the non-targets) does
    not name; the classes no case could be derived for, with the reason. Class names compare exactly, as the
    completeness test compares them (a 4.57 entry for ``DeepseekV2MoE`` does not check 5.x's ``DeepseekV2Moe``)."""
    hand_blocks = frozenset(c.block for c in hand_cases)
    return _derive(hand_blocks, frozenset(c.model_type for c in hand_cases), frozenset(excluded))


@lru_cache(maxsize=8)
def _derive(hand_blocks: frozenset[str], taken: frozenset[str], excluded: frozenset[str]) -> Derived:
    cases, problems, names = [], {}, set(taken)
    for moe_class in discover_moe_classes():
        if moe_class.name in hand_blocks or moe_class.name in excluded:
            continue
        try:
            case = derive_case(moe_class, names)
        except DerivationError as why:
            problems[moe_class.name] = " ".join(str(why).split())  # one line: validation errors span several
            continue
        names.add(case.model_type)
        cases.append(case)
    return Derived(tuple(cases), problems)


def derive_case(moe_class: MoEClass, taken_names: set[str] | frozenset[str] = frozenset()) -> ArchCase:
    """The derived case of one discovered class; ``DerivationError`` says why there is none."""
    try:
        modeling = transformers_module(moe_class.module)
        package = transformers_module(moe_class.model_dir)
    except Exception as exc:
        raise DerivationError(f"transformers.models.{moe_class.module} cannot be imported ({type(exc).__name__}: {exc})") from None
    block_cls = getattr(modeling, moe_class.name)
    _require_standard_call(block_cls)
    config_cls, config, block = _tiny_config(block_cls, package, mrope="mrope_section" in inspect.getsource(modeling))
    experts, projections = _expert_counts(block)
    model_class, config = _tiny_model(block_cls, package, config_cls, config)
    layer_inputs = _layer_inputs(block_cls, package, config_cls, config)
    full = {**config_cls().to_dict(), **config}
    if not isinstance(full.get("hidden_size"), int):
        raise DerivationError(f"{config_cls.__name__} has no hidden_size to size the block's input by")
    model_type = getattr(config_cls, "model_type", "") or moe_class.model_dir
    if model_type in taken_names:
        model_type = f"{model_type}_{_snake(moe_class.name)}"
    return ArchCase(
        model_type=model_type,
        block=moe_class.name,
        module=moe_class.module,
        config_class=config_cls.__name__,
        model_class=model_class,
        # the checks read the input width (and the whole model's vocabulary) from the fixture's config
        config={**config, **{k: full[k] for k in ("hidden_size", "vocab_size") if k in full}},
        model_config={},
        experts=experts,
        projections=projections,
        variants={"default": {}},
        knobs=_knobs(block_cls, config_cls, config, full, experts),
        layer_inputs=layer_inputs,
        source=DERIVED,
    )


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _require_standard_call(block_cls: type) -> None:
    """The checks call a derived block as ``block(hidden_states)`` and build it as ``Block(config[, layer_idx])``:
    a block that needs more (input ids, a decoder layer's position embeddings) needs a hand entry saying how."""
    init = inspect.signature(block_cls.__init__).parameters
    extra = [n for n, p in list(init.items())[2:] if p.default is p.empty and n != "layer_idx" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if extra:
        raise DerivationError(f"its constructor needs {', '.join(extra)} besides the config: a hand entry must give them (block_kwargs)")
    forward = inspect.signature(block_cls.forward).parameters
    needed = [n for n, p in list(forward.items())[2:] if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if needed:
        raise DerivationError(f"its forward needs {', '.join(needed)} besides the hidden states: a hand entry must say how to feed them")


def _build(cls: type, config: Any, **kwargs: Any) -> nn.Module:
    """``cls(config)`` without allocating (meta tensors); where that fails, on the CPU (a tiny config)."""
    try:
        with torch.device("meta"):
            return cls(config, **kwargs)
    except Exception:
        return cls(config, **kwargs)


def _build_block(block_cls: type, config: Any) -> nn.Module:
    """The block as the checks build it: at layer ``BLOCK_LAYER_IDX`` where its constructor takes one."""
    takes_layer = "layer_idx" in inspect.signature(block_cls.__init__).parameters
    return _build(block_cls, config, **({"layer_idx": BLOCK_LAYER_IDX} if takes_layer else {}))


def _config_candidates(block_cls: type, package) -> list[type]:
    """Config classes the block may be built from, most likely first: its ``config`` annotation, the causal
    LM's config class, the package's text configs, then the others; composite configs (with sub-configs) last
    out: blocks are built from one of their parts."""
    from transformers import PretrainedConfig

    def is_config(obj: Any) -> bool:
        return isinstance(obj, type) and issubclass(obj, PretrainedConfig) and not getattr(obj, "sub_configs", None)

    annotation = inspect.signature(block_cls.__init__).parameters.get("config")
    hinted = getattr(annotation, "annotation", None)
    hinted = [*getattr(hinted, "__args__", ()), hinted]
    lm_configs = [getattr(getattr(package, n), "config_class", None) for n in dir(package) if n.endswith("ForCausalLM")]
    configs = [getattr(package, n) for n in sorted(dir(package)) if n.endswith("Config")]
    text = [c for c in configs if isinstance(c, type) and "Text" in c.__name__]
    ranked = [c for c in dict.fromkeys([*lm_configs, *text, *configs]) if is_config(c)]
    # a multimodal package holds several text configs (Qwen3-Omni's thinker and talker): the one whose name
    # shares the most words with the block's, and has fewest others, first
    block_words = set(_words(block_cls.__name__))
    ranked.sort(key=lambda c: -(len(block_words & set(_words(c.__name__))) - len(set(_words(c.__name__)) - block_words)))
    return [c for c in dict.fromkeys([*hinted, *ranked]) if is_config(c)]


def _words(name: str) -> list[str]:
    return [w for w in re.findall(r"[A-Z][a-z]*\d*|\d+", name.removesuffix("Config")) if w]


def _tiny_config(block_cls: type, package, mrope: bool) -> tuple[type, dict[str, Any], nn.Module]:
    """The first config class whose shrunk defaults build the block with its experts."""
    tried = []
    for config_cls in _config_candidates(block_cls, package):
        try:
            defaults = config_cls().to_dict()
            overrides = validated_overrides(config_cls, defaults, tiny_overrides(defaults, mrope=mrope))
            block = _build_block(block_cls, config_cls(**overrides))
            if not isinstance(getattr(block, "experts", None), nn.Module):
                # experts switched off by default (Gemma 4's enable_moe_block): switch on what reads so
                overrides.update({k: True for k, v in defaults.items() if v is False and re.search(r"moe|expert", k)})
                block = _build_block(block_cls, config_cls(**overrides))
        except Exception as exc:
            # a validator's refusal whole (it names the fields), other errors cut short
            tried.append(str(exc)[:600] if isinstance(exc, DerivationError) else f"{config_cls.__name__}: {type(exc).__name__}: {str(exc)[:160]}")
            continue
        if isinstance(getattr(block, "experts", None), nn.Module):
            return config_cls, overrides, block
        tried.append(f"{config_cls.__name__}: the block has no experts module")
    raise DerivationError("no config class of its package builds it from shrunk defaults (" + "; ".join(tried or ["none found"]) + ")")


_MAX_PUT_BACK = 4


def _refusal(config_cls: type, overrides: dict[str, Any]) -> str | None:
    """Why ``config_cls(**overrides)`` raises (its validators' message, one line), or None where it builds."""
    try:
        config_cls(**overrides)
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def validated_overrides(config_cls: type, defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides``, or, where the config's validators refuse them, the same with a few shrunk values put back
    at their defaults (Kolibri-1.1: a ``head_dim`` that is a multiple of 16, then query heads enough for its
    indexer). Each round puts back the one value that makes the config valid, preferring the fields the refusal
    names; else a named field whose default changes the refusal. Where that does not end in a valid config,
    ``DerivationError`` names the fields the refusal names and what would fix it."""
    refusal, first, put_back = _refusal(config_cls, overrides), None, []
    for _ in range(_MAX_PUT_BACK):
        if refusal is None:
            return overrides
        first = first or refusal
        named = [k for k in overrides if re.search(rf"\b{re.escape(k)}\b", refusal)]
        tries = {k: _refusal(config_cls, {o: v for o, v in overrides.items() if o != k}) for k in [*named, *(k for k in overrides if k not in named)]}
        key = next((k for k, r in tries.items() if r is None), None) or next((k for k in named if tries[k] != refusal), None)
        if key is None:
            break
        overrides = {o: v for o, v in overrides.items() if o != key}
        put_back.append(key)
        refusal = tries[key]
    if refusal is None:
        return overrides
    named = [k for k in defaults if re.search(rf"\b{re.escape(k)}\b", refusal)]
    fields = ", ".join(f"{k} (default {defaults.get(k)!r})" for k in named) or "no field by name"
    tried = f" after putting back {', '.join(put_back)}" if put_back else ""
    raise DerivationError(
        f"{config_cls.__name__}'s validators refuse the shrunk defaults{tried} ({refusal[:300]}); the refusal names "
        f"{fields}: a hand entry must set them to values the validator accepts (or tiny_config.py a rule for them)"
    )


def _expert_counts(block: nn.Module) -> tuple[int, int]:
    """(routed experts, Linears per expert) of a built block: fused experts by their ``down_proj`` rows (rows
    of ``gate_up_proj`` past them are identity experts), a ModuleList by its members' Linears."""
    experts = block.experts
    if isinstance(experts, nn.ModuleList):
        return len(experts), sum(isinstance(m, nn.Linear) for m in experts[0].modules())
    down = getattr(experts, "down_proj", None)
    if not (isinstance(down, torch.Tensor) and down.dim() == 3):
        raise DerivationError(
            f"its experts ({type(experts).__name__}) are neither a ModuleList nor fused 3-D experts with a down_proj: a "
            "hand entry must say how many experts and Linears a wrapper exposes"
        )
    return down.shape[0], 3 if getattr(experts, "has_gate", True) and hasattr(experts, "gate_up_proj") else 2


def _model_candidates(package, config_cls: type) -> list[str]:
    """The package's ``*ForCausalLM`` built from this config class, else its ``*Model`` classes that take ids."""
    def takes(name: str) -> bool:
        cls = getattr(package, name)
        return isinstance(cls, type) and getattr(cls, "config_class", None) is config_cls and "input_ids" in inspect.signature(cls.forward).parameters

    names = sorted(n for n in dir(package) if not n.startswith("_"))
    return [n for n in names if n.endswith("ForCausalLM") and takes(n)] + [n for n in names if n.endswith("Model") and takes(n)]


def _tiny_model(block_cls: type, package, config_cls: type, config: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The whole-model class and the config, shrunk further while the model is over ``WHOLE_MODEL_PARAMETERS``:
    each round, an integer config value that is a dimension of the largest tensor goes down to 16. Where no
    candidate builds and holds the block, the first is named all the same, so that the whole-model checks
    fail with its error rather than with "no model class"."""
    defaults = config_cls().to_dict()
    candidates = _model_candidates(package, config_cls)
    for name in candidates:
        tried = dict(config)
        for _ in range(_MAX_SHRINK_ROUNDS):
            try:
                model = _build(getattr(package, name), config_cls(**tried))
            except Exception:
                break  # this model cannot be built from the block's config: try the next
            if not any(type(m) is block_cls for m in model.modules()):
                break  # or it does not hold the block
            largest = max(model.parameters(), key=lambda p: p.numel())
            shrunk = _shrink_dimension_of(largest.shape, {**defaults, **tried})
            if sum(p.numel() for p in model.parameters()) <= WHOLE_MODEL_PARAMETERS or not shrunk:
                return name, tried  # tiny, or over the limit with no config value to blame (test_fixtures says so)
            tried.update(shrunk)
        else:
            return name, tried
    return (candidates[0] if candidates else None), config


def _layer_inputs(block_cls: type, package, config_cls: type, config: dict[str, Any]) -> dict[str, str]:
    """For a block that is a decoder layer routing on its own (Gemma 4's: its forward takes position
    embeddings or a mask), ``ArchCase.layer_inputs``: a ``*Model`` of the package built from the same config
    and the path of its layer list, whose call to the layer supplies those inputs. Empty for other blocks."""
    parameters = inspect.signature(block_cls.forward).parameters
    if not {"position_embeddings", "attention_mask"} & set(parameters):
        return {}
    for name in _model_candidates(package, config_cls):
        if name.endswith("ForCausalLM"):
            continue  # the bare model: the layers' inputs are what its forward builds
        try:
            model = _build(getattr(package, name), config_cls(**config))
        except Exception:
            continue
        for path, module in model.named_modules():
            if isinstance(module, nn.ModuleList) and any(type(m) is block_cls for m in module):
                return {"model": name, "layers": path}
    return {}


def _shrink_dimension_of(shape: torch.Size, full: dict[str, Any]) -> dict[str, int]:
    """Config values equal to one of ``shape``'s dimensions and above the tiny sizes, set to 16."""
    big = {d for d in shape if d > max(SIZES["vocab"], SIZES["dense_width"])}
    return {
        key: SIZES["other_width"]
        for key, value in full.items()
        if isinstance(value, int) and not isinstance(value, bool) and value in big and "token_id" not in key
    }


def _knobs(block_cls: type, config_cls: type, config: dict[str, Any], full: dict[str, Any], experts: int) -> dict[str, list]:
    """The routing knobs the config has, each with the values hypothesis combines; a value the block cannot
    be built with is dropped."""
    knobs: dict[str, list] = {}
    for key, value in full.items():
        if key in _SWITCH_KNOBS and isinstance(value, bool):
            knobs[key] = [True, False]
        elif _SCALE_KNOBS.match(key) and isinstance(value, (int, float)) and not isinstance(value, bool):
            knobs[key] = [1.0, 2.5]
        elif _SHARED_COUNT_KNOBS.match(key) and isinstance(value, int) and value >= 1:
            knobs[key] = [1, 2]
    group_key = next((k for k in ("n_group", "num_expert_group") if isinstance(full.get(k), int)), None)
    if group_key and isinstance(full.get("topk_group"), int) and experts % 4 == 0:
        knobs["groups"] = [{group_key: n, "topk_group": k} for n, k in _GROUPS]
    for name, values in list(knobs.items()):
        kept = [v for v in values if _builds(block_cls, config_cls, {**config, **(v if isinstance(v, dict) else {name: v})})]
        if len(kept) > 1:
            knobs[name] = kept
        else:
            del knobs[name]
    return knobs


def _builds(block_cls: type, config_cls: type, config: dict[str, Any]) -> bool:
    try:
        _build_block(block_cls, config_cls(**config))
        return True
    except Exception:
        return False
