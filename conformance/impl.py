"""The implementation under test, chosen by one spec (``--impl SPEC`` or ``MOE_CONFORMANCE_IMPL=SPEC``), seen by
every check through one protocol, ``Implementation``, whatever kind it is.

How a spec selects a kind:

- ``reference`` (default): this project's ``wrappers`` with ``reference.moe_calibration_context``, a *registry*;
  besides its registered names it covers, by their structure, the blocks its registry's class resolvers serve
  (``covers``/``wrapper_for`` answer for those too, from the class the discovery scan finds under that name);
- ``llmcompressor``: with llm-compressor 0.12 or later (``linearize_moe``), a model conversion
  (``conformance.peers.llmc_linearize``); with 0.11, a registry: its ``MoECalibrationModule`` registry (after
  importing ``llmcompressor.modeling``, which registers its wrappers) and its ``moe_calibration_context``;
- ``defuser``, ``auto_round``: Defuser's ``convert_model`` and auto-round's replacements, model conversions
  (``conformance.peers``); the run's header says which project version and which form;
- a dotted module path, or ``module.path:NAME`` (the attributes of the object ``NAME`` in that module: several
  implementations in one module, such as the harness's own broken ones):

  - one defining ``CALIBRATION_WRAPPERS`` is a **registry** (``impl_registry``): original block class name ->
    wrapper class built as ``Wrapper(original=..., config=<the model's top-level config>,
    calibrate_all_experts=...)``, and optionally ``moe_calibration_context(model, calibrate_all_experts=True)``;
    without one, the harness's own context swaps the wrappers in (and non-permanent ones back out);
  - one defining ``prepare_model(model) -> model`` is a **model conversion** (``impl_conversion``): run once on
    a whole model, it may replace submodules below the MoE blocks, in place and permanently. Optionally
    ``calibration_mode(model, calibrate_all_experts)``, a context manager that switches the all-experts mode
    separately from the structure (a global flag or an environment variable); ``restore_model(model)``, which
    undoes ``prepare_model`` in place; ``expert_linears(block)``, the per-expert Linears of a converted block;
    ``covers(block_class) -> bool``;

  either may declare ``CONTRACT_LEVELS`` (``ContractLevels``): what it promises, so that a check of a contract
  it does not offer says "not offered" rather than FAIL.

The harness keeps an independent oracle: nothing here imports ``reference`` or ``wrappers`` except to load the
reference as the implementation under test.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

from torch import nn

__all__ = [
    "BLOCK_PATH",
    "ENV_VAR",
    "BlockModel",
    "WRAPPER_KEYWORDS",
    "ContractLevels",
    "ConstructionError",
    "Implementation",
    "ImplementationError",
    "load_implementation",
    "lookup_key",
]

from .options import IMPL_VAR as ENV_VAR  # noqa: E402  (declared with the options)
WRAPPER_KEYWORDS = ("original", "config", "calibrate_all_experts")


class ImplementationError(Exception):
    """The implementation spec cannot be used; the message says what is wrong and what to do."""


class ConstructionError(Exception):
    """A wrapper could not be built (or a model not prepared) with the calibration keywords."""


def lookup_key(name: str) -> str:
    """A block class name as registries compare them (compressed-tensors' convention, which llm-compressor and
    the reference follow): lower case, ``_`` and spaces as ``-``."""
    return name.replace("_", "-").replace(" ", "-").lower()


# What each contract level promises; the first of each is the strongest, and the registry form's default.
LEVELS: dict[str, dict[str, str]] = {
    "coverage": {  # which rows each expert's Linears receive in one call with calibrate_all_experts=True
        "all_tokens_once": "every token, exactly once",
        "all_tokens": "every token, duplicates allowed",
        "rotating": "some tokens per call, every expert over several calls (auxiliary rotating routes)",
        "routed_only": "no all-experts mode: the routed tokens only",
    },
    "output": {  # how the block's output is made while calibrating all experts (it must equal the original's)
        "exact": "one pass: the output is assembled from the very expert calls that are observed",
        "discard_pass": "an auxiliary pass whose output is dropped, then the routed pass (routed tokens seen again)",
    },
    "experts": {  # what the suite observes of each expert while calibrating
        "linear": "each expert's projections are nn.Linear modules (fused 3-D weights unpacked)",
        "fused_observed": "the experts stay fused (3-D weights, no per-expert nn.Linear) by design; expert_linears gives, "
        "per expert and projection, a module called with exactly the rows the implementation computes that projection on",
    },
    "restore": {  # what calibrating leaves behind
        "restores": "the model is as it was after calibrating (permanent registry wrappers: they stay and match)",
        "permanent": "the conversion stays; nothing is restored",
    },
}


@dataclass(frozen=True)
class ContractLevels:
    """The contract an implementation declares (``CONTRACT_LEVELS``, a mapping of these fields)."""

    coverage: str = "all_tokens_once"
    output: str = "exact"
    experts: str = "linear"
    restore: str = "restores"

    @classmethod
    def parse(cls, declared: Any, spec: str, defaults: ContractLevels | None = None) -> ContractLevels:
        """``declared`` (a mapping, or None for ``defaults``) checked against ``LEVELS``; a misspelt key or
        level is one error line."""
        defaults = defaults or cls()
        if declared is None:
            return defaults
        if not isinstance(declared, Mapping):
            raise ImplementationError(f"--impl {spec}: CONTRACT_LEVELS must be a mapping of {', '.join(LEVELS)}, not {declared!r}")
        unknown = sorted(set(declared) - set(LEVELS))
        if unknown:
            raise ImplementationError(f"--impl {spec}: CONTRACT_LEVELS has unknown key(s) {unknown}; known: {', '.join(LEVELS)}")
        for key, level in declared.items():
            if level not in LEVELS[key]:
                raise ImplementationError(
                    f"--impl {spec}: CONTRACT_LEVELS[{key!r}] = {level!r}; one of {', '.join(LEVELS[key])}"
                )
        return cls(**{f.name: declared.get(f.name, getattr(defaults, f.name)) for f in fields(cls)})

    def offers(self, key: str, levels: Sequence[str]) -> bool:
        return getattr(self, key) in levels

    def describe(self) -> str:
        return ", ".join(f"{f.name} {getattr(self, f.name)}" for f in fields(self))


@runtime_checkable
class Implementation(Protocol):
    """What every check sees of the implementation under test. The adapters: ``RegistryImplementation``
    (``impl_registry``) and ``ConversionImplementation`` (``impl_conversion``)."""

    name: str
    kind: str  # "registry" or "conversion"
    levels: ContractLevels

    def covers(self, block_class_name: str) -> bool:
        """Whether calibrating a model would touch this block class (a conversion without ``covers`` says
        True: the ``covered`` check then finds out by converting one)."""

    def calibrating_block(
        self, block: nn.Module, config: Any, calibrate_all_experts: bool, model_config: Any = None
    ) -> AbstractContextManager[nn.Module]:
        """While open, the module that calibrates in place of ``block`` (built with ``config``, the block's
        config, inside a model whose top-level config is ``model_config``), in the given mode: a wrapper of it,
        or the block converted (possibly in place, so expectations come from the original first)."""

    def calibrating_model(self, model: nn.Module, calibrate_all_experts: bool) -> AbstractContextManager[nn.Module]:
        """While open, ``model`` ready to calibrate in the given mode (the model to run is what it yields); on
        exit, what the implementation leaves behind (``levels.restore``)."""

    def expert_linears(self, module: nn.Module) -> Sequence[Any] | None:
        """The implementation's own enumeration of a calibrating module's per-expert Linears (per expert: a
        module, or a mapping of projection name -> nn.Linear), or None: the harness finds numbered children."""

    def describe(self) -> str:
        """One line for the run's header and reports."""


