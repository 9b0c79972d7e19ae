"""The implementation under test, chosen by one spec (``--impl SPEC`` or ``MOE_CONFORMANCE_IMPL=SPEC``), seen by
every check through one protocol, ``Implementation``, whatever kind it is.

How a spec selects a kind:

- ``reference`` (default): this project's ``wrappers`` with ``reference.moe_calibration_context``, a *registry*;
  besides its registered names it covers, by their structure, the blocks its registry's class resolvers serve
  (``covers``/``wrapper_for`` answer for those too, from the class the discovery scan finds under that name);
- a built-in peer's name (``llmcompressor``, ``defuser``, ``auto_round``, ``modelopt``, ``gptqmodel``, ...: each
  module of ``implementations/peers`` declares its own): that project driven as a model conversion (llm-compressor
  0.11: its ``MoECalibrationModule`` registry and ``moe_calibration_context``); the run's header says which
  project version and which form;
- a dotted module path, or ``module.path:NAME`` (the attributes of the object ``NAME`` in that module: several
  implementations in one module, such as the harness's own broken ones):

  - one defining ``CALIBRATION_WRAPPERS`` is a **registry** (``registry.py``): original block class name ->
    wrapper class built as ``Wrapper(original=..., config=<the model's top-level config>,
    calibrate_all_experts=...)``, and optionally ``moe_calibration_context(model, calibrate_all_experts=True)``;
    without one, the harness's own context swaps the wrappers in (and non-permanent ones back out);
  - one defining ``prepare_model(model) -> model`` is a **model conversion** (``conversion.py``): run once on
    a whole model, it may replace submodules below the MoE blocks, in place and permanently. Optionally
    ``calibration_mode(model, calibrate_all_experts)``, a context manager that switches the all-experts mode
    separately from the structure (a global flag or an environment variable); ``restore_model(model)``, which
    undoes ``prepare_model`` in place; ``expert_linears(block)``, the per-expert Linears of a converted block;
    ``covers(block_class) -> bool``;

  either may declare ``CONTRACT_LEVELS`` (``ContractLevels``): what it promises, so that a check of a contract
  it does not offer says "not offered" rather than FAIL.

The harness keeps an independent oracle: nothing in it imports ``reference`` or ``wrappers``; this module loads
the reference by name, as the implementation under test, and is the only one that names it (a test keeps it so).
"""

from __future__ import annotations

import os
from typing import Any

from .protocol import Implementation, ImplementationError, import_module

__all__ = ["ENV_VAR", "REFERENCE", "load_implementation"]

ENV_VAR = "MOE_CONFORMANCE_IMPL"
# This project's reference implementation, loaded by name as any registry is: (wrappers, context) modules.
REFERENCE = ("moe_conformance.wrappers", "moe_conformance.reference.calibration")


def load_implementation(spec: str | None = None) -> Implementation:
    """Resolve ``spec`` (default: ``$MOE_CONFORMANCE_IMPL`` or ``reference``); raise ``ImplementationError``
    with a one-line message when it cannot be used."""
    from . import conversion as impl_conversion
    from . import peers
    from . import registry as impl_registry

    spec = (spec or os.environ.get(ENV_VAR) or "reference").strip()
    if spec == "reference":
        return impl_registry.from_registry("reference", *REFERENCE)
    if spec in peers.specs():  # a built-in peer (implementations/peers): a conversion, or a registry it names
        modules = getattr(peers.adapter(spec), "registry", lambda: None)()
        if modules:
            return impl_registry.from_registry(spec, *modules)
        adapter = peers.builtin(spec)
        return impl_conversion.from_namespace(f"{spec} = {adapter.__name__}", adapter)
    namespace = _namespace(spec)
    has_table = getattr(namespace, "CALIBRATION_WRAPPERS", None) is not None
    has_conversion = getattr(namespace, "prepare_model", None) is not None
    if has_table and has_conversion:
        raise ImplementationError(
            f"--impl {spec}: it defines both CALIBRATION_WRAPPERS (a registry) and prepare_model (a model "
            "conversion); point --impl at one of them with module.path:NAME"
        )
    if has_conversion:
        return impl_conversion.from_namespace(spec, namespace)
    if not has_table:
        raise ImplementationError(
            f"--impl {spec}: it defines no CALIBRATION_WRAPPERS mapping (original block class name -> wrapper "
            "class) and no prepare_model(model) function (a model conversion)"
        )
    return impl_registry.from_namespace(spec, namespace)





def _namespace(spec: str) -> Any:
    """The module a spec names, or the object ``NAME`` of ``module.path:NAME``."""
    module_name, _, attribute = spec.partition(":")
    if not module_name.replace(".", "").replace("_", "").isalnum() or (attribute and not attribute.isidentifier()):
        raise ImplementationError(
            f"--impl {spec!r} is not 'reference', 'llmcompressor', a dotted module path (like mypkg.moe_wrappers) "
            "or module.path:NAME"
        )
    module = import_module(module_name, spec)
    if attribute:
        if not hasattr(module, attribute):
            raise ImplementationError(f"--impl {spec}: module {module_name!r} has no attribute {attribute!r}")
        return getattr(module, attribute)
    return module
