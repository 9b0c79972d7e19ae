"""The reference framework itself: registry semantics and the context's exception safety."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from moe_conformance.reference import (
    MoECalibrationModule,
    calibration_context,
    moe_calibration_context,
    standardize_lookup_name,
)


class ToyExperts(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 4)


class ToyMoE(nn.Module):
    def __init__(self):
        super().__init__()
        self.experts = ToyExperts()

    def forward(self, x):
        return self.experts.net(x)


class Model(nn.Module):
    def __init__(self, blocks: int = 3):
        super().__init__()
        self.config = object()
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(4, 4), ToyMoE()) for _ in range(blocks))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class ToyWrapper(MoECalibrationModule):
    built = 0
    fail_at: int | None = None

    def __init__(self, original, config=None, calibrate_all_experts=True):
        super().__init__()
        type(self).built += 1
        if self.fail_at is not None and type(self).built == self.fail_at:
            raise RuntimeError("constructor failed half-way")
        self.experts = original.experts
        self.calibrate_all_experts = calibrate_all_experts

    def forward(self, x):
        return self.experts.net(x)

    def restore(self, original):
        return original


class PermanentToyWrapper(ToyWrapper):
    is_permanent = True


def _modules(model):
    return {name: m for name, m in model.named_modules()}


@pytest.fixture(autouse=True)
def _clean_registry():
    saved = dict(MoECalibrationModule._registry)
    ToyWrapper.built, ToyWrapper.fail_at = 0, None
    yield
    MoECalibrationModule._registry.clear()
    MoECalibrationModule._registry.update(saved)


def test_registry_api_matches_llm_compressor_names():
    MoECalibrationModule.register("ToyMoE")(ToyWrapper)
    assert "toymoe" in MoECalibrationModule.registered_names()
    # compressed-tensors lookup: case-insensitive, "_" and "-" alike
    assert MoECalibrationModule.get_value_from_registry("TOYMOE") is ToyWrapper
    MoECalibrationModule.register("Toy_5MoE")(ToyWrapper)
    assert MoECalibrationModule.get_value_from_registry("toy-5moe") is ToyWrapper
    wrapper = MoECalibrationModule.load_from_registry("ToyMoE", original=ToyMoE(), config=None, calibrate_all_experts=False)
    assert isinstance(wrapper, ToyWrapper) and wrapper.calibrate_all_experts is False
    assert standardize_lookup_name("Qwen3_5Moe Block") == "qwen3-5moe-block"


def test_registering_one_name_twice_names_both_classes():
    MoECalibrationModule.register("ToyMoE")(ToyWrapper)
    MoECalibrationModule.register("ToyMoE")(ToyWrapper)  # the same class again is harmless
    with pytest.raises(RuntimeError, match="ToyWrapper.*PermanentToyWrapper"):
        MoECalibrationModule.register("ToyMoE")(PermanentToyWrapper)


def test_unknown_name_is_a_clear_key_error():
    with pytest.raises(KeyError, match="no calibration wrapper is registered for 'NotABlock'"):
        MoECalibrationModule.get_value_from_registry("NotABlock")


def test_base_class_is_abstract_and_non_permanent_needs_restore():
    with pytest.raises(TypeError):
        MoECalibrationModule(original=ToyMoE(), config=None)

    class NoRestore(MoECalibrationModule):
        def __init__(self, original, config=None, calibrate_all_experts=True):
            super().__init__()

    with pytest.raises(NotImplementedError, match="restore"):
        NoRestore(ToyMoE()).restore(ToyMoE())


def test_context_replaces_and_restores_the_same_objects(caplog):
    MoECalibrationModule.register("ToyMoE")(ToyWrapper)
    model = Model()
    before = _modules(model)
    x = torch.randn(2, 4)
    want = model(x)
    with caplog.at_level(logging.INFO, logger="moe_conformance"):
        with moe_calibration_context(model):
            assert all(isinstance(layer[1], ToyWrapper) for layer in model.layers)
            torch.testing.assert_close(model(x), want)
    assert _modules(model) == before  # same names, same objects
    assert "found 3 MoE block(s)" in caplog.text and "replaced 3" in caplog.text


def test_permanent_wrappers_stay():
    MoECalibrationModule.register("ToyMoE")(PermanentToyWrapper)
    model = Model()
    with moe_calibration_context(model):
        pass
    assert all(isinstance(layer[1], PermanentToyWrapper) for layer in model.layers)


@pytest.mark.parametrize("wrapper", [ToyWrapper, PermanentToyWrapper])
def test_exception_in_body_restores_everything(wrapper):
    MoECalibrationModule.register("ToyMoE")(wrapper)
    model = Model()
    before = _modules(model)
    with pytest.raises(ZeroDivisionError):
        with moe_calibration_context(model):
            1 / 0
    assert _modules(model) == before


def test_constructor_failing_half_way_leaves_model_as_before():
    MoECalibrationModule.register("ToyMoE")(ToyWrapper)
    ToyWrapper.fail_at = 2  # the second block's wrapper raises after the first was swapped in
    model = Model()
    before = _modules(model)
    with pytest.raises(RuntimeError, match="half-way"):
        with moe_calibration_context(model):
            pytest.fail("the body must not run")
    assert _modules(model) == before


def test_uncovered_moe_blocks_are_reported(caplog):
    model = Model()
    with caplog.at_level(logging.WARNING, logger="moe_conformance"):
        with calibration_context(model, {}):
            pass
    assert "3 ToyMoE block(s) have no calibration wrapper and will NOT be calibrated" in caplog.text


def test_one_table_maps_block_classes_to_mechanisms():
    """wrappers/table.py is the only place a block class name is given a wrapper and a mechanism: every name
    ``import wrappers`` registers is in it, each value is a mechanism (or GENERIC), and nothing else keeps a
    registry of its own."""
    from moe_conformance import wrappers
    from moe_conformance.wrappers.blocks import CalibrationMoEBlock

    assert set(wrappers.GENERIC_BLOCKS) == {standardize_lookup_name(name) for name in wrappers.BLOCK_MECHANISMS}
    for name, mechanism in wrappers.BLOCK_MECHANISMS.items():
        assert mechanism is wrappers.GENERIC or (issubclass(mechanism, CalibrationMoEBlock) and mechanism._is_mechanism), name
    assert not [k for k, v in vars(CalibrationMoEBlock).items() if isinstance(v, dict) and not k.startswith("__")]
