"""Find the MoE block classes of the installed transformers, so none can slip by uncalibrated.

A hand-kept list goes stale the day a transformers release adds an architecture; this scan reads the installed
``transformers/models/*/modeling_*.py`` sources (as text: nothing is imported, so it costs well under a second)
and reports every class that routes tokens to experts: a class whose methods assign ``self.experts``, or an
attribute built from an ``*Experts`` class (the ParallelExperts layout of granite/jetmoe keeps its experts in
``input_linear``/``output_linear``). Expert containers themselves (``*Experts``) are not blocks. A subclass of
a discovered block in the same file is a block too.

That finds, besides the ordinary blocks, the decoder layers that route on their own (gemma4, diffusion_gemma)
and a few modules that are not calibration targets at all; those are listed, each with its reason, under
``[not_calibration_targets]`` in the fixtures, and reported by name on every run.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MoEClass", "Completeness", "completeness", "discover_moe_classes", "not_calibration_targets"]

_EXPERTS_CALL = re.compile(r"Experts$")


@dataclass(frozen=True, order=True)
class MoEClass:
    model_dir: str  # transformers/models/<model_dir>
    module: str  # below transformers.models, e.g. "glm4_moe.modeling_glm4_moe"
    name: str  # the class name wrappers register for


def _called_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        func = node.func
        return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    return None


def _routes_to_experts(cls: ast.ClassDef) -> bool:
    for node in ast.walk(cls):
        if not isinstance(node, (ast.Assign, ast.AnnAssign)):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                called = _called_name(node.value)
                if target.attr == "experts" or (called and _EXPERTS_CALL.search(called)):
                    return True
    return False


def _scan_file(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if "xperts" not in text:
        return []
    tree = ast.parse(text)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    blocks = {name for name, node in classes.items() if not name.endswith("Experts") and _routes_to_experts(node)}
    changed = True
    while changed:  # subclasses of blocks defined in the same file
        changed = False
        for name, node in classes.items():
            bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
            if name not in blocks and not name.endswith("Experts") and bases & blocks:
                blocks.add(name)
                changed = True
    return sorted(blocks)


def discover_moe_classes(models_dir: Path | None = None) -> list[MoEClass]:
    """Every MoE block class in the installed transformers (PyTorch modeling files only)."""
    if models_dir is None:
        import transformers

        models_dir = Path(transformers.__file__).parent / "models"
    found = []
    for path in sorted(models_dir.glob("*/modeling_*.py")):
        if path.name.startswith(("modeling_tf_", "modeling_flax_")):
            continue
        for name in _scan_file(path):
            found.append(MoEClass(path.parent.name, f"{path.parent.name}.{path.stem}", name))
    return found


def not_calibration_targets() -> dict[str, str]:
    """Class name -> why it is not a calibration target (``[not_calibration_targets]`` in the fixtures)."""
    from .cases import FIXTURES_DIR, _read_fixtures

    return dict(_read_fixtures(FIXTURES_DIR).get("not_calibration_targets", {}))


@dataclass
class Completeness:
    found: list[MoEClass]
    excluded: dict[str, str]  # found and excluded: class name -> reason
    no_wrapper: list[MoEClass]  # calibration would be silently skipped
    no_fixture: list[MoEClass]  # the suite would not check it

    @property
    def covered(self) -> list[MoEClass]:
        missing = {c.name for c in self.no_wrapper + self.no_fixture}
        return [c for c in self.found if c.name not in self.excluded and c.name not in missing]


def completeness(wrapper_for, fixture_blocks: set[str]) -> Completeness:
    """Compare the installed transformers' MoE classes with an implementation (``wrapper_for(name)`` returns
    its wrapper or None) and with the blocks the fixtures check."""
    found = discover_moe_classes()
    reasons = not_calibration_targets()
    targets = [c for c in found if c.name not in reasons]
    return Completeness(
        found=found,
        excluded={c.name: reasons[c.name] for c in found if c.name in reasons},
        no_wrapper=[c for c in targets if wrapper_for(c.name) is None],
        no_fixture=[c for c in targets if c.name not in fixture_blocks],
    )
