"""The registry kind: a table from original block class name to wrapper class (llm-compressor 0.11's
``MoECalibrationModule`` registry, the reference's, or a module's ``CALIBRATION_WRAPPERS``), and the context
that swaps the wrappers in: the implementation's own ``moe_calibration_context``, or, where it has none, the
harness's ``swapping_wrappers`` (kept here rather than borrowed from ``reference``, so that the harness never
judges anyone with the reference's code).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..cases.discovery import lookup_key
from ..vocabulary import raised
from .protocol import WRAPPER_KEYWORDS, ConstructionError, ContractLevels, ImplementationError, import_module, qualname

__all__ = ["RegistryImplementation", "from_namespace", "from_registry", "swapping_wrappers"]


@dataclass
class RegistryImplementation:
    name: str
    wrappers: Mapping[str, type]  # lookup_key(original class name) -> wrapper class
    context: Callable[..., Any] | None = None  # the implementation's own moe_calibration_context
    version: str = ""
    # A registry's class resolution (the reference's MoECalibrationModule.resolve_by_class): block class ->
    # wrapper, for classes whose name is not in `wrappers`. None: the implementation covers names only.
    by_class: Callable[[type], type | None] | None = None
    levels: ContractLevels = field(default_factory=ContractLevels)
    kind: str = "registry"
    converts_in_place: bool = False

    def wrapper_for(self, block_class_name: str) -> type | None:
        wrapper_cls = self.wrappers.get(lookup_key(block_class_name))
        if wrapper_cls is None and self.by_class is not None:
            from ..cases.discovery import discovered_class

            block_cls = discovered_class(block_class_name)
            wrapper_cls = self.by_class(block_cls) if block_cls is not None else None
        return wrapper_cls

    def covers(self, block_class_name: str) -> bool:
        return self.wrapper_for(block_class_name) is not None

    def covered_by_name(self, block_class_name: str) -> bool:
        """Whether a wrapper is registered under this name (rather than found from the class's structure)."""
        return lookup_key(block_class_name) in self.wrappers

    def wrap(self, original: nn.Module, config: Any, calibrate_all_experts: bool) -> nn.Module:
        """Build the wrapper for ``original`` as a context would; a constructor error is reported as such."""
        name = type(original).__name__
        wrapper_cls = self.wrapper_for(name)
        if wrapper_cls is None:
            raise LookupError(f"uncovered: calibration would be silently skipped ({self.name} has no wrapper for {name})")
        try:
            return wrapper_cls(original=original, config=config, calibrate_all_experts=calibrate_all_experts)
        except Exception as exc:
            raise ConstructionError(
                f"{qualname(wrapper_cls)}(original={name}, config=..., calibrate_all_experts={calibrate_all_experts}) "
                f"{raised(exc)}"
            ) from exc

    @contextlib.contextmanager
    def calibrating_block(self, block: nn.Module, config: Any, calibrate_all_experts: bool, model_config: Any = None) -> Iterator[nn.Module]:
        # The wrapper gets the model's top-level config, as a context gives it `model.config`.
        yield self.wrap(block, model_config if model_config is not None else config, calibrate_all_experts)

    @contextlib.contextmanager
    def calibrating_model(self, model: nn.Module, calibrate_all_experts: bool) -> Iterator[nn.Module]:
        with self.calibration_context(model, calibrate_all_experts=calibrate_all_experts):
            yield model  # llm-compressor's context yields nothing: the model is what is calibrated

    def calibration_context(self, model: nn.Module, calibrate_all_experts: bool = True):
        if self.context is not None:
            return self.context(model, calibrate_all_experts=calibrate_all_experts)
        return swapping_wrappers(model, self.wrapper_for, calibrate_all_experts)

    def expert_linears(self, module: nn.Module) -> None:
        return None  # a wrapper exposes its experts as numbered children

    def describe(self) -> str:
        context = "own context" if self.context is not None else "harness context"
        structure = " + coverage by structure" if self.by_class is not None else ""
        levels = "" if self.levels == ContractLevels() else f"; {self.levels.describe()}"
        return f"{self.name}{' ' + self.version if self.version else ''} ({len(self.wrappers)} wrappers{structure}, {context}{levels})"


@contextlib.contextmanager
def swapping_wrappers(model: nn.Module, wrapper_for: Callable[[str], type | None], calibrate_all_experts: bool = True) -> Iterator[nn.Module]:
    """The context of a registry that brings none: every covered block is replaced by its wrapper (built with
    ``model.config``); on exit non-permanent wrappers are swapped back through ``restore(original)``. If a
    wrapper fails to build, or the body raises, every original goes back before the exception propagates."""
    todo: list[tuple[str, nn.Module, type]] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix, _, _ in todo):
            continue  # inside a block being replaced
        wrapper_cls = wrapper_for(type(module).__name__)
        if wrapper_cls is not None:
            todo.append((name, module, wrapper_cls))
    replaced: list[tuple[str, nn.Module, nn.Module]] = []
    try:
        for name, original, wrapper_cls in todo:
            wrapper = wrapper_cls(original=original, config=getattr(model, "config", None), calibrate_all_experts=calibrate_all_experts)
            model.set_submodule(name, wrapper)
            replaced.append((name, original, wrapper))
        yield model
    except BaseException:
        for name, original, _ in reversed(replaced):
            model.set_submodule(name, original)
        raise
    try:
        for name, original, wrapper in replaced:
            if not getattr(wrapper, "is_permanent", False):
                model.set_submodule(name, wrapper.restore(original) if hasattr(wrapper, "restore") else original)
    except BaseException:
        for name, original, _ in reversed(replaced):
            model.set_submodule(name, original)
        raise


