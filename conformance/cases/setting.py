"""Where a check runs: a ``Setting`` (architecture, check, variant, mode, dtype, device, seed), and the one call
that builds a block or a whole model, its config and its inputs for a setting and shape.

A setting's ``id`` is the only naming the suite has: the test id, the start of every failure message (so a
failure can be re-run with ``-k``) and the key of a report row. ``seed_for`` is the only place a random draw's
seed comes from. Weights and inputs are drawn on the CPU and then moved to the setting's device, so one seed
gives the same weights on every device.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..vocabulary import ConformanceFailure, HarnessError, fail
from .arch import FIXTURES_DIR, ArchCase, Shape
from .devices import DEFAULT as DEFAULT_DEVICE
from .devices import dtype_name

__all__ = [
    "MODES",
    "RUN_SEED",
    "BlockRun",
    "ModelRun",
    "Setting",
    "block_inputs",
    "build_block",
    "build_model",
    "fixture_entry",
]

MODES = {"all_experts": True, "routed": False}  # mode name -> calibrate_all_experts

# Every random block, input and model of the suite is seeded from its setting plus this run seed, so a run is
# reproducible and ``MOE_CONFORMANCE_SEED=<n>`` draws a different, equally reproducible set of weights and inputs.
RUN_SEED = int(os.environ.get("MOE_CONFORMANCE_SEED", "0"))


@dataclass(frozen=True)
class Setting:
    """One place a check runs. ``variant``, ``mode`` and ``dtype`` are None where the check does not vary by
    them (it runs on the default variant, runs no mode or both modes itself, or builds nothing); the id then
    leaves them out."""

    model_type: str
    check: str
    variant: str | None = None
    mode: str | None = None
    dtype: torch.dtype | None = None
    device: str = DEFAULT_DEVICE
    seed: int = RUN_SEED
    # A configuration drawn by a property-based check, in place of a named variant's overrides.
    overrides: Mapping[str, Any] | None = field(default=None, compare=False)
    # How a model in ``dtype`` (other than float32) got that dtype, where a run asks for both (``LOADS``):
    # "cast", ``model.to(dtype)`` after building (``config.dtype`` unset, as after loading and casting), or
    # "config_dtype", as ``from_pretrained(dtype=...)`` leaves it (``config.dtype`` and the sub-configs' set).
    # None: cast, and the id does not say so (the suite's ids before loads were an axis).
    load: str | None = None

    @property
    def id(self) -> str:
        """``<model_type>-<check>[-<variant>][-<mode>][-<dtype>[-<load>]]``, then ``-<device>`` off the default
        device (the CPU)."""
        parts = [self.model_type, self.check, self.variant, self.mode, self.dtype and dtype_name(self.dtype), self.load]
        parts.append(self.device if self.device != DEFAULT_DEVICE else None)
        return "-".join(p for p in parts if p)

    @property
    def variant_name(self) -> str:
        return self.variant or "default"

    @property
    def calibrate_all_experts(self) -> bool:
        if self.mode not in MODES:
            raise HarnessError(f"{self.id}: the check needs a mode ({' or '.join(MODES)}), its setting has {self.mode!r}")
        return MODES[self.mode]

    def label(self, shape: Shape | None = None, detail: str = "") -> str:
        """The id, then what else pins the failing run down: a drawn configuration and seed, the shape, and
        the check's own ``detail``."""
        where = [f"config {dict(self.overrides)} seed {self.seed}"] if self.overrides is not None else []
        where += [f"shape {tuple(shape)}"] if shape is not None else []
        where += [detail] if detail else []
        return ", ".join([self.id, *where])

    def fail(self, message: str, shape: Shape | None = None) -> ConformanceFailure:
        return fail(self.label(shape), message)

    def seed_for(self, purpose: str, shape: Shape | None = None) -> int:
        """The seed of one random draw: this setting's run seed, architecture, variant (or drawn configuration),
        what the draw is for and its shape. Checks that share a purpose share their blocks."""
        config = sorted(self.overrides.items()) if self.overrides is not None else self.variant_name
        return zlib.crc32("/".join(map(str, (self.seed, self.model_type, config, purpose, shape))).encode())

    def config_overrides(self, case: ArchCase) -> dict[str, Any]:
        return dict(self.overrides) if self.overrides is not None else case.variant_overrides(self.variant_name)

    def replace(self, **changes: Any) -> Setting:
        return dataclasses.replace(self, **changes)

    def record(self) -> dict[str, Any]:
        """The setting as plain data, for the run's results (report rows, the summary table)."""
        dtype = self.dtype and dtype_name(self.dtype)
        return {"id": self.id, "arch": self.model_type, "check": self.check, "variant": self.variant_name,
                "mode": self.mode, "dtype": dtype, "device": self.device, "load": self.load}


def _to_device(value: Any, device: str) -> Any:
    if isinstance(value, (torch.Tensor, nn.Module)):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


