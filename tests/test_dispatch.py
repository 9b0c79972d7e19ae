"""``dispatch_to_experts`` against the per-expert loop it replaced (kept here as the oracle): the same output
to the bit, and every expert called on the same rows in the same order, in both modes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from moe_conformance.wrappers import dispatch_to_experts
from tests.versions import requires_transformers_5


def loop_dispatch(experts, hidden_states, top_k_index, top_k_weights, calibrate_all_experts, accumulate_dtype=None, weighted_fn=None):
    """The per-expert loop: a host sync per expert (``hit``, ``torch.where``), ``index_add_`` per expert."""
    num_experts = len(experts)
    out = torch.zeros(hidden_states.shape, dtype=accumulate_dtype or hidden_states.dtype, device=hidden_states.device)
    index = top_k_index.clamp(0, num_experts).where(top_k_index >= 0, num_experts)
    expert_mask = nn.functional.one_hot(index, num_classes=num_experts + 1).permute(2, 1, 0)
    hit = expert_mask[:num_experts].sum(dim=(1, 2)) > 0
    for expert_idx in range(num_experts):
        expert = experts[expert_idx]
        if calibrate_all_experts:
            all_tokens_out = expert(hidden_states)
        if not hit[expert_idx]:
            continue
        top_k_pos, token_idx = torch.where(expert_mask[expert_idx])
        expert_out = all_tokens_out[token_idx] if calibrate_all_experts else expert(hidden_states[token_idx])
        contribution = expert_out * top_k_weights[token_idx, top_k_pos, None]
        if weighted_fn is not None:
            contribution = weighted_fn(contribution)
        out.index_add_(0, token_idx, contribution.to(out.dtype))
    return out


class RecordingExpert(nn.Module):
    """A small gated MLP that records every input it is called on; ``poison`` makes its output non-finite on
    the tokens equal to it (a non-routed token's output must not reach the sum)."""

    def __init__(self, hidden: int, inter: int, dtype: torch.dtype, poison: torch.Tensor | None = None):
        super().__init__()
        self.gate = nn.Linear(hidden, inter, bias=False, dtype=dtype)
        self.up = nn.Linear(hidden, inter, bias=False, dtype=dtype)
        self.down = nn.Linear(inter, hidden, bias=False, dtype=dtype)
        self.calls: list[torch.Tensor] = []
        self.poison = poison

    def forward(self, x):
        self.calls.append(x.clone())
        out = self.down(nn.functional.silu(self.gate(x)) * self.up(x))
        if self.poison is not None:
            out = out.masked_fill((x == self.poison).all(dim=-1, keepdim=True), float("nan"))
        return out


def _experts(count, hidden, dtype, poison=None):
    return [RecordingExpert(hidden, 24, dtype, poison) for _ in range(count)]


def _routing(tokens, k, num_experts, generator, sentinel=True, duplicates=False):
    index = torch.stack([torch.randperm(num_experts, generator=generator)[:k] for _ in range(tokens)]) if tokens else torch.zeros(0, k, dtype=torch.long)
    if sentinel and tokens:
        index[torch.rand(index.shape, generator=generator) < 0.15] = num_experts  # expert-parallel sentinel
        index[torch.rand(index.shape, generator=generator) < 0.05] = -1
    if duplicates and tokens:
        index[:, -1] = index[:, 0]  # NLLB 5.x's reading can route one token to one expert twice
    return index


# CPU always; the GPU too where there is one (the benchmark's machine): the same arithmetic in the same order.
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("calibrate_all", [True, False], ids=["all", "routed"])
@pytest.mark.parametrize(
    "tokens,k,num_experts,dtype,accumulate,duplicates",
    [
        (13, 2, 6, torch.float32, None, False),
        (1, 4, 8, torch.float32, None, False),
        (0, 2, 4, torch.float32, None, False),
        (40, 3, 7, torch.float32, None, True),
        (29, 4, 16, torch.bfloat16, None, False),
        (29, 4, 16, torch.bfloat16, torch.float32, False),
        (17, 8, 8, torch.float32, torch.float64, False),
    ],
)
def test_matches_the_per_expert_loop_bitwise(device, calibrate_all, tokens, k, num_experts, dtype, accumulate, duplicates):
    generator = torch.Generator().manual_seed(tokens * 31 + k)
    torch.manual_seed(tokens + num_experts)
    hidden = torch.randn(tokens, 20, generator=generator).to(dtype).to(device)
    index = _routing(tokens, k, num_experts, generator, duplicates=duplicates).to(device)
    weights = torch.rand(tokens, k, generator=generator).to(device)
    ours, theirs = _experts(num_experts, 20, dtype), _experts(num_experts, 20, dtype)
    for a, b in zip(ours, theirs):
        b.load_state_dict(a.state_dict())
        a.to(device), b.to(device)

    got = dispatch_to_experts(ours, hidden, index, weights, calibrate_all, accumulate_dtype=accumulate)
    want = loop_dispatch(theirs, hidden, index, weights, calibrate_all, accumulate_dtype=accumulate)

    assert got.dtype == want.dtype and got.shape == want.shape
    if duplicates and device != "cpu":
        # One token twice in one expert's index_add_: the loop's own order is the GPU atomics' (not fixed).
        torch.testing.assert_close(got, want)
    else:
        assert torch.equal(got, want)
    for e, (a, b) in enumerate(zip(ours, theirs)):
        assert len(a.calls) == len(b.calls), f"expert {e}"
        for x, y in zip(a.calls, b.calls):
            assert torch.equal(x, y), f"expert {e} received other rows, or in another order"


@pytest.mark.parametrize("grouped_output_bytes,group_bytes", [(0, 0), (1 << 30, 3 * 40 * 20 * 4)], ids=["one_by_one", "groups_of_3"])
def test_gathers_one_by_one_or_in_groups_alike(monkeypatch, grouped_output_bytes, group_bytes):
    """All-experts mode gathers small outputs in groups of consecutive experts, large ones one by one: the same
    rows either way."""
    from moe_conformance.wrappers import experts as experts_module

    monkeypatch.setattr(experts_module, "_GROUPED_OUTPUT_BYTES", grouped_output_bytes)
    monkeypatch.setattr(experts_module, "_GATHER_GROUP_BYTES", group_bytes)
    generator = torch.Generator().manual_seed(2)
    hidden = torch.randn(40, 20, generator=generator)
    index = _routing(40, 3, 11, generator)
    index[index == 4] = 5  # an expert with no routed token inside a group
    weights = torch.rand(40, 3, generator=generator)
    experts = _experts(11, 20, torch.float32)
    got = dispatch_to_experts(experts, hidden, index, weights, True)
    assert torch.equal(got, loop_dispatch(experts, hidden, index, weights, True))


def test_weighted_fn_runs_per_expert_in_expert_order():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(11, 20, generator=generator)
    index = _routing(11, 2, 5, generator)
    weights = torch.rand(11, 2, generator=generator)
    experts = _experts(5, 20, torch.float32)
    seen_ours, seen_loop = [], []

    def recorder(seen):
        def weighted(rows):
            seen.append(rows.clone())
            return rows.mul_(0.75)

        return weighted

    got = dispatch_to_experts(experts, hidden, index, weights, True, weighted_fn=recorder(seen_ours))
    want = loop_dispatch(experts, hidden, index, weights, True, weighted_fn=recorder(seen_loop))
    assert torch.equal(got, want)
    assert len(seen_ours) == len(seen_loop) and all(torch.equal(a, b) for a, b in zip(seen_ours, seen_loop))


@pytest.mark.parametrize("calibrate_all", [True, False], ids=["all", "routed"])
def test_non_finite_output_of_a_token_not_routed_there_does_not_leak(calibrate_all):
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(9, 20, generator=generator)
    index = torch.tensor([[1, 2]] * 9)
    index[4] = torch.tensor([2, 3])  # token 4 is not routed to expert 0 or 1, whose output on it is NaN
    weights = torch.rand(9, 2, generator=generator)
    experts = _experts(4, 20, torch.float32, poison=hidden[4])
    for expert in experts[2:]:
        expert.poison = None
    out = dispatch_to_experts(experts, hidden, index, weights, calibrate_all)
    assert torch.isfinite(out[4]).all()
    assert torch.equal(out, loop_dispatch(experts, hidden, index, weights, calibrate_all))


@requires_transformers_5  # Qwen3MoeExperts (fused) exists from 5.0
@pytest.mark.parametrize("device", DEVICES)
def test_default_gate_is_the_concatenated_arithmetic(device):
    """``apply_gate=None`` (transformers' default gate; taken from gate/up directly on CUDA) equals the class's
    ``_apply_gate`` on the ``[gate, up]`` concatenation to the bit; a class's own gate is kept."""
    from transformers.models.qwen3_moe import Qwen3MoeConfig
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeExperts

    from moe_conformance.wrappers.experts import ExpertMLP, unpack_fused_experts

    config = Qwen3MoeConfig(hidden_size=32, moe_intermediate_size=24, num_experts=4, num_experts_per_tok=2)
    fused = Qwen3MoeExperts(config)
    with torch.no_grad():
        for p in fused.parameters():
            p.normal_()
    fused.to(device)
    expert = unpack_fused_experts(fused)[1]
    assert expert._apply_gate is None
    x = torch.randn(9, 32, device=device)
    direct = expert(x)
    expert._apply_gate = lambda gate_up: type(fused)._apply_gate(fused, gate_up)
    assert torch.equal(direct, expert(x))

    def own_gate(module, gate_up):
        return gate_up[..., ::2] * 2

    assert isinstance(unpack_fused_experts(fused, gate_fn=own_gate)[0], ExpertMLP)
    assert unpack_fused_experts(fused, gate_fn=own_gate)[0]._apply_gate is not None
