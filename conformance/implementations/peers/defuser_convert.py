"""Defuser (GPTQModel's unfuser): ``defuser.convert_model(model)`` after loading, which unfuses in place and for
good the experts of the model types in its registry (``MODEL_CONFIG``): fused 3-D experts become numbered
per-expert containers of gate/up/down ``nn.Linear`` run by its ``linear_loop`` experts function, and a few
architectures get replacement blocks. Defuser has no all-experts mode (GPTQModel's routing bypass provides one
above it), so it offers the routed tokens only.
"""

from __future__ import annotations

from importlib.metadata import version

CONTRACT_LEVELS = {"coverage": "routed_only", "output": "exact", "restore": "permanent"}
SPEC = "defuser"
PROJECT = "Defuser"

FORM = "convert_model, no all-experts mode"


def require() -> None:
    from defuser import convert_model  # noqa: F401


def project_version() -> str:
    return version("defuser")


def prepare_model(model):
    from defuser import convert_model

    from . import without_gc_collect

    with without_gc_collect():
        convert_model(model)
    return model



def expert_linears(block):
    """Defuser unfuses a block's two parallel-experts modules (JetMoe's input_linear [E, 2I, H] and output_linear)
    each into numbered containers of one ``linear``: per expert, the gate|up Linear and the down Linear, found in
    two groups. Elsewhere its experts are numbered gate/up/down containers the harness finds itself (None)."""
    from torch import nn

    groups = []
    for module in block.modules():
        numbered = [c for n, c in module.named_children() if n.isdigit()]
        if numbered and all(isinstance(getattr(c, "linear", None), nn.Linear) and len(list(c.children())) == 1 for c in numbered):
            groups.append([c.linear for c in numbered])
    if len(groups) != 2 or len(groups[0]) != len(groups[1]):
        return None
    first, second = groups
    gate_up, down = (first, second) if first[0].out_features == 2 * second[0].in_features else (second, first)
    return [{"gate_up_proj": g, "down_proj": d} for g, d in zip(gate_up, down)]


def coverage_note(case) -> str | None:
    from defuser.model_registry import MODEL_CONFIG

    from . import registered_parent

    return registered_parent(case, MODEL_CONFIG, PROJECT)
