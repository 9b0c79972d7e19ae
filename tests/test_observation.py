"""The harness's own observation of the original blocks is right: what the checks compare against is only as
good as the hooks that record which tokens the original routed where."""

from __future__ import annotations

import pytest
import torch

from moe_conformance import load_cases, load_implementation
from moe_conformance.checks.instruments import feeding_recorded_inputs, recording_calls
from moe_conformance.checks.smoke import calibration_smoke

CASES = [case for case in load_cases() if not case.absent_reason() and case.model_class]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.model_type)
def test_natural_routing_is_observed_in_a_whole_model(case):
    """Two tokens reach at least one expert of every MoE block: a block reported with every expert unseen
    means the hooks missed how its experts are called (4.57 gpt-oss passes the top-k index by keyword;
    llama4's experts take pre-scaled rows and no index)."""
    result = calibration_smoke(case, load_implementation("reference"), tokens=2)
    blind = [name for name, unseen in result.unseen_without_context.items() if len(unseen) == case.experts]
    assert not blind, f"{case.model_type}: no expert observed in {blind} without the context"


class _Looped(torch.nn.Module):
    """A model that runs one block once per pass, each pass on the previous pass's output."""

    def __init__(self):
        super().__init__()
        self.block = torch.nn.Linear(4, 4)

    def forward(self, x):
        for _ in range(2):
            x = torch.tanh(self.block(x))
        return x


def test_every_call_of_a_block_is_recorded_and_fed_back_in_order():
    """whole_model in bfloat16 feeds each MoE block the original's input: a block called once per pass of a
    looped layer must get each pass's own input back (feeding the first call's everywhere failed inkling2_loop)."""
    model = _Looped()
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    recorded, outputs = {}, {}
    with recording_calls({"block": model.block}, recorded, outputs):
        want = model(x)
    assert len(recorded["block"]) == len(outputs["block"]) == 2
    assert torch.equal(recorded["block"][1][0][0], outputs["block"][0].tanh())
    fed_outputs, seen = {}, []
    with feeding_recorded_inputs(model, {"block"}, recorded, fed_outputs):
        # registered after the feeding hook, so it sees what the block receives
        handle = model.block.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
        got = model(torch.zeros_like(x))  # a different input: only what is fed back reaches the block
        handle.remove()
    assert torch.equal(got, want)
    assert [torch.equal(s, r[0][0]) for s, r in zip(seen, recorded["block"])] == [True, True]
    assert all(torch.equal(g, w) for g, w in zip(fed_outputs["block"], outputs["block"]))