@dataclass
class BlockRun:
    """A freshly built block with random weights, its config, one input for it, and the label its failures
    start with."""

    block: nn.Module
    config: Any
    args: tuple
    kwargs: dict
    label: str
    # The top-level config of a whole model holding the block (``model.config``, what a calibration context
    # or a conversion is given): the block's own config, or the composite one it goes under.
    model_config: Any = None


@dataclass
class ModelRun:
    """A freshly built tiny whole model with random weights, its config, keyword inputs and failure label."""

    model: nn.Module
    config: Any
    inputs: dict[str, Any]
    label: str


def build_block(case: ArchCase, setting: Setting, shape: Shape | None, purpose: str = "block") -> BlockRun:
    """The block of ``case`` for ``setting`` (its variant or drawn configuration, dtype and device) with weights
    drawn for ``purpose`` and ``shape``, and inputs of ``shape`` (none when ``shape`` is None). The same
    arguments build the same block."""
    seed = setting.seed_for(purpose, shape)
    overrides = setting.config_overrides(case)
    if setting.load == "config_dtype" and setting.dtype is not None:
        overrides["dtype"] = setting.dtype  # before building, as from_pretrained: configs copied at build keep it
    block, config = _harness_step(case, setting, lambda: case.make_block(overrides, seed=seed, dtype=setting.dtype))
    args, kwargs = block_inputs(case, setting, shape, purpose) if shape is not None else ((), {})
    model_config = _harness_step(case, setting, lambda: case.top_level_config(config))
    _as_loaded(setting, config, model_config)
    return BlockRun(_to_device(block, setting.device), config, args, kwargs, setting.label(shape), model_config)



def block_inputs(case: ArchCase, setting: Setting, shape: Shape, purpose: str = "block") -> tuple[tuple, dict]:
    """The inputs ``build_block(case, setting, shape, purpose)`` comes with, for more shapes on one block."""
    seed = setting.seed_for(purpose, shape) + 1
    args, kwargs = _harness_step(case, setting, lambda: case.make_inputs(shape, seed, setting.dtype))
    return _to_device(args, setting.device), _to_device(kwargs, setting.device)


def build_model(case: ArchCase, setting: Setting, shape: Shape, purpose: str = "model") -> ModelRun:
    """A tiny whole model of ``case`` (the fixture's ``model_class``) for ``setting``, and inputs of ``shape``."""
    if not case.model_class:
        raise HarnessError(f"{setting.id}: {fixture_entry(case)} names no model_class, which the {setting.check} check builds")
    seed = setting.seed_for(purpose, shape)
    config_dtype = setting.dtype if setting.load == "config_dtype" else None
    model, config = _harness_step(case, setting, lambda: case.make_model(seed=seed, dtype=setting.dtype, config_dtype=config_dtype))
    _as_loaded(setting, config, getattr(model, "config", None))
    inputs = _harness_step(case, setting, lambda: case.make_model_inputs(shape, seed + 1, setting.dtype))
    return ModelRun(_to_device(model, setting.device), config, _to_device(inputs, setting.device), setting.label(shape))


def _as_loaded(setting: Setting, *configs: Any) -> None:
    """``load="config_dtype"``: the configs' ``dtype`` (and their sub-configs') set to the setting's, as
    ``from_pretrained(dtype=...)`` sets them; a conversion that builds its modules in ``config.dtype`` is then
    judged on the path most users load by. A cast leaves ``config.dtype`` as building left it (unset)."""
    if setting.load != "config_dtype" or setting.dtype is None:
        return
    seen: set[int] = set()

    def mark(config: Any) -> None:
        if config is None or id(config) in seen or not hasattr(config, "to_dict"):
            return
        seen.add(id(config))
        config.dtype = setting.dtype
        for key in getattr(config, "sub_configs", None) or ():
            mark(getattr(config, key, None))

    for config in configs:
        mark(config)


def _harness_step(case: ArchCase, setting: Setting, build):
    """Building from the fixture happens before any implementation code runs: its failure is a fixture (or
    transformers) fault."""
    try:
        return build()
    except HarnessError:
        raise
    except Exception as exc:
        raise HarnessError(
            f"{setting.id}: building from {fixture_entry(case)} raised {type(exc).__name__}: {exc}"
        ) from exc


def fixture_entry(case: ArchCase) -> str:
    """Where ``case`` is written, for messages that blame the fixture: ``fixtures/<file>.toml
    [architectures.<model_type>]``, the derivation for a derived case, or the entry alone where no file defines
    it (a case built in code)."""
    if case.source == "derived":
        return f"the fixture derived for {case.block} from {case.config_class}'s defaults (conformance/derived_fixtures.py)"
    entry = f"[architectures.{case.model_type}]"
    for path in sorted(FIXTURES_DIR.glob("*.toml")):
        lines = path.read_text().splitlines()
        if any(line.strip() == entry or line.startswith(entry[:-1] + ".") for line in lines):
            return f"{path.parent.name}/{path.name} {entry}"
    return f"fixture entry {entry}"
