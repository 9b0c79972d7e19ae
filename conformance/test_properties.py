"""Hypothesis over each architecture's routing knobs: any combination of them, any small shape, any seed.

The named variants in the fixtures pin a few combinations; this draws the rest (``knobs`` in the fixtures:
e.g. ``topk_group`` against ``n_group``, ``norm_topk_prob`` both ways, scaling factors, shared-expert counts),
so that a wrapper bug showing only under some configuration or shape is found without hand-picking it.
Profiles (``HYPOTHESIS_PROFILE``): ``ci`` (default: derandomized, 10 examples per architecture), ``dev`` (100).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.cases import load_cases
from conformance.checks import check_all_experts_observed, check_output_matches, check_routed_tokens_only

CASES = load_cases()


@st.composite
def configurations(draw, case):
    overrides = {}
    for knob, values in sorted(case.knobs.items()):
        value = draw(st.sampled_from(values))
        overrides.update(value if isinstance(value, dict) else {knob: value})
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 9)))
    return overrides, shape, draw(st.integers(0, 2**16))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.model_type}-routing_properties" for c in CASES])
@given(data=st.data())
def test_routing_properties(case, data, impl, record_property):
    record_property("moe_conformance", {"arch": case.model_type, "check": "routing_properties", "variant": "hypothesis", "mode": None, "dtype": "float32"})
    absent = case.absent_reason()
    if absent:
        pytest.skip(absent)
    overrides, shape, seed = data.draw(configurations(case), label="overrides, shape, seed")
    common = {"variant": "hypothesis", "overrides": overrides, "shapes": [shape], "seed": seed}
    check_all_experts_observed(case, impl, **common)
    check_routed_tokens_only(case, impl, **common)
    for mode in ("all_experts", "routed"):
        check_output_matches(case, impl, mode=mode, **common)
