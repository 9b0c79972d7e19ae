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
    namespace = SimpleNamespace(**{k: getattr(adapter, k) for k in ("prepare_model", "calibration_mode", "expert_linears", "CONTRACT_LEVELS") if hasattr(adapter, k)})
    namespace.__name__ = f"{adapter.PROJECT} {adapter.project_version()} ({adapter.FORM})"
    return namespace

