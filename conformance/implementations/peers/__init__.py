"""Built-in adapters for the field's calibration projects (the peers), one module each, each declaring itself:
the loader offers every module of this package as ``--impl <SPEC>``; nothing else lists them.

An adapter module is a model conversion (``implementations/conversion.py``) that drives its project the way the
project's own calibration flow does, and declares only what the project promises (the suite says "not
offered" where it promises nothing). It imports its project only inside its functions, so the harness needs no
peer installed. The declaration (docs/peers.md):

- ``SPEC``: the ``--impl`` name; ``PROJECT``: the project's name; ``FORM``: which of its APIs, in words;
- ``CONTRACT_LEVELS``: the contract levels it promises (``implementations/protocol.py``, ``LEVELS``);
- ``require()``: raises when the project cannot be used here; ``project_version()``: its installed version;
- ``prepare_model(model) -> model``, and optionally ``calibration_mode(model, calibrate_all_experts)``,
  ``expert_linears(block)``, ``restore_model(model)``, ``covers(block_class)`` (the conversion protocol);
- optionally ``coverage_note(case)``: commentary for the scoreboard on an uncovered architecture;
- optionally ``registry()``: for an installed version that is a registry rather than a conversion (llm-compressor
  0.11), the module names ``(wrappers, context)`` to load as a registry instead; None otherwise.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import pkgutil
from functools import lru_cache
from types import ModuleType, SimpleNamespace

__all__ = ["adapter", "builtin", "registered_parent", "specs", "without_gc_collect"]

# What a conversion reads from an adapter (``conversion.from_namespace``).
CONVERSION_NAMES = ("prepare_model", "calibration_mode", "expert_linears", "restore_model", "covers", "CONTRACT_LEVELS")


@lru_cache(maxsize=1)
def _adapters() -> dict[str, str]:
    """``SPEC`` -> module name, for every module of this package that declares a ``SPEC``."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if spec:
            found[spec] = module.__name__
    return found


def specs() -> tuple[str, ...]:
    """The ``--impl`` names of the built-in peers."""
    return tuple(_adapters())


def adapter(spec: str) -> ModuleType:
    """The adapter module of a built-in spec."""
    return importlib.import_module(_adapters()[spec])


def builtin(spec: str):
    """The adapter of a built-in spec as the namespace ``conversion.from_namespace`` reads (its name says project,
    version and form), or, where the adapter says the installed project is a registry, the adapter module (its
    ``registry()`` names the modules); one error line where the project cannot be used."""
    from ..protocol import ImplementationError

    module = adapter(spec)
    try:
        module.require()
    except Exception as exc:
        raise ImplementationError(
            f"--impl {spec}: {module.PROJECT} cannot be used ({type(exc).__name__}: {exc}); install it (tox.ini's "
            f"peer-* environments say how)"
        ) from None
    namespace = SimpleNamespace(**{k: getattr(module, k) for k in CONVERSION_NAMES if hasattr(module, k)})
    namespace.__name__ = f"{module.PROJECT} {module.project_version()} ({module.FORM})"
    return namespace


def registered_parent(case, registered, project: str) -> str | None:
    """For a project that chooses what to convert by ``config.model_type`` (Defuser's registry, auto-round's
    custom replacements): where the fixture's model is the text part of a composite model whose type the project
    does register, the note that says so — users load the composite, so "uncovered" holds for the standalone
    text model only. None where the fixture's own type is registered or no registered composite holds it."""
    from transformers import PretrainedConfig

    package = case.package
    own = case.config_type()
    if own.model_type in registered:
        return None
    for value in vars(package).values():
        if isinstance(value, type) and issubclass(value, PretrainedConfig) and value.model_type in registered:
            if any(sub is own for sub in (getattr(value, "sub_configs", None) or {}).values()):
                return (f"{project} registers `{value.model_type}` (the composite model users load), not `{own.model_type}` "
                        "(this fixture's text model): uncovered only as a standalone text model")
    return None


@contextlib.contextmanager
def without_gc_collect():
    """auto-round and Defuser call ``gc.collect()`` after every unfuse to free the fused tensors at once; in the
    suite's process, which holds thousands of tiny models, each call takes ~0.4 s and made a peer's run 7x
    slower. While a project prepares a model, collection is left to Python's own schedule: nothing the project
    computes depends on when garbage is collected."""
    collect = gc.collect
    gc.collect = lambda *args, **kwargs: 0
    try:
        yield
    finally:
        gc.collect = collect
