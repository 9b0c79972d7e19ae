"""The all-experts dispatch's grouped activation (``wrappers.experts._full_token_outputs``): on CUDA, the gate and
up outputs of consecutive experts are activated by one launch. Forced on here (the CPU never takes it) to check
that it computes each expert's output and still calls every Linear once, on its own input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from moe_conformance.wrappers import experts as experts_module
from moe_conformance.wrappers.experts import ExpertMLP, linear_view


def _experts(count: int, hidden: int, inter: int, post_norm: bool = False) -> list[ExpertMLP]:
    generator = torch.Generator().manual_seed(0)
    first = torch.randn(count, 2 * inter, hidden, generator=generator)
    down = torch.randn(count, hidden, inter, generator=generator)
    act = nn.SiLU()
    norm = nn.LayerNorm(hidden) if post_norm else None
    return [ExpertMLP(linear_view(first[e, :inter], None), linear_view(first[e, inter:], None), linear_view(down[e], None),
                      None, act, post_expert_norm=norm) for e in range(count)]


@pytest.mark.parametrize("group", [2, 3, 16])
@pytest.mark.parametrize("post_norm", [False, True])
def test_grouped_activation_matches_and_calls_every_linear(monkeypatch, group, post_norm):
    experts = _experts(7, 16, 8, post_norm)
    hidden = torch.randn(32, 16, generator=torch.Generator().manual_seed(1))
    calls = []
    for e, expert in enumerate(experts):
        for name in ("gate_proj", "up_proj", "down_proj"):
            getattr(expert, name).register_forward_hook(
                lambda module, args, out, e=e, name=name: calls.append((e, name, args[0].clone())))
    with torch.no_grad():
        want = [expert(hidden) for expert in experts]
        expected_calls = list(calls)
        calls.clear()
        monkeypatch.setattr(experts_module, "_activation_group_size", lambda experts, hidden_states: group)
        got = list(experts_module._full_token_outputs(experts, hidden))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)
    assert sorted((e, n) for e, n, _ in calls) == sorted((e, n) for e, n, _ in expected_calls)
    inputs = {(e, n): x for e, n, x in expected_calls}
    for e, n, x in calls:
        torch.testing.assert_close(x, inputs[(e, n)], rtol=1e-6, atol=1e-6)


def test_group_size_rules():
    experts = _experts(8, 64, 32)
    hidden = torch.randn(64, 64)
    assert experts_module._activation_group_size(experts, hidden) == 1  # the CPU: never
    if not torch.cuda.is_available():
        return
    cuda = [e.cuda() for e in _experts(8, 64, 32)]
    assert experts_module._activation_group_size(cuda, hidden.cuda()) == 8
    assert experts_module._activation_group_size(cuda, hidden[:3].cuda()) == 1  # slices not 256-byte aligned
    cuda[3]._apply_gate = lambda gate_up: gate_up
    assert experts_module._activation_group_size(cuda, hidden.cuda()) == 1  # a custom gate


def test_an_observed_expert_is_called_itself(monkeypatch):
    """A hook on an ExpertMLP (AWQ-style: the expert's input) keeps the per-expert path: the grouped one would not
    call the ExpertMLP, only its Linears. Global module hooks do too."""
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))  # the size rules only; nothing runs
    experts = _experts(8, 64, 32)
    hidden = torch.randn(64, 64)
    assert experts_module._activation_group_size(experts, hidden) == 8
    handle = experts[5].register_forward_pre_hook(lambda module, args: None)
    assert experts_module._activation_group_size(experts, hidden) == 1
    handle.remove()
    handle = nn.modules.module.register_module_forward_hook(lambda module, args, out: None)
    try:
        assert experts_module._activation_group_size(experts, hidden) == 1
    finally:
        handle.remove()
    assert experts_module._activation_group_size(experts, hidden) == 8
