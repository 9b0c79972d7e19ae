"""The calibration framework: the wrapper base class, its registry, and the context that swaps wrappers in.

API-compatible with llm-compressor 0.11's ``llmcompressor.modeling.moe_context``: the same class and function
names, the same constructor keywords (``original``, ``config``, ``calibrate_all_experts``), the same registry
methods (compressed-tensors ``RegistryMixin``: names are looked up case-insensitively with ``_`` and ``-``
treated alike), so a wrapper written for either works in both.

Where this framework is stricter than 0.11:
- registering one name for two different classes is an error that names both classes;
- the context is exception-safe: an exception in the ``with`` body, or one raised by a wrapper's constructor
  half-way through replacing, puts every original module object back before it propagates;
- MoE-looking blocks that no wrapper covers are logged as a warning (they would silently not be calibrated).

And one addition: besides names, the registry can hold *class resolvers* (``register_class_resolver``),
consulted for a block class no name is registered for. ``import wrappers`` registers one that serves, by their
structure, the blocks a generic mechanism handles, so a block a new transformers release adds is calibrated
on the day it appears, before anyone registers its name. Registered names always win.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

from torch import nn

logger = logging.getLogger("moe_conformance")

__all__ = [
    "MoECalibrationModule",
    "moe_calibration_context",
    "calibration_context",
    "standardize_lookup_name",
    "looks_like_moe_block",
]

# Beyond this many blocks the context shows a progress bar: below it the bar is noise.
_PROGRESS_THRESHOLD = 16


def standardize_lookup_name(name: str) -> str:
    """The registry key for ``name``, as compressed-tensors computes it: lower case, ``_`` and `` `` as ``-``."""
    return name.replace("_", "-").replace(" ", "-").lower()


class MoECalibrationModule(ABC, nn.Module):
    """Base class of every calibration wrapper.

    A subclass replaces one MoE block class while calibrating. It is built as
    ``Wrapper(original=block, config=model.config, calibrate_all_experts=True)``; its ``forward`` takes what the
    original's takes and returns the same structure. With ``calibrate_all_experts=True`` every expert sees every
    token (so every expert Linear is observed) while the output still combines only the routed experts; with
    ``False`` each expert sees only its routed tokens.

    ``is_permanent`` wrappers stay in the model after the context; the others are swapped back through
    ``restore(original)``, which returns the module to put back.
    """

    is_permanent: ClassVar[bool] = False

    # One registry for the whole hierarchy: standardized original class name -> wrapper class.
    _registry: ClassVar[dict[str, type[MoECalibrationModule]]] = {}
    # Consulted in order for a block class whose name is not registered: resolver(block_cls) -> wrapper or None.
    _class_resolvers: ClassVar[list[Callable[[type], type[MoECalibrationModule] | None]]] = []

    @abstractmethod
    def __init__(self, original: nn.Module | None = None, config: Any = None, calibrate_all_experts: bool = True):
        # Subclasses define their own __init__(original, config, calibrate_all_experts) and, like
        # llm-compressor's, call super().__init__() with no arguments.
        super().__init__()

    def restore(self, original: nn.Module) -> nn.Module:
        """The module to put back after calibration (``self`` for permanent wrappers)."""
        if self.is_permanent:
            return self
        raise NotImplementedError(
            f"{type(self).__name__} has is_permanent=False but does not implement restore(original)"
        )

    # -- registry (compressed-tensors RegistryMixin names) ------------------------------------------------------

    @classmethod
    def register(cls, name: str | None = None, alias: str | list[str] | None = None):
        """Class decorator: ``@MoECalibrationModule.register("Glm4MoeMoE")`` makes the class the wrapper of
        every ``Glm4MoeMoE``. ``alias`` registers further original class names for the same wrapper."""

        def decorator(wrapper_cls: type) -> type:
            names = [name or wrapper_cls.__name__]
            if alias:
                names += [alias] if isinstance(alias, str) else list(alias)
            for original_name in names:
                cls.register_value(wrapper_cls, original_name)
            return wrapper_cls

        return decorator

    @classmethod
    def register_value(cls, wrapper_cls: type, name: str) -> None:
        if not (isinstance(wrapper_cls, type) and issubclass(wrapper_cls, MoECalibrationModule)):
            raise TypeError(f"cannot register {wrapper_cls!r} for {name!r}: it is not a MoECalibrationModule subclass")
        key = standardize_lookup_name(name)
        existing = cls._registry.get(key)
        if existing is not None and existing is not wrapper_cls:
            raise RuntimeError(
                f"{name!r} is already registered to {_qualname(existing)}; cannot register {_qualname(wrapper_cls)} "
                "for it too. Unregister one of them, or register the new wrapper under another class name."
            )
        cls._registry[key] = wrapper_cls

    @classmethod
    def registered_names(cls) -> list[str]:
        return list(cls._registry)

    @classmethod
    def is_registered(cls, name: str) -> bool:
        return standardize_lookup_name(name) in cls._registry

    @classmethod
    def get_value_from_registry(cls, name: str) -> type[MoECalibrationModule]:
        try:
            return cls._registry[standardize_lookup_name(name)]
        except KeyError:
            raise KeyError(
                f"no calibration wrapper is registered for {name!r}; registered: {sorted(cls._registry)}"
            ) from None

    @classmethod
    def load_from_registry(cls, name: str, **constructor_kwargs) -> MoECalibrationModule:
        return cls.get_value_from_registry(name)(**constructor_kwargs)

    # -- class resolvers (not in llm-compressor 0.11) -----------------------------------------------------------

    @classmethod
    def register_class_resolver(cls, resolver: Callable[[type], type[MoECalibrationModule] | None]) -> None:
        """Consult ``resolver(block_cls)`` for block classes whose name is not registered (once per resolver)."""
        if resolver not in cls._class_resolvers:
            cls._class_resolvers.append(resolver)

    @classmethod
    def resolve_by_class(cls, block_cls: type) -> type[MoECalibrationModule] | None:
        """The first class resolver's wrapper for ``block_cls``, ignoring registered names; None if none has one."""
        for resolver in cls._class_resolvers:
            wrapper_cls = resolver(block_cls)
            if wrapper_cls is not None:
                return wrapper_cls
        return None

    @classmethod
    def wrapper_for_class(cls, block_cls: type) -> type[MoECalibrationModule] | None:
        """What ``moe_calibration_context`` wraps ``block_cls`` with: its registered name first, then the class
        resolvers; None if neither covers it."""
        if cls.is_registered(block_cls.__name__):
            return cls.get_value_from_registry(block_cls.__name__)
        return cls.resolve_by_class(block_cls)


