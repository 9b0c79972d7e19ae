"""The permanent form of the generic wrapper: unpacked per-expert Linears that stay after calibration.

``--impl wrappers.permanent`` runs the suite on it. The experts stay as ``ExpertMLP`` Linears whose weights are
views of the original fused storage: nothing is copied, the original block object is released after the
context, and a saved checkpoint carries per-expert keys (``...experts.{i}.gate_proj.weight``) that load back
bit-exact into the same structure. Nothing is registered: the reference registry keeps the non-permanent form.
"""

from __future__ import annotations

from .blocks import CalibrationMoEBlock

__all__ = ["PermanentCalibrationMoEBlock", "CALIBRATION_WRAPPERS"]


class PermanentCalibrationMoEBlock(CalibrationMoEBlock):
    is_permanent = True

    def restore(self, original):
        return self


def __getattr__(name: str):
    # Computed on first use: the generic block names are known only once every wrappers module is imported.
    if name == "CALIBRATION_WRAPPERS":
        from . import GENERIC_BLOCKS

        return {block: PermanentCalibrationMoEBlock for block in GENERIC_BLOCKS}
    raise AttributeError(name)
