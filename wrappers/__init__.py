"""Reference calibration wrappers. Importing this package registers them with ``moe_conformance.reference.MoECalibrationModule``.

Every block is served by ``CalibrationMoEBlock``, which keeps the block's own routing and replaces only the
expert dispatch (``blocks.py``) by a *mechanism*. ``table.py`` is the one table from block class name to
mechanism, and registers every name in it: adding an architecture whose block calls ``experts(x, idx, weights)``
(transformers v5) or ``self.moe(x, idx, weights)`` (4.x DeepSeek style) is one ``GENERIC`` line there; only a
layout no mechanism serves needs a mechanism module of its own (``inline_topk.py``, ``llama4.py``, ...).

Such a block is covered even without its name: ``wrapper_by_structure`` is registered as the registry's class
resolver, so ``moe_calibration_context`` wraps any transformers block class whose source shows a structure a
generic mechanism serves (``mechanism_for_class``), the day a release adds it. Registered names come first.
"""

from moe_conformance.reference import MoECalibrationModule

from .blocks import (
    CalibrationMoEBlock,
    FusedExpertsMechanism,
    MoeMethodMechanism,
    StructureVerdict,
    mechanism_for_class,
    wrapper_by_structure,
)
from .experts import ExpertMLP, LinearExperts, dispatch_to_experts
from .table import BLOCK_MECHANISMS, GENERIC, register_generic

MoECalibrationModule.register_class_resolver(wrapper_by_structure)

# Standardized names of the original block classes the generic wrapper serves.
GENERIC_BLOCKS = tuple(
    name for name in MoECalibrationModule.registered_names()
    if MoECalibrationModule.get_value_from_registry(name) is CalibrationMoEBlock
)

__all__ = [
    "BLOCK_MECHANISMS",
    "GENERIC",
    "GENERIC_BLOCKS",
    "CalibrationMoEBlock",
    "ExpertMLP",
    "FusedExpertsMechanism",
    "LinearExperts",
    "MoeMethodMechanism",
    "StructureVerdict",
    "dispatch_to_experts",
    "mechanism_for_class",
    "register_generic",
    "wrapper_by_structure",
]
