"""Defuser (GPTQModel's unfuser): ``defuser.convert_model(model)`` after loading, which unfuses in place and for
good the experts of the model types in its registry (``MODEL_CONFIG``): fused 3-D experts become numbered
per-expert containers of gate/up/down ``nn.Linear`` run by its ``linear_loop`` experts function, and a few
architectures get replacement blocks. Defuser has no all-experts mode (GPTQModel's routing bypass provides one
above it), so it offers the routed tokens only.
"""

from __future__ import annotations

from importlib.metadata import version

CONTRACT_LEVELS = {"coverage": "routed_only", "output": "exact", "restore": "permanent"}
PROJECT = "Defuser"

FORM = "convert_model, no all-experts mode"


def require() -> None:
    from defuser import convert_model  # noqa: F401


def project_version() -> str:
    return version("defuser")


def prepare_model(model):
    from defuser import convert_model

    convert_model(model)
    return model


def converted(model) -> list[str] | None:
    """Defuser's detector is the model type: convert_model does nothing for a type its registry lacks."""
    from defuser.model_registry import MODEL_CONFIG

    config = getattr(model, "config", None)
    return None if getattr(config, "model_type", None) in MODEL_CONFIG else []
