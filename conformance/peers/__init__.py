"""Built-in adapters for the field's calibration projects, each in the model-conversion form of
``conformance.impl`` (``prepare_model``, ``calibration_mode``, ``CONTRACT_LEVELS``): ``--impl llmcompressor``
with llm-compressor 0.12 or later (``llmc_linearize``), ``--impl defuser`` (``defuser_convert``),
``--impl auto_round`` (``auto_round_replace``). Each drives its project the way that project's own calibration
flow does and declares only what the project promises, so the suite says "not offered" where it promises
nothing. An adapter imports its project only when loaded (``builtin``), so the harness needs none installed.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace

ADAPTERS = {
    "llmcompressor": "conformance.peers.llmc_linearize",
    "defuser": "conformance.peers.defuser_convert",
    "auto_round": "conformance.peers.auto_round_replace",
}


def builtin(spec: str) -> SimpleNamespace:
    """The adapter of a built-in spec as the namespace ``impl_conversion.from_namespace`` reads, after checking
    that its project imports (one error line otherwise); the run's header names project, version and form."""
    from ..impl import ImplementationError

    adapter = importlib.import_module(ADAPTERS[spec])
    try:
        adapter.require()
    except Exception as exc:
        raise ImplementationError(
            f"--impl {spec}: {adapter.PROJECT} cannot be used ({type(exc).__name__}: {exc}); install it (tox.ini's "
            f"peer-* environments say how)"
        ) from None
    namespace = SimpleNamespace(**{k: getattr(adapter, k) for k in ("prepare_model", "calibration_mode", "CONTRACT_LEVELS") if hasattr(adapter, k)})
    namespace.covers = covers_by_conversion(adapter.prepare_model)
    namespace.__name__ = f"{adapter.PROJECT} {adapter.project_version()} ({adapter.FORM})"
    return namespace


def covers_by_conversion(prepare_model):
    """``covers(block_class)`` from the project's own detector, as it would really act: the fixture's tiny block
    of that class (default variant, float32) is put in a minimal model and converted; covered when the
    conversion created ``nn.Linear`` modules under it. Memoised per class; any class the conversion patches is
    put back, so the probe cannot hide a patch from the checks that look for one. A class no fixture entry
    builds is left to the checks (True)."""
    import functools

    from torch import nn

    @functools.cache
    def covers(block_cls: type) -> bool:
        from ..cases import load_cases
        from ..impl import BlockModel
        from ..outcomes import guarded_classes
        from ..snapshots import ClassState

        case = next((c for c in _cases(load_cases) if c.block == block_cls.__name__ and not c.absent_reason()), None)
        if case is None:
            return True
        classes = ClassState.of(guarded_classes(case))
        try:
            block, config = case.make_block()
            before = sum(isinstance(m, nn.Linear) for m in block.modules())
            model = prepare_model(BlockModel(block, config)) or None
            converted = model.get_submodule("block") if isinstance(model, nn.Module) else block
            return sum(isinstance(m, nn.Linear) for m in converted.modules()) > before
        except Exception:
            return True  # a conversion that raises is covered, and judged (FAIL) by the checks
        finally:
            classes.restore()

    return covers


_CASES: list = []


def _cases(load_cases):
    if not _CASES:
        _CASES.extend(load_cases())
    return _CASES
