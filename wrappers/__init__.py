"""Reference calibration wrappers. Importing this package registers them with ``reference.MoECalibrationModule``.

Most blocks are served by ``CalibrationMoEBlock``, which keeps the block's own routing and replaces only the
expert dispatch (``blocks.py``). Each other module of this package registers a family of block class names:
adding an architecture whose block calls ``experts(x, idx, weights)`` (transformers v5) or
``self.moe(x, idx, weights)`` (4.x DeepSeek style) is one name in a ``register_generic(...)`` call; only a
block that routes in a way no mechanism serves needs code of its own. Every module here is imported.
"""

import importlib
import pkgutil

from reference import MoECalibrationModule

from .blocks import CalibrationMoEBlock, FusedExpertsMechanism, MoeMethodMechanism, register_generic
from .experts import ExpertMLP, LinearExperts, dispatch_to_experts

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

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
    "dispatch_to_experts",
    "register_generic",
]
