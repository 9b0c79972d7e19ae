"""What every check sees of the implementation under test: the ``Implementation`` protocol, whatever kind it is
(``registry.py``: wrappers put in the blocks' place; ``conversion.py``: a model converted in place), and the
contract levels an implementation may declare (``ContractLevels``). ``loader.py`` turns an ``--impl`` spec into
one. Checks ask the protocol (``converts_in_place``, ``levels``, ``expert_linears`` ...), never the kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "LEVELS",
    "WRAPPER_KEYWORDS",
    "ContractLevels",
    "ConstructionError",
    "Implementation",
    "ImplementationError",
    "import_module",
    "qualname",
]

WRAPPER_KEYWORDS = ("original", "config", "calibrate_all_experts")


class ImplementationError(Exception):
    """The implementation spec cannot be used; the message says what is wrong and what to do."""


class ConstructionError(Exception):
    """A wrapper could not be built (or a model not prepared) with the calibration keywords."""



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
    kind: str  # "registry" or "conversion": for the header and the results file; checks never branch on it
    levels: ContractLevels
    # True: calibrating changes the block in place (it stays in the model; submodules below it are replaced, as a
    # model conversion does). False: a wrapper takes the block's place (a registry). What the structure checks
    # expect follows from it: a replaced block, or the same block with per-expert Linears below it.
    converts_in_place: bool

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




# where the installed llm-compressor has ``linearize_moe`` (0.12 and later), and its 0.11 registry otherwise.






def qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"

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
