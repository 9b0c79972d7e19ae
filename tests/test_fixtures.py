"""The fixtures load as data, every entry is complete, and the tolerance bites."""

from __future__ import annotations

import pytest
import torch

from conformance.cases import FIXTURES_DIR, load_cases
from conformance.suite import CHECKS
from conformance.verdicts import TOLERANCE, ConformanceFailure, compare_outputs


def test_every_entry_is_complete_and_its_variants_exist():
    cases = load_cases()
    assert len({c.model_type for c in cases}) == len(cases)
    for case in cases:
        assert case.experts > 0 and case.projections in (2, 3), case.model_type
        assert "default" in case.variants
        for name, entry in [*case.skip.items(), *case.xfail.items()]:
            assert name == "*" or name in CHECKS, f"{case.model_type}: skip/xfail names unknown check {name!r}"
            assert isinstance(entry, str) or (isinstance(entry, dict) and entry.get("reason")), case.model_type


# "Tiny" as a number: the largest fixture model is about 2.2 M parameters. A default left in place (a 12288-wide
# dense MLP, 64 attention heads of 128) multiplies that and the suite's wall time with it.
TINY_MODEL_PARAMETERS = 3_000_000


@pytest.mark.parametrize("case", [c for c in load_cases() if c.model_class], ids=lambda c: c.model_type)
def test_whole_models_are_tiny(case):
    if case.absent_reason():
        pytest.skip(case.absent_reason())
    model, _ = case.make_model()
    largest = max(model.named_parameters(), key=lambda item: item[1].numel())
    total = sum(p.numel() for p in model.parameters())
    assert total <= TINY_MODEL_PARAMETERS, (
        f"{case.model_type}: {case.model_class} has {total:,} parameters; the largest is {largest[0]} "
        f"{tuple(largest[1].shape)}: a config default the fixture should shrink"
    )


def test_a_name_defined_twice_is_an_error(tmp_path):
    for name in ("a.toml", "b.toml"):
        (tmp_path / name).write_text('[presets.same]\nhidden_size = 32\n')
    with pytest.raises(ValueError, match=r"\[presets.same\] is defined in both"):
        load_cases(tmp_path)


def test_fixtures_folder_is_data_not_a_package():
    assert not (FIXTURES_DIR / "__init__.py").exists()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tolerance_allows_rounding_and_catches_drift(dtype):
    want = torch.randn(64, 32, generator=torch.Generator().manual_seed(0)).to(dtype)
    compare_outputs(want.clone(), want, "t")  # identical
    eps = torch.finfo(dtype).eps
    compare_outputs((want.double() * (1 + eps / 4)).to(dtype), want, "t")  # below one ulp
    drift = 1e-4 if dtype == torch.float32 else 8 * TOLERANCE[dtype]
    with pytest.raises(ConformanceFailure, match="exceeds"):
        compare_outputs((want.double() * (1 + drift)).to(dtype), want, "t")
    with pytest.raises(ConformanceFailure, match="exceeds"):
        compare_outputs(torch.zeros_like(want), want, "t")


def test_structure_dtype_and_shape_are_compared():
    want = (torch.ones(2, 3), torch.zeros(4))
    with pytest.raises(ConformanceFailure, match="expected a tuple"):
        compare_outputs(want[0], want, "t")
    with pytest.raises(ConformanceFailure, match="expected 2 elements"):
        compare_outputs(want[:1], want, "t")
    with pytest.raises(ConformanceFailure, match="dtype"):
        compare_outputs((want[0].double(), want[1]), want, "t")
    with pytest.raises(ConformanceFailure, match="shape"):
        compare_outputs((want[0].T, want[1]), want, "t")
