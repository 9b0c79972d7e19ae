"""A model-conversion implementation, shaped like the field's real ones (llm-compressor 0.14's ``linearize_moe``
with its global flag, Defuser's ``convert_model``): ``prepare_model`` replaces every fused experts submodule in
place, for good, with the reference's ``LinearExperts`` (per-expert Linears viewing the fused weights); which
tokens the experts see is a module-global flag that ``calibration_mode`` switches, not part of the structure.

``--impl tests.conversion_impl`` is the correct one. ``Conversion(bug=...)`` makes the broken ones that
``tests/mutants.py`` lists (``--impl tests.mutants:<name>``): the flag never set, a conversion that misses a
block, one that patches the experts class for the whole process, and a mode that switches the experts *class*
(breaking every block that was not converted).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from torch import nn

from moe_conformance.wrappers.decorated import linear_experts
from moe_conformance.wrappers.experts import LinearExperts, is_fused_experts

__all__ = ["BUGS", "CONTRACT_LEVELS", "CONVERSION_MUTANTS", "Conversion", "ConversionMutant", "RestoringConversion", "calibration_mode", "converts", "prepare_model"]

# The global flag: while True, every converted expert runs on every token of its block.
_calibrate_all_experts = False

CONTRACT_LEVELS = {"coverage": "all_tokens_once", "output": "exact", "restore": "permanent"}

BUGS = {
    "flag_never_set": "calibration_mode never sets the global flag (llm-compressor #2826: the option never wired up)",
    "misses_a_block": "prepare_model returns after converting the first block: the others are never calibrated",
    "patches_experts_class": "prepare_model patches the fused experts class's forward for the whole process",
    "mode_patches_experts_class": "calibration_mode switches the experts class itself, assuming every instance was "
    "converted: a block left unconverted breaks",
}


class _GlobalFlag:
    """The all-experts mode read from the module-global flag rather than the experts' own attribute."""

    @property
    def calibrate_all_experts(self) -> bool:
        return _calibrate_all_experts

    @calibrate_all_experts.setter
    def calibrate_all_experts(self, value: bool) -> None:
        pass  # LinearExperts sets it when built; the flag decides


class FlagLinearExperts(_GlobalFlag, LinearExperts):
    """``LinearExperts`` whose all-experts mode is the module's global flag."""


_flag_classes: dict[type, type] = {LinearExperts: FlagLinearExperts}


def flag_experts(fused: nn.Module) -> LinearExperts:
    """The reference's per-expert Linears for ``fused`` (only its decorated dispatch, where its class wraps
    that: Ergo's per-expert norm stays), in the global flag's mode."""
    experts = linear_experts(fused)
    cls = type(experts)
    if cls not in _flag_classes:
        _flag_classes[cls] = type(f"Flag{cls.__name__}", (_GlobalFlag, cls), {"__module__": __name__})
    experts.__class__ = _flag_classes[cls]
    return experts


def _forward_through_linears(self, hidden_states, top_k_index, top_k_weights):
    """A fused experts forward that unpacks itself on every call: correct, and installed on the class."""
    return FlagLinearExperts(self).forward(hidden_states, top_k_index, top_k_weights)


class Conversion:
    """One conversion, correct (``bug=None``) or with one of ``BUGS``."""

    CONTRACT_LEVELS = CONTRACT_LEVELS

    def __init__(self, bug: str | None = None):
        if bug is not None and bug not in BUGS:
            raise ValueError(f"unknown bug {bug!r}; one of {sorted(BUGS)}")
        self.bug = bug
        self.converted_classes: set[type] = set()

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Every module whose ``experts`` child is a v5 fused experts module gets ``FlagLinearExperts`` there."""
        for module in list(model.modules()):
            experts = getattr(module, "experts", None)
            if not isinstance(experts, nn.Module) or isinstance(experts, LinearExperts) or not is_fused_experts(experts):
                continue
            self.converted_classes.add(type(experts))
            if self.bug == "patches_experts_class":
                type(experts).forward = _forward_through_linears
            module.experts = flag_experts(experts)
            if self.bug == "misses_a_block":
                return model
        return model

    @contextlib.contextmanager
    def calibration_mode(self, model: nn.Module, calibrate_all_experts: bool) -> Iterator[None]:
        global _calibrate_all_experts
        previous = _calibrate_all_experts
        if self.bug != "flag_never_set":
            _calibrate_all_experts = calibrate_all_experts
        patched = {cls: cls.__dict__.get("forward") for cls in self.converted_classes} if self.bug == "mode_patches_experts_class" else {}
        for cls in patched:
            cls.forward = FlagLinearExperts.forward
        try:
            yield
        finally:
            _calibrate_all_experts = previous
            for cls, forward in patched.items():
                if forward is None:
                    del cls.forward
                else:
                    cls.forward = forward


_correct = Conversion()
prepare_model = _correct.prepare_model
calibration_mode = _correct.calibration_mode


class RestoringConversion(Conversion):
    """The same conversion, undone by ``restore_model`` (``--impl tests.conversion_impl:restoring``): the
    fused experts modules it replaced go back, so it can declare ``restore: restores``."""

    CONTRACT_LEVELS = {**CONTRACT_LEVELS, "restore": "restores"}

    def __init__(self):
        super().__init__()
        self.replaced: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> [(owner, fused experts)]

    def prepare_model(self, model: nn.Module) -> nn.Module:
        owners = [(m, m.experts) for m in model.modules() if converts(m) and not isinstance(m.experts, LinearExperts)]
        self.replaced[model] = owners
        return super().prepare_model(model)

    def restore_model(self, model: nn.Module) -> nn.Module:
        for owner, experts in self.replaced.pop(model, []):
            owner.experts = experts
        return model


restoring = RestoringConversion()


def converts(block: nn.Module) -> bool:
    """Whether this conversion serves ``block``: its experts are a v5 fused experts module."""
    experts = getattr(block, "experts", None)
    return isinstance(experts, nn.Module) and is_fused_experts(experts)


@dataclass
class ConversionMutant:
    """A broken conversion, for ``tests/mutants.py``'s catalogue: ``--impl tests.mutants:<name>``."""

    name: str
    flaw: str  # a key of BUGS
    applies: Callable[[nn.Module], bool] = converts

    def __post_init__(self):
        conversion = Conversion(self.flaw)
        self.bug = BUGS[self.flaw]
        self.prepare_model = conversion.prepare_model
        self.calibration_mode = conversion.calibration_mode
        self.CONTRACT_LEVELS = CONTRACT_LEVELS

    @property
    def impl_spec(self) -> str:
        return f"tests.mutants:{self.name}"


CONVERSION_MUTANTS = {m.name: m for m in (ConversionMutant(f"conversion_{flaw}", flaw) for flaw in BUGS)}
