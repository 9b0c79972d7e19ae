"""auto-round: what ``AutoRound`` does to a model object before calibrating it — its replacement modules
(``update_module``: custom blocks for some model types, then every ``@use_experts_implementation`` experts module
unfused in place into numbered per-expert ``nn.Linear`` containers), then ``materialize_model_`` (fills the
replacements built on the meta device and releases the originals). Its all-experts switch is the environment
variable ``AR_FORCE_MOE_ROUTING_ALL_EXPERTS=1``: an auxiliary pass with rotating routes whose output is
discarded, so every expert is covered over several calls, not every token in each call.
"""

from __future__ import annotations

import contextlib
import os
from importlib.metadata import version

CONTRACT_LEVELS = {"coverage": "rotating", "output": "discard_pass", "restore": "permanent"}
SPEC = "auto_round"
PROJECT = "auto-round"
ENV = "AR_FORCE_MOE_ROUTING_ALL_EXPERTS"

FORM = "update_module + materialize_model_, AR_FORCE_MOE_ROUTING_ALL_EXPERTS"


def require() -> None:
    from auto_round.modeling.fused_moe.replace_modules import materialize_model_  # noqa: F401
    from auto_round.special_model_handler import update_module  # noqa: F401


def project_version() -> str:
    return version("auto-round")


def prepare_model(model):
    from auto_round.modeling.fused_moe.replace_modules import materialize_model_
    from auto_round.special_model_handler import update_module

    from . import without_gc_collect

    with without_gc_collect():
        model = update_module(model, formats=None, cleanup_original=False)
        materialize_model_(model)
    return model


@contextlib.contextmanager
def calibration_mode(model, calibrate_all_experts: bool):
    """The environment variable set (or cleared) while open; auto-round reads it on every forward."""
    previous = os.environ.get(ENV)
    os.environ[ENV] = "1" if calibrate_all_experts else "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous


def coverage_note(case) -> str | None:
    """auto-round's generic unfuse looks at classes; only its custom replacements (llama4, qwen3_5_moe, ...) key
    on the model type."""
    from auto_round.modeling.fused_moe.replace_modules import BUILTIN_MODULES

    from . import registered_parent

    return registered_parent(case, BUILTIN_MODULES, PROJECT)
