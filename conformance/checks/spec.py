"""What a check declares (``CheckSpec``, like torch's OpInfo entries): its name, table heading, one-line contract,
the variants, modes and dtypes it runs under and the contract levels it judges; ``CheckSpec.settings`` turns
that into the ``Setting``s it runs in. The declarations themselves are ``table.py``'s ``CHECKS``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..cases.arch import ArchCase
from ..cases.devices import DEFAULT as DEFAULT_DEVICE
from ..cases.devices import dtypes_for
from ..cases.setting import RUN_SEED, Setting
from ..implementations.protocol import ContractLevels, Implementation

__all__ = ["DTYPES", "LOAD_CHOICES", "CheckSpec", "loads"]


@dataclass(frozen=True)
class CheckSpec:
    name: str
    short: str  # the summary table's column heading
    doc: str  # the contract: what must hold, in one line
    function: Callable[[ArchCase, Implementation, Setting], Any]
    modes: tuple[str | None, ...]  # None: the check runs in no single mode
    # None: the check does not depend on the dtype; DTYPES (the CPU's): every dtype of the device it runs on
    dtypes: tuple[torch.dtype | None, ...]
    per_variant: bool  # run for every routing variant, or for "default" only
    # The contract levels (``impl.ContractLevels``) the check judges, per level key: an implementation that
    # declares another level is "not offered" the check. Empty for checks that guard what calibration always
    # needs: those are never "not offered".
    needs: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Checks whose failure this one also shows (it observes the same behaviour on the way to its own): where one
    # of them fails too on the same architecture, the report names that one the root and this one a consequence.
    follows: tuple[str, ...] = ()

    def not_offered(self, levels: ContractLevels) -> str | None:
        """Why ``levels`` does not offer what this check judges (the declared level and the ones judged), or None."""
        for key, wanted in self.needs:
            if not levels.offers(key, wanted):
                return f"{key} {getattr(levels, key)!r}; {self.name} judges {key} {' or '.join(map(repr, wanted))}"
        return None

    def dtypes_on(self, device: str) -> tuple[torch.dtype | None, ...]:
        """The dtypes this check runs in on ``device``: a check declared with ``DTYPES`` runs in every dtype of
        the device (the device table's: float16 too on CUDA); others as declared."""
        return dtypes_for(device) if self.dtypes == DTYPES else self.dtypes

    def settings(self, case: ArchCase, variants: Sequence[str] | None = None, device: str = DEFAULT_DEVICE,
                 seed: int = RUN_SEED, load: str = "cast") -> Iterator[Setting]:
        """Every setting this check runs in for ``case`` on ``device``, models in a dtype other than float32
        loaded as ``load`` says (``loads``)."""
        dtypes = self.dtypes_on(device)
        for variant in (variants or list(case.variants)) if self.per_variant else [None]:
            for mode in self.modes:
                for dtype in dtypes:
                    for how in loads(load) if dtype not in (None, torch.float32) else (None,):
                        yield Setting(case.model_type, self.name, variant, mode, dtype, device, seed, load=how)

LOAD_CHOICES = {"cast": (None,), "config_dtype": ("config_dtype",), "both": ("cast", "config_dtype")}

def loads(choice: str) -> tuple[str | None, ...]:
    """The settings' ``load`` values for a ``--load`` choice: ``cast`` (default; ``.to(dtype)``, ids unchanged),
    ``config_dtype`` (as ``from_pretrained(dtype=...)``), or ``both``, each its own setting with the load in its
    id, so a failure says which path broke."""
    if choice not in LOAD_CHOICES:
        raise ValueError(f"--load {choice!r}: one of {', '.join(LOAD_CHOICES)}")
    return LOAD_CHOICES[choice]

DTYPES = dtypes_for("cpu")  # float32 and bfloat16; on CUDA float16 too (CheckSpec.dtypes_on)
