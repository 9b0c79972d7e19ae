"""The implementation under test, chosen by one spec (``--impl SPEC`` or ``MOE_CONFORMANCE_IMPL=SPEC``).

- ``reference`` (default): this project's ``wrappers`` with ``reference.moe_calibration_context``; besides its
  registered names it covers, by their structure, the blocks its registry's class resolvers serve (a block a
  new transformers release adds, before its name is registered): ``wrapper_for`` answers for those too, from
  the class the discovery scan finds under that name, exactly as the context will wrap it;
- ``llmcompressor``: llm-compressor 0.11-style, its ``MoECalibrationModule`` registry (after importing
  ``llmcompressor.modeling``, which registers its wrappers) and its ``moe_calibration_context``;
- a dotted module path: the module defines ``CALIBRATION_WRAPPERS`` (original block class name -> wrapper
  class built as ``Wrapper(original=..., config=..., calibrate_all_experts=...)``) and optionally
  ``moe_calibration_context(model, calibrate_all_experts=True)``; without one, the reference context is used
  over ``CALIBRATION_WRAPPERS``;
- ``module.path:NAME``: the same two attributes read from the object ``NAME`` in that module (several
  implementations in one module, such as the harness's own broken ones).
"""

from __future__ import annotations

import importlib
import inspect
import os
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from reference.calibration import calibration_context, standardize_lookup_name

__all__ = ["Implementation", "ImplementationError", "load_implementation", "ENV_VAR", "WRAPPER_KEYWORDS"]

ENV_VAR = "MOE_CONFORMANCE_IMPL"
WRAPPER_KEYWORDS = ("original", "config", "calibrate_all_experts")


class ImplementationError(Exception):
    """The implementation spec cannot be used; the message says what is wrong and what to do."""


class ConstructionError(Exception):
    """A wrapper could not be built with the calibration keywords."""


@dataclass
class Implementation:
    name: str
    wrappers: Mapping[str, type]  # standardized original class name -> wrapper class
    context: Callable[..., Any] | None = None  # the implementation's own moe_calibration_context
    version: str = ""
    # A registry's class resolution (the reference's MoECalibrationModule.resolve_by_class): block class ->
    # wrapper, for classes whose name is not in `wrappers`. None: the implementation covers names only.
    by_class: Callable[[type], type | None] | None = None

    def wrapper_for(self, block_class_name: str) -> type | None:
        wrapper_cls = self.wrappers.get(standardize_lookup_name(block_class_name))
        if wrapper_cls is None and self.by_class is not None:
            from .discovery import discovered_class

            block_cls = discovered_class(block_class_name)
            wrapper_cls = self.by_class(block_cls) if block_cls is not None else None
        return wrapper_cls

    def covered_by_name(self, block_class_name: str) -> bool:
        """Whether a wrapper is registered under this name (rather than found from the class's structure)."""
        return standardize_lookup_name(block_class_name) in self.wrappers

    def wrap(self, original: nn.Module, config: Any, calibrate_all_experts: bool) -> nn.Module:
        """Build the wrapper for ``original`` as a context would; a constructor error is reported as such."""
        name = type(original).__name__
        wrapper_cls = self.wrapper_for(name)
        if wrapper_cls is None:
            raise LookupError(f"uncovered: calibration would be silently skipped ({self.name} has no wrapper for {name})")
        try:
            return wrapper_cls(original=original, config=config, calibrate_all_experts=calibrate_all_experts)
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            raise ConstructionError(
                f"{_qualname(wrapper_cls)}(original={name}, config=..., calibrate_all_experts={calibrate_all_experts}) "
                f"raised {type(exc).__name__}: {exc} (at {where.filename}:{where.lineno})"
            ) from exc

    def calibration_context(self, model: nn.Module, calibrate_all_experts: bool = True):
        if self.context is not None:
            return self.context(model, calibrate_all_experts=calibrate_all_experts)
        return calibration_context(model, lambda n: self.wrapper_for(n), calibrate_all_experts)

    def describe(self) -> str:
        context = "own context" if self.context is not None else "reference context"
        structure = " + coverage by structure" if self.by_class is not None else ""
        return f"{self.name}{' ' + self.version if self.version else ''} ({len(self.wrappers)} wrappers{structure}, {context})"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def load_implementation(spec: str | None = None) -> Implementation:
    """Resolve ``spec`` (default: ``$MOE_CONFORMANCE_IMPL`` or ``reference``); raise ``ImplementationError``
    with a one-line message when it cannot be used."""
    spec = (spec or os.environ.get(ENV_VAR) or "reference").strip()
    if spec == "reference":
        impl = _from_registry("reference", "wrappers", "reference.calibration")
    elif spec == "llmcompressor":
        impl = _from_registry("llmcompressor", "llmcompressor.modeling", "llmcompressor.modeling.moe_context")
    else:
        impl = _from_module(spec)
    _validate_constructors(impl)
    return impl


def _import(module_name: str, spec: str):
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ImplementationError(
            f"--impl {spec}: cannot import {module_name!r} ({type(exc).__name__}: {exc}). "
            "Install it, or pass 'reference', 'llmcompressor' or an importable dotted module path."
        ) from None
    except Exception as exc:
        raise ImplementationError(
            f"--impl {spec}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from None


def _from_registry(name: str, registering_module: str, context_module: str) -> Implementation:
    _import(registering_module, name)
    module = _import(context_module, name)
    base = getattr(module, "MoECalibrationModule", None)
    context = getattr(module, "moe_calibration_context", None)
    if base is None or context is None:
        raise ImplementationError(f"--impl {name}: {context_module} has no MoECalibrationModule/moe_calibration_context")
    wrappers = {standardize_lookup_name(n): base.get_value_from_registry(n) for n in base.registered_names()}
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
    return Implementation(name, wrappers, context, version, by_class=getattr(base, "resolve_by_class", None))


def _from_module(spec: str) -> Implementation:
    module_name, _, attribute = spec.partition(":")
    if not module_name.replace(".", "").replace("_", "").isalnum() or (attribute and not attribute.isidentifier()):
        raise ImplementationError(
            f"--impl {spec!r} is not 'reference', 'llmcompressor', a dotted module path (like mypkg.moe_wrappers) "
            "or module.path:NAME"
        )
    module = _import(module_name, spec)
    if attribute:
        if not hasattr(module, attribute):
            raise ImplementationError(f"--impl {spec}: module {module_name!r} has no attribute {attribute!r}")
        module = getattr(module, attribute)
    table = getattr(module, "CALIBRATION_WRAPPERS", None)
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
        wrappers[standardize_lookup_name(block_name)] = wrapper_cls
    context = getattr(module, "moe_calibration_context", None)
    if context is not None and not callable(context):
        raise ImplementationError(f"--impl {spec}: moe_calibration_context is not callable")
    return Implementation(spec, wrappers, context)


def _validate_constructors(impl: Implementation) -> None:
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
