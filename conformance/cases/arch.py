"""Architecture cases: the entries of ``fixtures/*.toml`` turned into tiny random blocks, models and inputs.

Nothing here reaches a model hub: every block and model is built from a config on the CPU and given random
weights (``randomise_``), because transformers creates fused expert weights with ``torch.empty`` and zeroes
routing biases, which would leave routing trivial and the checks toothless.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["ArchCase", "BLOCK_LAYER_IDX", "FIXTURES_DIR", "SHAPES", "Shape", "randomise_", "transformers_module"]

# The fixture files: package data of an installed moe_conformance (moe_conformance/fixtures), the fixtures/ folder
# of a checkout (which an editable install maps to); MOE_CONFORMANCE_FIXTURES overrides either.
_PACKAGE = Path(__file__).resolve().parents[1]  # the package folder, above cases/
_INSTALLED_FIXTURES = _PACKAGE / "fixtures"
FIXTURES_DIR = Path(os.environ.get(
    "MOE_CONFORMANCE_FIXTURES", _INSTALLED_FIXTURES if _INSTALLED_FIXTURES.is_dir() else _PACKAGE.parent / "fixtures",
))

Shape = tuple[int, int]
# (batch, sequence): batch > 1 with an odd length, a single token, batch 1, and a longer batch so that
# most experts get routed tokens while some still do not.
SHAPES: tuple[Shape, ...] = ((2, 5), (1, 1), (1, 7), (3, 4))
# How many built blocks an architecture keeps to copy from (``ArchCase.make_block``): a check's settings share a
# few weight draws (one per variant, purpose and shape).
BUILT_BLOCKS_KEPT = 16
# The layer index standalone blocks are built at (for blocks whose constructor takes one): not 0, which some
# architectures keep dense.
BLOCK_LAYER_IDX = 1


class _Captured(Exception):
    """Stops a model once a hook has captured what a check needs."""


@dataclass(frozen=True)
class ArchCase:
    """One MoE block class of one architecture, as the fixtures describe it."""

    # The fields are the fixture schema (fixture_files.py): an entry's keys are these fields, those without a
    # default required; `fixture_key=False` marks the ones not written as keys.
    model_type: str = field(metadata={"fixture_key": False})  # the entry's name: [architectures.<model_type>]
    block: str
    module: str
    config_class: str
    experts: int
    projections: int
    model_class: str | None = None
    presets: tuple[str, ...] = ()  # the [presets.*] tables merged, in order, into `config`
    config: dict[str, Any] = field(default_factory=dict)
    model_config: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: {"default": {}})
    knobs: dict[str, list[Any]] = field(default_factory=dict)
    # check name (or "*") -> reason, or a table {reason, transformers = "<version specifier>", dtype = "..." or
    # [...], device = "cuda" or [...]} that limits the entry to some transformers versions / dtypes / devices
    skip: dict[str, Any] = field(default_factory=dict)
    xfail: dict[str, Any] = field(default_factory=dict)
    # Extra arguments of the block's forward: constant keyword values, keywords passed as None (TOML has no
    # null), and whether random `input_ids` of the input's [batch, sequence] shape are passed too.
    forward_kwargs: dict[str, Any] = field(default_factory=dict)
    forward_none: tuple[str, ...] = ()
    input_ids: bool = False
    # Whole models: pass the input ids as decoder_input_ids too (encoder-decoder models); or feed random
    # inputs_embeds instead of ids (a model that cannot embed ids itself, like the Qwen3-Omni talker).
    model_decoder_inputs: bool = False
    model_inputs_embeds: bool = False
    # The `@use_experts_implementation` layout flags (is_transposed, is_concatenated, has_bias, has_gate) of
    # fused experts that do not carry them (4.x and undecorated classes), to slice the expected expert weights.
    expert_layout: dict[str, bool] = field(default_factory=dict)
    # The original's experts module runs once on [E*T, H] rows, expert-major, each token pre-scaled by its
    # routing score for that expert and zero where it is not routed there (llama4's dense compute).
    dense_expert_inputs: bool = False
    # Experts stored as two `ParallelExperts` modules of the block (weights [E, out, in]), called with the rows
    # sorted by expert and the per-expert row counts: {"gate_up": name ([E, 2I, H], gate then up), "down": name
    # ([E, H, I])}. Used where the block holds them (4.57 granite; jetmoe).
    parallel_experts: dict[str, str] = field(default_factory=dict)
    # Per-expert weights stacked in tensors of the experts module (DBRX's 2-D [E*I, H]): projection name ->
    # parameter path below `experts`, viewed as [E, -1, last dim]; those in `expert_weights_transposed` are
    # stored [in, out] per expert.
    expert_weights: dict[str, str] = field(default_factory=dict)
    expert_weights_transposed: tuple[str, ...] = ()
    # Integer buffers of the block (paths below it) that map token ids to experts ([vocab, k], DeepSeek-V4's
    # hash routing `gate.tid2eid`): filled with k distinct random expert ids per row, as randomise_ does not
    # touch integer tensors and all-zero tables would route every token to expert 0.
    routing_tables: tuple[str, ...] = ()
    # Extra keyword arguments of the block's constructor besides the config (and layer_idx): NLLB-MoE's
    # `ffn_dim`, Ernie-4.5-VL's per-modality `intermediate_size`.
    block_kwargs: dict[str, Any] = field(default_factory=dict)
    # More `_keep_in_fp32_modules_strict`-style patterns: weights the original casts to float32 itself on its
    # first call (Switch/NLLB routers cast their classifier to `router_dtype` in place). Built that way, as
    # they are after any first call, so that running the original or a wrapper leaves the block unchanged.
    keep_in_fp32: tuple[str, ...] = ()
    # Seconds one test of this architecture may take before it is a TIMEOUT, where the run's limit (--moe-timeout,
    # 120 s) is too short for a legitimately slow architecture.
    timeout_s: float | None = None
    # The block is a decoder layer that routes on its own (gemma4: router and experts hang off the layer):
    # {"model": a model class of the package, built from the block's config; "layers": the path of its layer
    # list}. The layer's other inputs (position embeddings, masks, ...) are what that model passes to its layer
    # `BLOCK_LAYER_IDX` (the index standalone blocks are built at) for random ids of the input's shape, captured
    # with a hook. Caches are left out (a layer appends to them, so a second call would see another input): the
    # layer runs without one, as in the whole_model check.
    layer_inputs: dict[str, str] = field(default_factory=dict)
    # Whole models that take no token ids (a vision tower): their keyword inputs instead, name -> a shape
    # (random normal floats in the model's dtype) or {tensor = nested integers} (a constant tensor: an image
    # grid).
    model_inputs: dict[str, Any] = field(default_factory=dict)
    # Whole models built from a composite config (DiffusionGemma's): {"config_class": its class in the
    # package, "under": the sub-config key the block's config goes under, "config": the composite's other
    # kwargs (tiny sibling sub-configs, e.g. a vision tower's)}.
    model_composite: dict[str, Any] = field(default_factory=dict)
    # Other covered block classes the whole model also holds (DiffusionGemma's encoder layers beside its
    # decoder layers): whole_model expects the context to replace those too.
    model_also_holds: tuple[str, ...] = ()
    # "hand": an entry of fixtures/*.toml, reviewed by a maintainer; "derived": made by derived_fixtures.py
    # from the config class's defaults for a block no entry checks yet (checked, but not reviewed).
    source: str = field(default="hand", metadata={"fixture_key": False})

    @property
    def id(self) -> str:
        return self.model_type

    # -- the installed transformers ----------------------------------------------------------------------------

    @cached_property
    def _modeling(self):
        try:
            return transformers_module(self.module)
        except ModuleNotFoundError:
            return None

    @property
    def package(self):
        """The architecture's package, ``transformers.models.<dir>`` (its configs and model classes)."""
        return transformers_module(self.module.split(".")[0])

    def absent_reason(self) -> str | None:
        """Why this architecture cannot be checked with the installed transformers, or None."""
        import transformers

        if self._modeling is None or not hasattr(self._modeling, self.block):
            return f"{self.model_type}: {self.block} is not in the installed transformers {transformers.__version__}"
        return None

    @property
    def block_class(self) -> type[nn.Module]:
        reason = self.absent_reason()
        if reason:
            raise LookupError(reason + "; install a transformers version that has it, or deselect it with -k")
        return getattr(self._modeling, self.block)

    def config_type(self) -> type:
        """The config class ``config_class`` names, from the package or its modeling module."""
        return getattr(self.package, self.config_class, None) or getattr(self._modeling, self.config_class)

    # -- building ----------------------------------------------------------------------------------------------

    def make_config(self, overrides: dict[str, Any] | None = None, whole_model: bool = False):
        kwargs = dict(self.config)
        if whole_model:
            kwargs.update(self.model_config)
        kwargs.update(overrides or {})
        config = self.config_type()(**kwargs)
        # Standalone v5 blocks otherwise warn and fall back to eager anyway; whole models keep their default
        # (grouped_mm) so that the whole_model check sees what users run.
        if not whole_model:
            config._experts_implementation = "eager"
        return config

    def make_block(self, overrides: dict[str, Any] | None = None, seed: int = 0, dtype=torch.float32):
        """A block with random weights, and its config: a fresh copy each call (the caller may change it, an
        implementation may convert it in place)."""
        key = (repr(sorted((overrides or {}).items())), seed)
        if key not in self._built_blocks:
            # Building is most of a check's time (the config's validation, the block's own init, drawing the
            # weights); the modes and dtypes of a setting share one weight draw, so it is done once and copied.
            config = self.make_config(overrides)
            block_cls = self.block_class
            kwargs = {}
            if "layer_idx" in inspect.signature(block_cls.__init__).parameters:
                kwargs["layer_idx"] = BLOCK_LAYER_IDX
            kwargs.update(self.block_kwargs)
            block = block_cls(config, **kwargs)
            randomise_(block, seed)
            self._fill_routing_tables(block, seed)
            self._built_blocks[key] = (block.eval(), config)
            while len(self._built_blocks) > BUILT_BLOCKS_KEPT:
                self._built_blocks.pop(next(iter(self._built_blocks)))
        block, config = copy.deepcopy(self._built_blocks[key])
        return self._to_dtype(block, dtype, prefix="mlp."), config

    @cached_property
    def _built_blocks(self) -> dict:
        """Float32 blocks built by ``make_block``, the most recent ``BUILT_BLOCKS_KEPT`` (the suite runs one
        architecture's tests together)."""
        return {}

    def _fill_routing_tables(self, block: nn.Module, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed + 7)
        with torch.no_grad():
            for path in self.routing_tables:
                owner, _, name = path.rpartition(".")
                table = block.get_submodule(owner)._buffers.get(name)
                if table is None:
                    continue  # this layer's router has no table (e.g. a plain top-k layer)
                rows = [torch.randperm(self.experts, generator=generator)[: table.shape[-1]] for _ in range(table.shape[0])]
                table.copy_(torch.stack(rows))

    def top_level_config(self, config, extra: dict[str, Any] | None = None):
        """The config a whole model built around ``config`` holds as ``model.config``: ``config`` itself, or, for
        a composite model (``model_composite``), the composite config it goes under (with ``extra`` kwargs)."""
        if not self.model_composite:
            return config
        composite = getattr(self.package, self.model_composite["config_class"])
        return composite(**{self.model_composite["under"]: config}, **self.model_composite.get("config", {}), **(extra or {}))

    def make_model(self, seed: int = 0, dtype=torch.float32, config_dtype: torch.dtype | None = None):
        """A whole causal LM (dense layers beside MoE ones) with random weights, and its config. ``config_dtype``:
        the configs say that dtype before the model is built, as ``from_pretrained(dtype=...)`` has them (modules
        that copy their config when built keep it)."""
        config = self.make_config({"dtype": config_dtype} if config_dtype else None, whole_model=True)
        config = self.top_level_config(config, {"dtype": config_dtype} if config_dtype else {})
        model = getattr(self.package, self.model_class)(config)
        held = {self.block, *self.model_also_holds}
        randomise_(model, seed, buffers_in=lambda m: type(m).__name__ in held)
        for i, block in enumerate(m for m in model.modules() if type(m).__name__ == self.block):
            self._fill_routing_tables(block, seed + i)
        return self._to_dtype(model, dtype), config

    def _to_dtype(self, module: nn.Module, dtype: torch.dtype, prefix: str = "") -> nn.Module:
        """``module.to(dtype)``, keeping in float32 the parameters and buffers the model class keeps there
        (``_keep_in_fp32_modules_strict``, as ``from_pretrained`` does: some routers compute in float32 and fail
        on a bfloat16 weight). A pattern matches whole dotted components of a name; a standalone block's names
        are matched as if under ``prefix`` (``mlp.``), where the model holds it."""
        module = module.to(dtype).eval()
        if dtype == torch.float32 or not self.model_class:
            return module
        package = self.package
        patterns = getattr(getattr(package, self.model_class, None), "_keep_in_fp32_modules_strict", None) or ()
        patterns = (*patterns, *self.keep_in_fp32)
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            dotted = f".{prefix}{name}."
            if tensor.is_floating_point() and any(f".{p}." in dotted for p in patterns):
                tensor.data = tensor.data.float()
        return module

    def make_model_inputs(self, shape: Shape, seed: int, dtype=torch.float32) -> dict[str, Any]:
        """Keyword inputs of the whole model: random ids (or embeddings), an all-ones attention mask (4.57's
        multimodal text models mis-detect packed sequences without one), no cache."""
        generator = torch.Generator().manual_seed(seed)
        if self.model_inputs:
            return {
                name: torch.tensor(spec["tensor"]) if isinstance(spec, dict) else torch.randn(*spec, generator=generator).to(dtype)
                for name, spec in self.model_inputs.items()
            }
        input_ids = torch.randint(0, self.config["vocab_size"], shape, generator=generator)
        inputs: dict[str, Any] = {"attention_mask": torch.ones_like(input_ids), "use_cache": False}
        if self.model_inputs_embeds:
            inputs["inputs_embeds"] = torch.randn(*shape, self.config["hidden_size"], generator=generator).to(dtype)
        else:
            inputs["input_ids"] = input_ids
        if self.model_decoder_inputs:
            inputs["decoder_input_ids"] = input_ids
        return inputs

    def make_inputs(self, shape: Shape, seed: int, dtype=torch.float32) -> tuple[tuple, dict]:
        generator = torch.Generator().manual_seed(seed)
        hidden = torch.randn(*shape, self.config["hidden_size"], generator=generator).to(dtype)
        kwargs: dict[str, Any] = dict(self.forward_kwargs)
        kwargs.update({name: None for name in self.forward_none})
        if self.input_ids:
            kwargs["input_ids"] = torch.randint(0, self.config["vocab_size"], shape, generator=generator)
        if self.layer_inputs:
            layer_args, layer_kwargs = self._layer_inputs(shape, generator, dtype)
            return (hidden, *layer_args), {**layer_kwargs, **kwargs}
        return (hidden,), kwargs

    def _layer_inputs_model(self, dtype) -> nn.Module:
        """The model ``_layer_inputs`` runs, one per dtype (the same weights for every input: only the ids are
        drawn, so it is built once)."""
        if dtype not in self._layer_models:
            model = getattr(self.package, self.layer_inputs["model"])(self.make_config())
            self._layer_models[dtype] = randomise_(model, 0).to(dtype).eval()
        return self._layer_models[dtype]

    @cached_property
    def _layer_models(self) -> dict:
        """``_layer_inputs_model``'s models, by dtype."""
        return {}

    def _layer_inputs(self, shape: Shape, generator: torch.Generator, dtype) -> tuple[tuple, dict[str, Any]]:
        """The arguments after the hidden states that ``layer_inputs["model"]`` passes to its layer
        ``BLOCK_LAYER_IDX`` for random ids of ``shape`` (see ``layer_inputs``)."""
        from transformers.cache_utils import Cache

        model = self._layer_inputs_model(dtype)
        layer = model.get_submodule(self.layer_inputs["layers"])[BLOCK_LAYER_IDX]
        captured: dict[str, Any] = {}

        def grab(module, args, kwargs):
            captured["args"], captured["kwargs"] = args[1:], kwargs
            raise _Captured  # the later layers are not needed

        handle = layer.register_forward_pre_hook(grab, with_kwargs=True)
        input_ids = torch.randint(0, self.config["vocab_size"], shape, generator=generator)
        try:
            with torch.no_grad():
                model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False)
        except _Captured:
            pass
        finally:
            handle.remove()
        if not captured:
            raise LookupError(f"{self.model_type}: {self.layer_inputs['model']} never called its layer {BLOCK_LAYER_IDX}")

        def uncached(value):
            return None if isinstance(value, Cache) else value

        return tuple(map(uncached, captured["args"])), {k: uncached(v) for k, v in captured["kwargs"].items()}

    def expected_gap(self, kind: str, check: str, dtype: torch.dtype | None, device: str = "cpu") -> str | None:
        """The reason this check is a known ``skip`` or ``xfail`` (``kind``) here (on a ``device`` type), or
        None."""
        import transformers
        from packaging.specifiers import SpecifierSet

        entry = getattr(self, kind).get(check) or getattr(self, kind).get("*")
        if entry is None:
            return None
        if isinstance(entry, str):
            return entry
        if "transformers" in entry and transformers.__version__ not in SpecifierSet(entry["transformers"]):
            return None
        if "dtype" in entry and (dtype is None or str(dtype).removeprefix("torch.") not in _one_or_more(entry["dtype"])):
            return None
        if "device" in entry and device not in _one_or_more(entry["device"]):
            return None
        return entry["reason"]

    def variant_overrides(self, variant: str) -> dict[str, Any]:
        return dict(self.variants[variant])


