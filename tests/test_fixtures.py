"""The fixtures load as data, every entry is complete, and the tolerance bites."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from moe_conformance.cases import load_cases
from moe_conformance.cases.arch import FIXTURES_DIR, ArchCase
from moe_conformance.cases.devices import tolerance
from moe_conformance.cases.files import FixtureError, fixture_keys
from moe_conformance.checks.table import CHECKS
from moe_conformance.checks.verdicts import compare_outputs
from moe_conformance.vocabulary import ConformanceFailure


def test_every_entry_is_complete_and_its_variants_exist():
    cases = load_cases()
    assert len({c.model_type for c in cases}) == len(cases)
    for case in cases:
        assert case.experts > 0 and case.projections in (2, 3), case.model_type
        assert "default" in case.variants
        for name, entry in [*case.skip.items(), *case.xfail.items()]:
            assert name == "*" or name in CHECKS, f"{case.model_type}: skip/xfail names unknown check {name!r}"
            assert isinstance(entry, str) or (isinstance(entry, dict) and entry.get("reason")), case.model_type


REPO = Path(__file__).resolve().parent.parent

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
    drift = 1e-4 if dtype == torch.float32 else 8 * tolerance("cpu", dtype)
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


# -- the schema: a broken fixture file is one line naming file, entry and key, before any test runs -----------

ENTRY = """[architectures.glm4_moe_lite]
block = "Glm4MoeLiteMoE"
module = "glm4_moe_lite.modeling_glm4_moe_lite"
config_class = "Glm4MoeLiteConfig"
presets = ["base"]
experts = 8
projections = 3
"""


def _suite_on(folder, text: str) -> subprocess.CompletedProcess:
    """``pytest conformance`` with MOE_CONFORMANCE_FIXTURES pointing at ``folder`` holding ``text`` as its one
    entry file beside the real presets."""
    shutil.copy(FIXTURES_DIR / "presets.toml", folder / "presets.toml")
    (folder / "entries.toml").write_text(text)
    env = {**os.environ, "MOE_CONFORMANCE_FIXTURES": str(folder)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:xdist", "-k", "glm4_moe_lite"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
    )


def _one_error_line(run: subprocess.CompletedProcess) -> str:
    output = run.stdout + run.stderr
    lines = [line for line in output.splitlines() if line.strip()]
    assert run.returncode == 4 and len(lines) == 1 and "Traceback" not in output, output[-2000:]
    return lines[0]


def test_a_misspelt_key_is_one_line_naming_file_entry_and_key(tmp_path):
    line = _one_error_line(_suite_on(tmp_path, ENTRY + "expert_layuot = { is_transposed = true }\n"))
    assert "entries.toml [architectures.glm4_moe_lite]: key 'expert_layuot': unknown key (did you mean 'expert_layout'?)" in line


def test_a_toml_syntax_error_is_one_line_naming_the_file(tmp_path):
    line = _one_error_line(_suite_on(tmp_path, ENTRY + "experts_layout = \n"))
    assert "entries.toml: TOML syntax error in [architectures.glm4_moe_lite]" in line and "line 8" in line, line


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (ENTRY.replace("projections = 3\n", ""), "key 'projections': missing (required: block, module, config_class, experts, projections)"),
        (ENTRY.replace('"base"', '"bsae"'), "key 'presets': no [presets.bsae] in any fixture file (did you mean 'base'?)"),
        (ENTRY + 'variants = "no_such_set"\n', "key 'variants': no [variant_sets.no_such_set]"),
        (ENTRY + "variants.top1 = {}\n", "key 'variants': no 'default' variant"),
        (ENTRY + 'xfail.whole_model = { reason = "r", dtpye = "bfloat16" }\n', "key 'xfail.whole_model': unknown key 'dtpye' (did you mean 'dtype'?)"),
        (ENTRY + 'forward_none = "attention_mask"\n', "key 'forward_none': expected an array"),
        (ENTRY.replace("[architectures.", "[architecture."), "unknown table [architecture] (did you mean 'architectures'?)"),
    ],
    ids=["missing", "preset", "variant_set", "no_default", "gap_key", "not_an_array", "section"],
)
def test_schema_errors_name_entry_and_key(tmp_path, text, says):
    shutil.copy(FIXTURES_DIR / "presets.toml", tmp_path / "presets.toml")
    (tmp_path / "entries.toml").write_text(text)
    with pytest.raises(FixtureError) as error:
        load_cases(tmp_path, derive=False)
    assert says in str(error.value) and "\n" not in str(error.value)


def test_the_schema_is_archcase():
    """The allowed keys are ArchCase's fields, not a second list; the README documents every one of them."""
    assert set(fixture_keys()) == {f.name for f in dataclasses.fields(ArchCase)} - {"model_type", "source"}
    readme = (FIXTURES_DIR / "README.md").read_text()
    assert all(f"`{key}`" in readme for key in fixture_keys()), [k for k in fixture_keys() if f"`{k}`" not in readme]