def _qualname(obj: type) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def looks_like_moe_block(module: nn.Module) -> bool:
    """A cheap structural test used only for the 'not covered' warning: a module that owns experts."""
    return isinstance(getattr(module, "experts", None), nn.Module) and not isinstance(module, MoECalibrationModule)


WrapperLookup = Callable[[str], "type[nn.Module] | None"]


def _registry_lookup(class_name: str):
    if MoECalibrationModule.is_registered(class_name):
        return MoECalibrationModule.get_value_from_registry(class_name)
    return None


@contextlib.contextmanager
def calibration_context(
    model: nn.Module,
    wrappers: WrapperLookup | Mapping[str, type],
    calibrate_all_experts: bool = True,
    by_class: Callable[[type], type | None] | None = None,
) -> Iterator[nn.Module]:
    """Swap every block that ``wrappers`` covers for its calibration wrapper; undo the swap on exit.

    ``wrappers`` maps an original block class name to its wrapper class (a mapping, or a function returning
    ``None`` for classes it does not cover); ``by_class``, where given, is asked with the block's class when
    ``wrappers`` has nothing for its name. Non-permanent wrappers are swapped back through ``restore`` on exit.
    If the ``with`` body raises, or a wrapper fails to build half-way through, every original module object is
    put back (permanent wrappers too) before the exception propagates, so the model is exactly as it was.
    """
    lookup = _as_lookup(wrappers)
    config = getattr(model, "config", None)

    todo: list[tuple[str, nn.Module, type]] = []
    uncovered: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix, _, _ in todo):
            continue  # inside a block we replace: its parts are the wrapper's business
        wrapper_cls = lookup(type(module).__name__)
        if wrapper_cls is None and by_class is not None and not isinstance(module, MoECalibrationModule):
            wrapper_cls = by_class(type(module))
        if wrapper_cls is not None:
            todo.append((name, module, wrapper_cls))
        elif looks_like_moe_block(module):
            uncovered.setdefault(type(module).__name__, []).append(name)

    for class_name, names in uncovered.items():
        logger.warning(
            "%d %s block(s) have no calibration wrapper and will NOT be calibrated on all experts (first: %s)",
            len(names), class_name, names[0],
        )
    if not todo:
        logger.info("moe_calibration_context: no registered MoE block found in %s", type(model).__name__)
        yield model
        return

    found: dict[str, int] = {}
    for _, module, _ in todo:
        found[type(module).__name__] = found.get(type(module).__name__, 0) + 1
    logger.info("moe_calibration_context: found %d MoE block(s): %s", len(todo), found)

    replaced: list[tuple[str, nn.Module, nn.Module]] = []  # (name, original, wrapper)
    try:
        for name, original, wrapper_cls in _progress(todo):
            wrapper = wrapper_cls(original=original, config=config, calibrate_all_experts=calibrate_all_experts)
            model.set_submodule(name, wrapper)
            replaced.append((name, original, wrapper))
    except BaseException:
        _put_back(model, replaced)
        raise

    permanent = sum(bool(getattr(w, "is_permanent", False)) for _, _, w in replaced)
    logger.info(
        "moe_calibration_context: replaced %d block(s) (calibrate_all_experts=%s); %d permanent stay, "
        "%d are restored on exit", len(replaced), calibrate_all_experts, permanent, len(replaced) - permanent,
    )
    try:
        yield model
    except BaseException:
        _put_back(model, replaced)
        raise
    # Normal exit: restore the non-permanent ones. Restoring is all-or-nothing as well: if one restore fails,
    # every original goes back before the error propagates.
    try:
        for name, original, wrapper in replaced:
            if not getattr(wrapper, "is_permanent", False):
                model.set_submodule(name, wrapper.restore(original))
    except BaseException:
        _put_back(model, replaced)
        raise


def _put_back(model: nn.Module, replaced: list[tuple[str, nn.Module, nn.Module]]) -> None:
    for name, original, _ in reversed(replaced):
        model.set_submodule(name, original)


def _as_lookup(wrappers: WrapperLookup | Mapping[str, type]) -> WrapperLookup:
    if callable(wrappers) and not isinstance(wrappers, Mapping):
        return wrappers
    table = {standardize_lookup_name(k): v for k, v in wrappers.items()}
    return lambda class_name: table.get(standardize_lookup_name(class_name))


def _progress(items: list):
    if len(items) < _PROGRESS_THRESHOLD:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:  # transformers brings tqdm; without it, no bar
        return items
    return tqdm(items, desc="Replacing MoE blocks for calibration", leave=False)


def moe_calibration_context(model: nn.Module, calibrate_all_experts: bool = True):
    """Replace every block whose class has a registered ``MoECalibrationModule`` (or that a registered class
    resolver covers) while the context is open.

    ``import wrappers`` registers the reference wrappers. Usage::

        with moe_calibration_context(model):
            for batch in calibration_data:
                model(**batch)
    """
    return calibration_context(model, _registry_lookup, calibrate_all_experts, by_class=MoECalibrationModule.resolve_by_class)