def transformers_module(name: str):
    """``transformers.models.<name>`` (a model's package, or ``<dir>.modeling_<x>``), imported."""
    return importlib.import_module(f"transformers.models.{name}")


def _one_or_more(value: str | list[str]) -> list[str]:
    """A scoping key's value: one name (``dtype = "float16"``) or several (``dtype = ["bfloat16", "float16"]``)."""
    return [value] if isinstance(value, str) else list(value)


def randomise_(module: nn.Module, seed: int, buffers_in=None) -> nn.Module:
    """Give every floating parameter (and the floating buffers of the modules ``buffers_in`` selects, default
    all) random values so that routing is non-trivial: matrices N(0, 0.2); 1-D ``weight`` (norm scales)
    1 + N(0, 0.1); other vectors (biases, routing correction biases) N(0, 0.3)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = list(module.named_parameters())
    for name, sub in module.named_modules():
        if buffers_in is None or buffers_in(sub):
            tensors += [(f"{name}.{b}", t) for b, t in sub.named_buffers(recurse=False)]
    with torch.no_grad():
        for name, tensor in tensors:
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
            if tensor.dim() >= 2:
                value = 0.2 * noise
            elif name.endswith("weight"):
                value = 1.0 + 0.1 * noise
            else:
                value = 0.3 * noise
            tensor.copy_(value)
    return module


