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
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

__all__ = [
    "lookup_key",
    "COMPLETENESS_CONTRACT",
    "MoEClass",
    "Completeness",
    "completeness",
    "discover_moe_classes",
    "discovered_class",
    "not_calibration_targets",
    "unreviewed_messages",
]

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


# A top-level class statement, with the decorators right above it: where a file splits into chunks that
# each hold whole top-level statements.
_CLASS_START = re.compile(r"^(?:@.*\n)*class\s", re.M)


def _top_level_classes(text: str) -> list[ast.ClassDef]:
    """The top-level classes of a modeling file. Only the chunks that may build experts are parsed (parsing
    every MoE modeling file whole took ~2 s, most of the collection's overhead); a chunk that does not parse
    on its own (a class keyword at a line start inside a string) falls back to parsing the file."""
    starts = [m.start() for m in _CLASS_START.finditer(text)] + [len(text)]
    classes = []
    try:
        for begin, end in zip(starts, starts[1:]):
            chunk = text[begin:end]
            if "self.experts" in chunk or "Experts(" in chunk:  # what _routes_to_experts can match
                classes += [n for n in ast.parse(chunk).body if isinstance(n, ast.ClassDef)]
            else:  # the header is enough to follow subclasses
                header = ast.parse(chunk[: chunk.index(":", chunk.index("class")) + 1] + " pass")
                classes += [n for n in header.body if isinstance(n, ast.ClassDef)]
    except (SyntaxError, ValueError):
        classes = [n for n in ast.parse(text).body if isinstance(n, ast.ClassDef)]
    return classes


def _scan_file(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if "xperts" not in text:
        return []
    classes = {node.name: node for node in _top_level_classes(text)}
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
    return list(_scan(Path(models_dir)))


@lru_cache(maxsize=4)
def _scan(models_dir: Path) -> tuple[MoEClass, ...]:
    # once per process: collection, the completeness test and the derived fixtures all ask
    found = []
    for path in sorted(models_dir.glob("*/modeling_*.py")):
        if path.name.startswith(("modeling_tf_", "modeling_flax_")):
            continue
        for name in _scan_file(path):
            found.append(MoEClass(path.parent.name, f"{path.parent.name}.{path.stem}", name))
    return tuple(found)


def lookup_key(name: str) -> str:
    """A block class name as registries compare them (compressed-tensors' convention, which llm-compressor and
    the reference follow): lower case, ``_`` and spaces as ``-``."""
    return name.replace("_", "-").replace(" ", "-").lower()


@lru_cache(maxsize=1)
def _discovered_by_name() -> dict[str, MoEClass]:
    return {lookup_key(c.name): c for c in discover_moe_classes()}


def discovered_class(name: str) -> type | None:
    """The installed transformers' class the scan found under ``name`` (compared as the registry compares
    names), imported; None if the scan found none or its module cannot be imported."""
    found = _discovered_by_name().get(lookup_key(name))
    if found is None:
        return None
    from .arch import transformers_module

    try:
        module = transformers_module(found.module)
    except Exception:  # an optional dependency missing: the class cannot be built here either
        return None
    return getattr(module, found.name, None)


def not_calibration_targets() -> dict[str, str]:
    """Class name -> why it is not a calibration target (``[not_calibration_targets]`` in the fixtures)."""
    from .arch import FIXTURES_DIR
    from .files import read_fixtures

    return dict(read_fixtures(FIXTURES_DIR)[0].get("not_calibration_targets", {}))


# registry_completeness's contract (one test per run, not a CheckSpec), for the check table.
COMPLETENESS_CONTRACT = (
    "Every MoE block class the installed transformers defines, found by scanning its sources (not from a list), is "
    "covered by the implementation and checked by a fixture (hand-written, or derived from its config's defaults), "
    "except the listed non-targets, reported by name with their reasons."
)


@dataclass
class Completeness:
    found: list[MoEClass]
    excluded: dict[str, str]  # found and excluded: class name -> reason
    no_wrapper: list[MoEClass]  # calibration would be silently skipped
    no_fixture: list[MoEClass]  # the suite would not check it
    # Targets no hand-written entry checks (a derived fixture may): what a maintainer has not reviewed yet.
    unreviewed: list[MoEClass] = field(default_factory=list)
    derived: dict[str, str] = field(default_factory=dict)  # class name -> model_type of its derived case
    derivation_problems: dict[str, str] = field(default_factory=dict)  # class name -> why none was derived

    @property
    def covered(self) -> list[MoEClass]:
        missing = {c.name for c in self.no_wrapper + self.no_fixture}
        return [c for c in self.found if c.name not in self.excluded and c.name not in missing]


def completeness(
    covers,
    fixture_blocks: set[str],
    hand_blocks: set[str] | None = None,
    derived: dict[str, str] | None = None,
    derivation_problems: dict[str, str] | None = None,
) -> Completeness:
    """Compare the installed transformers' MoE classes with an implementation (``covers(name)``: its wrapper,
    or True, where it covers the class; None or False where not) and with the blocks the fixtures check (``fixture_blocks``: hand-written and derived;
    ``hand_blocks``, where given, the hand-written ones alone)."""
    found = discover_moe_classes()
    reasons = not_calibration_targets()
    targets = [c for c in found if c.name not in reasons]
    return Completeness(
        found=found,
        excluded={c.name: reasons[c.name] for c in found if c.name in reasons},
        no_wrapper=[c for c in targets if not covers(c.name)],
        no_fixture=[c for c in targets if c.name not in fixture_blocks],
        unreviewed=[c for c in targets if hand_blocks is not None and c.name not in hand_blocks],
        derived=dict(derived or {}),
        derivation_problems=dict(derivation_problems or {}),
    )


def unreviewed_messages(report: Completeness, impl) -> list[str]:
    """One line per target class no hand-written entry checks (the canary's ``--require-reviewed``): whether
    ``impl`` already covers it and a derived fixture checks it, or what it needs. Judged from ``impl``'s answer
    and the derivation alone: no other implementation is asked."""
    lines = []
    for c in report.unreviewed:
        where = f"{c.name} ({c.module})"
        wrapper = impl.wrapper_for(c.name) if hasattr(impl, "wrapper_for") else impl.covers(c.name) or None
        checked = f"a derived fixture ({report.derived[c.name]})" if c.name in report.derived else None
        problem = report.derivation_problems.get(c.name, "none was derived")
        if wrapper is None:
            fixture = f"{checked} checks it once it is covered" if checked else f"no fixture checks it ({problem})"
            lines.append(f"unreviewed: {where}: {impl.name} has no wrapper for it, and {fixture}; needs a wrapper and a fixture entry")
        elif checked:
            lines.append(f"unreviewed: {where}: covered by {_coverage(c.name, wrapper, impl)}, checked by {checked}: review it and add a hand entry")
        else:
            lines.append(f"unreviewed: {where}: covered by {_coverage(c.name, wrapper, impl)}, but no fixture checks it ({problem}): needs a fixture entry")
    return lines


def _coverage(name: str, wrapper: type, impl) -> str:
    """How ``impl`` covers the class: its registered wrapper, one it resolves from the class (no name
    registered), or its conversion."""
    if not isinstance(wrapper, type):
        return f"{impl.name}'s conversion"
    if getattr(impl, "covered_by_name", lambda n: True)(name):
        return f"{impl.name}'s registered {wrapper.__qualname__}"
    return f"{impl.name}'s {wrapper.__qualname__}, resolved from the class (no name registered)"
