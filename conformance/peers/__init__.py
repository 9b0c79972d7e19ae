"""Built-in adapters for the field's calibration projects, each in the model-conversion form of
``conformance.impl`` (``prepare_model``, ``calibration_mode``, ``CONTRACT_LEVELS``): ``--impl llmcompressor``
with llm-compressor 0.12 or later (``llmc_linearize``), ``--impl defuser`` (``defuser_convert``),
``--impl auto_round`` (``auto_round_replace``), ``--impl modelopt`` (``modelopt_quantize``),
``--impl gptqmodel`` and ``--impl gptqmodel_override`` (``gptqmodel_bypass``, ``gptqmodel_override``). Each drives its project the way that project's own calibration
flow does and declares only what the project promises, so the suite says "not offered" where it promises
nothing. An adapter imports its project only when loaded (``builtin``), so the harness needs none installed.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
from types import SimpleNamespace

ADAPTERS = {
    "llmcompressor": "moe_conformance.peers.llmc_linearize",
    "defuser": "moe_conformance.peers.defuser_convert",
    "auto_round": "moe_conformance.peers.auto_round_replace",
    "modelopt": "moe_conformance.peers.modelopt_quantize",
    "gptqmodel": "moe_conformance.peers.gptqmodel_bypass",
    "gptqmodel_override": "moe_conformance.peers.gptqmodel_override",
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



def registered_parent(case, registered, project: str) -> str | None:
    """For a project that chooses what to convert by ``config.model_type`` (Defuser's registry, auto-round's
    custom replacements): where the fixture's model is the text part of a composite model whose type the project
    does register, the note that says so — users load the composite, so "uncovered" holds for the standalone
    text model only. None where the fixture's own type is registered or no registered composite holds it."""
    from transformers import PretrainedConfig

    package = importlib.import_module(f"transformers.models.{case.module.split('.')[0]}")
    own = case._config_class()
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