def load_implementation(spec: str | None = None) -> Implementation:
    """Resolve ``spec`` (default: ``$MOE_CONFORMANCE_IMPL`` or ``reference``); raise ``ImplementationError``
    with a one-line message when it cannot be used."""
    from . import impl_conversion, impl_registry

    spec = (spec or os.environ.get(ENV_VAR) or "reference").strip()
    if spec == "reference":
        return impl_registry.from_registry("reference", "moe_conformance.wrappers", "moe_conformance.reference.calibration")
    if spec == "llmcompressor" and not _has_module("llmcompressor.modeling.moe.linearize"):
        return impl_registry.from_registry("llmcompressor", "llmcompressor.modeling", "llmcompressor.modeling.moe_context")
    if spec in ("llmcompressor", *BUILTIN_PEERS):  # llm-compressor >= 0.12, Defuser, auto-round (conformance.peers)
        from .peers import builtin

        adapter = builtin(spec)
        return impl_conversion.from_namespace(f"{spec} = {adapter.__name__}", adapter)
    namespace = _namespace(spec)
    has_table = getattr(namespace, "CALIBRATION_WRAPPERS", None) is not None
    has_conversion = getattr(namespace, "prepare_model", None) is not None
    if has_table and has_conversion:
        raise ImplementationError(
            f"--impl {spec}: it defines both CALIBRATION_WRAPPERS (a registry) and prepare_model (a model "
            "conversion); point --impl at one of them with module.path:NAME"
        )
    if has_conversion:
        return impl_conversion.from_namespace(spec, namespace)
    if not has_table:
        raise ImplementationError(
            f"--impl {spec}: it defines no CALIBRATION_WRAPPERS mapping (original block class name -> wrapper "
            "class) and no prepare_model(model) function (a model conversion)"
        )
    return impl_registry.from_namespace(spec, namespace)


