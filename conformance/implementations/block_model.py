"""The smallest model a calibration context or a conversion accepts for one block."""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["BLOCK_PATH", "BlockModel"]

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
