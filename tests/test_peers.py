"""The peers' side of the harness: the load-path axis (``--load``), an expert that keeps gate and up in one
Linear, and the built-in peer specs (which stop the run in one line where their project is not installed)."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch
from torch import nn

from moe_conformance import ImplementationError, load_cases, load_implementation, run_checks
from moe_conformance.cases.setting import Setting, build_block, build_model
from moe_conformance.checks.table import CHECKS
from tests import conversion_impl

CASES = {case.model_type: case for case in load_cases() if not case.absent_reason()}


def _ids(load: str = "cast") -> list[str]:
    return [s.id for s in CHECKS["output_matches"].settings(CASES["qwen3_moe"], ["default"], load=load)]


def test_load_axis_only_where_asked():
    plain = _ids()
    assert "qwen3_moe-output_matches-default-routed-bfloat16" in plain and not any("cast" in i for i in plain)
    both = _ids("both")
    assert {"qwen3_moe-output_matches-default-routed-bfloat16-cast", "qwen3_moe-output_matches-default-routed-bfloat16-config_dtype"} <= set(both)
    assert "qwen3_moe-output_matches-default-routed-float32" in both  # float32 has one load path only
    assert len(both) == len(plain) + 2
    with pytest.raises(ValueError, match="--load 'sideways'"):
        _ids("sideways")


def test_config_dtype_load_sets_the_configs_as_from_pretrained_does():
    case = CASES["qwen3_vl_moe"]  # a composite's text model: the top config and its sub-configs
    setting = Setting("qwen3_vl_moe", "output_matches", dtype=torch.bfloat16, load="config_dtype")
    run = build_block(case, setting, None)
    assert run.config.dtype == torch.bfloat16 and next(run.block.parameters()).dtype == torch.bfloat16
    model = build_model(case, setting, (1, 3)).model
    assert model.config.dtype == torch.bfloat16
    cast = build_block(case, setting.replace(load="cast"), None)
    assert cast.config.dtype in (None, torch.float32)  # a cast leaves the config as building left it


def _fused_gate_up_conversion(order: str):
    """tests/conversion_impl's conversion, then each expert's gate and up Linears replaced by one Linear holding
    both, concatenated in ``order`` (only its structure is judged here: it is not run), reported by
    ``expert_linears`` under the name the harness reads as gate|up."""

    def prepare_model(model: nn.Module) -> nn.Module:
        conversion_impl.prepare_model(model)
        for module in model.modules():
            if isinstance(getattr(module, "gate_proj", None), nn.Linear) and isinstance(getattr(module, "up_proj", None), nn.Linear):
                gate, up = module.gate_proj.weight, module.up_proj.weight
                first, second = (gate, up) if order == "gate,up" else (up, gate)
                fused = nn.Linear(gate.shape[1], 2 * gate.shape[0], bias=False, dtype=gate.dtype)
                fused.weight.data = torch.cat([first, second]).detach()
                del module.gate_proj, module.up_proj
                module.gate_up_proj = fused
        return model

    def expert_linears(block: nn.Module):
        experts = [m for m in block.modules() if isinstance(getattr(m, "gate_up_proj", None), nn.Linear)]
        return [{"gate_up_proj": m.gate_up_proj, "down_proj": m.down_proj} for m in experts] or None

    module = types.ModuleType(f"fused_gate_up_{order.replace(',', '_')}")
    module.prepare_model = prepare_model
    module.calibration_mode = conversion_impl.calibration_mode
    module.CONTRACT_LEVELS = conversion_impl.CONTRACT_LEVELS
    module.expert_linears = expert_linears
    return module


@pytest.mark.parametrize(("order", "passes"), [("gate,up", True), ("up,gate", False)])
def test_a_fused_gate_up_linear_must_be_the_two_slices_in_order(order, passes, monkeypatch):
    module = _fused_gate_up_conversion(order)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    impl = load_implementation(module.__name__)
    results = run_checks(CASES["qwen3_moe"], impl, checks=["experts_are_linear"])
    assert results and all(r.passed for r in results) == passes, [r.message for r in results if not r.passed]
    if not passes:
        assert "gate_up_proj.weight is not a bit-exact slice" in next(r.message for r in results if not r.passed)


@pytest.mark.parametrize("spec", ["defuser", "auto_round", "llmcompressor"])
def test_a_builtin_peer_spec_loads_or_says_what_is_missing(spec):
    project = {"defuser": "defuser", "auto_round": "auto_round", "llmcompressor": "llmcompressor"}[spec]
    if importlib.util.find_spec(project) is None:
        with pytest.raises(ImplementationError, match=f"--impl {spec}: "):
            load_implementation(spec)
        return
    impl = load_implementation(spec)
    if spec == "llmcompressor" and importlib.util.find_spec("llmcompressor.modeling.moe") is None:
        assert impl.kind == "registry"  # 0.11: its MoECalibrationModule registry
        return
    assert impl.kind == "conversion" and impl.name.startswith(f"{spec} = ")