def from_registry(name: str, registering_module: str, context_module: str) -> RegistryImplementation:
    """An ``MoECalibrationModule`` registry: the reference's or llm-compressor's (both register on import)."""
    import_module(registering_module, name)
    module = import_module(context_module, name)
    base = getattr(module, "MoECalibrationModule", None)
    context = getattr(module, "moe_calibration_context", None)
    if base is None or context is None:
        raise ImplementationError(f"--impl {name}: {context_module} has no MoECalibrationModule/moe_calibration_context")
    wrappers = {lookup_key(n): base.get_value_from_registry(n) for n in base.registered_names()}
    if not wrappers:
        raise ImplementationError(f"--impl {name}: its MoECalibrationModule registry is empty after importing {registering_module}")
    version = ""
    if name == "llmcompressor":
        try:
            from importlib.metadata import version as dist_version

            version = dist_version("llmcompressor")
        except Exception:
            pass
    # A registry that also resolves block classes (the reference's) covers those classes in its context too.
    impl = RegistryImplementation(name, wrappers, context, version, by_class=getattr(base, "resolve_by_class", None))
    _validate_constructors(impl)
    return impl


def from_namespace(spec: str, namespace: Any) -> RegistryImplementation:
    """A module (or object) defining ``CALIBRATION_WRAPPERS`` and optionally ``moe_calibration_context`` and
    ``CONTRACT_LEVELS``."""
    table = getattr(namespace, "CALIBRATION_WRAPPERS", None)
    if not isinstance(table, Mapping) or not table:
        raise ImplementationError(
            f"--impl {spec}: it defines no CALIBRATION_WRAPPERS mapping (original block class name -> "
            "wrapper class), or it is empty"
        )
    wrappers = {}
    for block_name, wrapper_cls in table.items():
        if not isinstance(block_name, str) or not isinstance(wrapper_cls, type):
            raise ImplementationError(
                f"--impl {spec}: CALIBRATION_WRAPPERS[{block_name!r}] = {wrapper_cls!r}; keys must be class "
                "names (str) and values wrapper classes"
            )
        wrappers[lookup_key(block_name)] = wrapper_cls
    context = getattr(namespace, "moe_calibration_context", None)
    if context is not None and not callable(context):
        raise ImplementationError(f"--impl {spec}: moe_calibration_context is not callable")
    levels = ContractLevels.parse(getattr(namespace, "CONTRACT_LEVELS", None), spec)
    impl = RegistryImplementation(spec, wrappers, context, levels=levels)
    _validate_constructors(impl)
    return impl


def _validate_constructors(impl: RegistryImplementation) -> None:
    """Every wrapper must be constructible as ``W(original=..., config=..., calibrate_all_experts=...)``."""
    bad = []
    for name, wrapper_cls in impl.wrappers.items():
        try:  # __init__ rather than the class: a permissive __new__(*args, **kwargs) must not hide it
            params = inspect.signature(wrapper_cls.__init__).parameters
        except (TypeError, ValueError):
            continue  # C types: let construction speak for itself
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            continue
        missing = [k for k in WRAPPER_KEYWORDS if k not in params or params[k].kind is inspect.Parameter.POSITIONAL_ONLY]
        if missing:
            bad.append(f"{wrapper_cls.__name__} (for {name}) lacks keyword(s) {', '.join(missing)}")
    if bad:
        raise ImplementationError(
            f"--impl {impl.name}: wrappers must accept __init__(original, config, calibrate_all_experts=True) as "
            "keywords, like llm-compressor's MoECalibrationModule: " + "; ".join(bad)
        )
