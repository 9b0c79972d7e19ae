"""The model-conversion kind: what llm-compressor 0.14 (``linearize_moe`` and a global flag), Defuser
(``convert_model``) and auto-round (replacements and an environment variable) do. ``prepare_model(model)`` runs
once on a model and may replace submodules below its MoE blocks, in place and for good; a separate
``calibration_mode(model, calibrate_all_experts)`` context manager switches the all-experts mode.

The harness judges it by behaviour only: a block is put in a ``BlockModel`` and converted there (or a whole
model is), and every expectation (the original's output, routing and expert weights) is taken from the
original *before* it is converted, since the conversion may change it in place.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..vocabulary import raised
from .block_model import BLOCK_PATH, BlockModel
from .protocol import ConstructionError, ContractLevels, ImplementationError, qualname

__all__ = ["ConversionImplementation", "from_namespace"]


@dataclass(eq=False)  # one implementation under test is one object (caches are keyed by it)
class ConversionImplementation:
    name: str
    prepare_model: Callable[[nn.Module], Any]
    calibration_mode: Callable[[nn.Module, bool], Any] | None = None
    restore_model: Callable[[nn.Module], Any] | None = None
    own_expert_linears: Callable[[nn.Module], Sequence[Any]] | None = None
    covers_class: Callable[[type], bool] | None = None
    levels: ContractLevels = field(default_factory=lambda: ContractLevels(restore="permanent"))
    kind: str = "conversion"
    converts_in_place: bool = True
    # model -> what prepare_model made of it: a model is prepared once, however often it is calibrated
    _prepared: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, repr=False)

    def covers(self, block_class_name: str) -> bool:
        if self.covers_class is None:
            return True  # judged by behaviour: the covered check converts one and looks for expert Linears
        from ..cases.discovery import discovered_class

        block_cls = discovered_class(block_class_name)
        return True if block_cls is None else bool(self.covers_class(block_cls))

    def _prepare(self, model: nn.Module) -> nn.Module:
        prepared = self._prepared.get(model)
        if prepared is not None:
            return prepared
        try:
            prepared = self.prepare_model(model)
        except Exception as exc:
            raise ConstructionError(f"{qualname(self.prepare_model)}({type(model).__name__}) {raised(exc)}") from exc
        prepared = prepared if isinstance(prepared, nn.Module) else model  # None: converted in place
        self._prepared[model] = prepared
        return prepared

    @contextlib.contextmanager
    def calibrating_model(self, model: nn.Module, calibrate_all_experts: bool) -> Iterator[nn.Module]:
        prepared = self._prepare(model)
        mode = self.calibration_mode(prepared, calibrate_all_experts) if self.calibration_mode else contextlib.nullcontext()
        try:
            with mode:
                yield prepared
        finally:
            if self.levels.restore == "restores":
                del self._prepared[model]
                self.restore_model(prepared)

    @contextlib.contextmanager
    def calibrating_block(self, block: nn.Module, config: Any, calibrate_all_experts: bool, model_config: Any = None) -> Iterator[nn.Module]:
        holder = BlockModel(block, model_config if model_config is not None else config)
        with self.calibrating_model(holder, calibrate_all_experts) as model:
            try:
                module = model.get_submodule(BLOCK_PATH)
            except AttributeError:
                raise ConstructionError(
                    f"{qualname(self.prepare_model)} returned a {type(model).__name__} without the block at "
                    f"'{BLOCK_PATH}' where it was"
                ) from None
            yield module

    # The registry form's name for calibrating a whole model, for callers written against it.
    def calibration_context(self, model: nn.Module, calibrate_all_experts: bool = True):
        return self.calibrating_model(model, calibrate_all_experts)

    def expert_linears(self, module: nn.Module) -> Sequence[Any] | None:
        return None if self.own_expert_linears is None else self.own_expert_linears(module)

    def describe(self) -> str:
        mode = "calibration mode" if self.calibration_mode is not None else "no calibration mode"
        return f"{self.name} (model conversion, {mode}; {self.levels.describe()})"


def from_namespace(spec: str, namespace: Any) -> ConversionImplementation:
    """A module (or object) defining ``prepare_model`` and optionally ``calibration_mode``, ``restore_model``,
    ``expert_linears``, ``covers`` and ``CONTRACT_LEVELS``."""
    functions = {}
    for attribute in ("prepare_model", "calibration_mode", "restore_model", "expert_linears", "covers"):
        value = getattr(namespace, attribute, None)
        if value is not None and not callable(value):
            raise ImplementationError(f"--impl {spec}: {attribute} is not callable")
        functions[attribute] = value
    mode, restore = functions["calibration_mode"], functions["restore_model"]
    # Without a mode switch there is no all-experts mode; without restore_model nothing is restored.
    defaults = ContractLevels(
        coverage="all_tokens_once" if mode is not None else "routed_only",
        restore="restores" if restore is not None else "permanent",
    )
    levels = ContractLevels.parse(getattr(namespace, "CONTRACT_LEVELS", None), spec, defaults)
    if levels.restore == "restores" and restore is None:
        raise ImplementationError(f"--impl {spec}: CONTRACT_LEVELS says 'restores' but there is no restore_model(model) to undo prepare_model")
    if mode is None and levels.coverage != "routed_only":
        raise ImplementationError(
            f"--impl {spec}: coverage {levels.coverage!r} needs a calibration_mode(model, calibrate_all_experts) "
            "to switch it on; without one, declare coverage 'routed_only'"
        )
    return ConversionImplementation(
        spec, functions["prepare_model"], mode, restore, functions["expert_linears"], functions["covers"], levels
    )
