"""The permanent form of the generic wrapper: unpacked per-expert Linears that stay after calibration.

``--impl wrappers.permanent`` runs the suite on it. The experts stay as ``ExpertMLP`` Linears whose weights are
views of the original fused storage: nothing is copied, the original block object is released after the
context, and a saved checkpoint carries per-expert keys (``...experts.{i}.gate_proj.weight``) that load back
bit-exact into the same structure. Nothing is registered: the reference registry keeps the non-permanent form.
"""

from __future__ import annotations

import torch

from .blocks import CalibrationMoEBlock

__all__ = ["PermanentCalibrationMoEBlock", "CALIBRATION_WRAPPERS"]


class PermanentCalibrationMoEBlock(CalibrationMoEBlock):
    is_permanent = True

    def __init__(self, original, config=None, calibrate_all_experts: bool = True):
        super().__init__(original, config, calibrate_all_experts)
        self.register_state_dict_post_hook(_contiguous_entries)

    def restore(self, original):
        return self


def _contiguous_entries(module, state_dict, prefix, local_metadata) -> None:
    """Checkpoints get one contiguous tensor per key: a strided view (a transposed or interleaved fused layout)
    is copied at save time only, one tensor at a time, rather than while calibrating; so is every further key of
    a module all experts share (muse-spark's post-expert norm), which a checkpoint must not store as aliases."""
    seen: set[tuple] = set()
    for key, tensor in state_dict.items():
        if not key.startswith(prefix) or not isinstance(tensor, torch.Tensor):
            continue
        # state_dict detaches each entry anew, so an alias shows as the same memory, shape and strides
        identity = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()))
        if identity in seen or not tensor.is_contiguous():
            state_dict[key] = tensor.detach().clone(memory_format=torch.contiguous_format)
        seen.add(identity)


def __getattr__(name: str):
    # Computed on first use: the generic block names are known only once every wrappers module is imported.
    if name == "CALIBRATION_WRAPPERS":
        from . import GENERIC_BLOCKS

        return {block: PermanentCalibrationMoEBlock for block in GENERIC_BLOCKS}
    raise AttributeError(name)