# Built-in specs for the field's model-conversion projects (``conformance.peers``); ``llmcompressor`` is one too
# where the installed llm-compressor has ``linearize_moe`` (0.12 and later), and its 0.11 registry otherwise.
BUILTIN_PEERS = ("defuser", "auto_round", "modelopt", "gptqmodel", "gptqmodel_override")


def _has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # the parent package is absent
        return False


def import_module(module_name: str, spec: str):
    import importlib

    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ImplementationError(
            f"--impl {spec}: cannot import {module_name!r} ({type(exc).__name__}: {exc}). "
            "Install it, or pass 'reference', 'llmcompressor' or an importable dotted module path."
        ) from None
    except Exception as exc:
        raise ImplementationError(f"--impl {spec}: importing {module_name!r} raised {type(exc).__name__}: {exc}") from None


def _namespace(spec: str) -> Any:
    """The module a spec names, or the object ``NAME`` of ``module.path:NAME``."""
    module_name, _, attribute = spec.partition(":")
    if not module_name.replace(".", "").replace("_", "").isalnum() or (attribute and not attribute.isidentifier()):
        raise ImplementationError(
            f"--impl {spec!r} is not 'reference', 'llmcompressor', a dotted module path (like mypkg.moe_wrappers) "
            "or module.path:NAME"
        )
    module = import_module(module_name, spec)
    if attribute:
        if not hasattr(module, attribute):
            raise ImplementationError(f"--impl {spec}: module {module_name!r} has no attribute {attribute!r}")
        return getattr(module, attribute)
    return module


BLOCK_PATH = "block"  # where a block sits in the model ``BlockModel`` makes of it


class BlockModel(nn.Module):
    """The smallest model a calibration context or a conversion accepts for one block: the block at
    ``.block`` (``BLOCK_PATH``) and the model's top-level ``.config``."""

    def __init__(self, block: nn.Module, config: Any):
        super().__init__()
        self.block = block
        self.config = config

    def forward(self, *args, **kwargs):
        return self.block(*args, **kwargs)


def qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
