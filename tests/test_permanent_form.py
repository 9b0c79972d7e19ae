"""The permanent form (``--impl wrappers.permanent``): unpacked experts that stay survive a checkpoint round trip.

``save_pretrained`` writes per-expert keys (``...experts.{i}.gate_proj.weight`` or the architecture's own
projection names), and they load back bit-exact into the same structure: same tensors, same logits.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from moe_conformance import load_cases, load_implementation, wrappers
from moe_conformance.checks.model import model_output
from moe_conformance.reference import standardize_lookup_name
from moe_conformance.wrappers.permanent import PermanentCalibrationMoEBlock

CASES = [
    case for case in load_cases()
    if not case.absent_reason() and case.model_class and standardize_lookup_name(case.block) in wrappers.GENERIC_BLOCKS
]


# experts.{i}. (ModuleList) or experts.expert_{i}. (switch / NLLB ModuleDict)
PER_EXPERT_KEY = re.compile(r"\.experts\.(?:expert_)?(\d+)\.")


def _saved_state(folder: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        state.update(load_file(shard))
    return state


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.model_type)
def test_checkpoint_round_trip_is_bit_exact(case, tmp_path):
    impl = load_implementation("moe_conformance.wrappers.permanent")
    model, _ = case.make_model(seed=1)
    inputs = case.make_model_inputs((1, 5), seed=0)
    with impl.calibration_context(model):
        pass
    blocks = {name: m for name, m in model.named_modules() if isinstance(m, PermanentCalibrationMoEBlock)}
    assert blocks, f"{case.model_type}: no permanent wrapper stayed in the model"
    with torch.no_grad():
        want = model_output(model(**inputs))

    # save_pretrained writes keys per expert: ours (experts.{i}.gate_proj.weight) or, where the architecture's
    # save mapping renames them back to its checkpoint names, its own (mixtral's experts.{i}.w1.weight).
    model.save_pretrained(tmp_path / "pretrained")
    per_expert = {k: m for k in _saved_state(tmp_path / "pretrained") if (m := PER_EXPERT_KEY.search(k))}
    assert {int(m[1]) for m in per_expert.values()} == set(range(case.experts)), sorted(per_expert)[:4]
    own = [m for m in blocks.values() if type(m).__name__ == f"Calibration{case.block}"]  # not model_also_holds'
    assert len(per_expert) >= len(own) * case.experts * case.projections, sorted(per_expert)[:4]

    # safetensors round trip into the same (unpacked) structure: every tensor bit-exact, the same logits.
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, tmp_path / "model.safetensors")
    fresh, _ = case.make_model(seed=2)
    with impl.calibration_context(fresh):
        pass
    fresh.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=True)
    for key, tensor in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], tensor), f"{case.model_type}: {key} did not reload bit-exact"
    with torch.no_grad():
        assert torch.equal(model_output(fresh(**inputs)), want)
