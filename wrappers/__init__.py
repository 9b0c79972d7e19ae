"""Reference calibration wrappers. Importing this package registers them with ``reference.MoECalibrationModule``.

Most blocks are served by ``CalibrationMoEBlock``, which keeps the block's own routing and replaces only the
expert dispatch (``blocks.py``). Each other module of this package registers a family of block class names:
adding an architecture whose block calls ``experts(x, idx, weights)`` (transformers v5) or
``self.moe(x, idx, weights)`` (4.x DeepSeek style) is one name in a ``register_generic(...)`` call; only a
block that routes in a way no mechanism serves needs code of its own. Every module here is imported.

Such a block is covered even without its name: ``wrapper_by_structure`` is registered as the registry's class
resolver, so ``moe_calibration_context`` wraps any transformers block class whose source shows a structure a
generic mechanism serves (``mechanism_for_class``), the day a release adds it. Registered names come first.
"""

import importlib
import pkgutil

from reference import MoECalibrationModule

from .blocks import (
    CalibrationMoEBlock,
    FusedExpertsMechanism,
    MoeMethodMechanism,
    StructureVerdict,
    mechanism_for_class,
    register_generic,
    wrapper_by_structure,
)
from .experts import ExpertMLP, LinearExperts, dispatch_to_experts

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

MoECalibrationModule.register_class_resolver(wrapper_by_structure)

# Standardized names of the original block classes the generic wrapper serves.
GENERIC_BLOCKS = tuple(
    name for name in MoECalibrationModule.registered_names()
    if MoECalibrationModule.get_value_from_registry(name) is CalibrationMoEBlock
)

__all__ = [
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
