"""Per-expert ``nn.Linear`` experts and the token dispatch every reference wrapper shares.

``dispatch_to_experts`` is the one loop that sends tokens to experts. In calibration mode every expert runs on
every token (so each of its Linears is observed on the whole batch) and only the rows routed to it are kept;
in routed mode each expert runs on its routed rows only. Either way the combination is transformers' own eager
arithmetic (each token's weighted contributions added to zero in ascending expert order), so the output equals
the original's up to float rounding. The routing is sorted once per call (one host sync), not searched per
expert, so on a GPU the experts' kernels queue back to back.

``LinearExperts`` replaces a transformers v5 fused experts module (3-D ``gate_up_proj``/``down_proj`` behind
``@use_experts_implementation``). Its per-expert Linears are *views* of the fused parameters: bit-exact, no
second copy of the expert weights, and the original stays intact for ``restore``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

__all__ = ["FUSED_EXPERTS_PARAMETERS", "ExpertMLP", "LinearExperts", "dispatch_to_experts", "is_fused_experts", "linear_view"]


def dispatch_to_experts(
    experts: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    hidden_states: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
    calibrate_all_experts: bool,
    accumulate_dtype: torch.dtype | None = None,
    weighted_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Combine ``sum_k top_k_weights[t, k] * experts[top_k_index[t, k]](hidden_states[t])`` for every token t.

    ``hidden_states`` is ``[T, H]``; ``top_k_index``/``top_k_weights`` are ``[T, k]``. Indices outside
    ``[0, len(experts))`` are skipped (transformers uses ``num_experts`` as an expert-parallel sentinel), and so
    are routes of weight exactly 0: they add nothing to the output, and an expert calibrated on them would be
    calibrated on tokens it never serves (LongCat-Flash's dummy rows, ZAYA's skip class; ``routed_tokens_only``).
    The sum is accumulated in ``accumulate_dtype`` (default: the input dtype), each contribution cast to it
    first, as transformers does. ``weighted_fn``, where given, transforms each expert's weighted rows before
    they are summed (NLLB-MoE's token dropout).

    The routing is sorted by expert once per call, with one host sync for the segment bounds, rather than one
    ``torch.where`` per expert. Each expert is called once (on every token, or on its routed rows), and only
    its routed rows are kept, so an output of a token not routed to that expert (even a non-finite one) never
    reaches the sum. All-experts mode holds at most ``_GATHER_GROUP_BYTES`` of full-token outputs at a time
    (one output, where that is larger), whatever the number of experts.
    """
    acc_dtype = accumulate_dtype or hidden_states.dtype
    out = torch.zeros(hidden_states.shape, dtype=acc_dtype, device=hidden_states.device)
    plan = _RoutingPlan(top_k_index, len(experts), top_k_weights)
    weights = plan.slot_weights(top_k_weights)
    if calibrate_all_experts:
        # weighted_fn runs right after each expert, as before (its dropout draws in that order): no groups then
        segments = _all_tokens_segments(experts, hidden_states, plan, grouped=weighted_fn is None)
    else:
        segments = _routed_segments(experts, hidden_states, plan)
    pieces = []
    for start, stop, rows in segments:
        if weighted_fn is not None:
            rows = weighted_fn(rows * weights[start:stop, None]).to(acc_dtype)
        pieces.append(rows)
    if not pieces:
        return out
    pieces.append(pieces[0].new_zeros((1, pieces[0].shape[-1])))  # the row every skipped slot reads
    contributions = torch.cat(pieces)
    if weighted_fn is None:
        contributions = (contributions * weights[:, None]).to(acc_dtype)
    # Each token's contributions in ascending expert order (then top-k position), one column at a time: the
    # additions index_add_ per expert made, in the same order, so the sum is the same to the bit.
    for column in plan.columns:
        out += contributions.index_select(0, column)
    return out


# All-experts mode gathers each expert's routed rows from its full-token output. Where that output is small
# (few tokens), one gather launch per expert costs the host more than the GPU spends on it, so the outputs of
# consecutive experts are held until they reach _GATHER_GROUP_BYTES and gathered by one kernel from their
# concatenation; an output over _GROUPED_OUTPUT_BYTES is gathered on its own (copying it would cost more).
_GROUPED_OUTPUT_BYTES = 8 << 20
_GATHER_GROUP_BYTES = 64 << 20


# On CUDA, where one expert's gate output is small (few tokens: the host issuing the launches is the limit), the
# gate and up outputs of consecutive experts, up to _ACTIVATION_GROUP_BYTES of them, are activated together: one
# act_fn and one product for the group instead of two launches per expert (CUDA's elementwise kernels give every
# element the same bits whatever the tensor around it). Every Linear is still called on its own input; an
# expert's gate_proj and up_proj run before the down_proj of the experts before it in its group. 0 turns it off.
_ACTIVATION_GROUP_BYTES = 32 << 20


def _full_token_outputs(experts, hidden_states: torch.Tensor):
    """Each expert's output on every token, in expert order (observed on every token)."""
    experts = list(experts)  # (slicing a ModuleList would build another)
    group = _activation_group_size(experts, hidden_states)
    if group <= 1:
        for expert in experts:
            yield expert(hidden_states)
        return
    for first in range(0, len(experts), group):
        members = experts[first : first + group]
        gates, ups = [], []
        for expert in members:
            modules = expert._modules
            gates.append(modules["gate_proj"](hidden_states))
            ups.append(modules["up_proj"](hidden_states))
        act_fn = members[0]._modules.get("act_fn")
        act_fn = members[0].act_fn if act_fn is None else act_fn
        activated = act_fn(torch.cat(gates)) * torch.cat(ups)
        del gates, ups
        rows = hidden_states.shape[0]
        for i, expert in enumerate(members):
            modules = expert._modules
            out = modules["down_proj"](activated[i * rows : (i + 1) * rows])
            norm = modules.get("post_expert_norm")
            yield out if norm is None else norm(out)


def _activation_group_size(experts, hidden_states: torch.Tensor) -> int:
    """How many consecutive experts ``_full_token_outputs`` activates together (1: each expert on its own)."""
    if not (_ACTIVATION_GROUP_BYTES and hidden_states.is_cuda and hidden_states.dim() == 2 and len(experts) > 1):
        return 1
    first = experts[0]
    if not isinstance(first, ExpertMLP):
        return 1
    act = first._modules.get("act_fn", first.__dict__.get("act_fn"))
    width = getattr(first._modules.get("gate_proj"), "out_features", None)
    if _observed_modules():
        return 1  # global module hooks see every module's call, ExpertMLP's too
    for expert in experts:  # the standard gate, one shared activation, the same widths, and nothing observing the
        # ExpertMLP itself (the grouped path calls its Linears, not it: AWQ-style hooks on an expert's input would miss it)
        if not (type(expert) is type(first) and expert._apply_gate is None and "gate_proj" in expert._modules
                and not (expert._forward_pre_hooks or expert._forward_hooks) and "forward" not in expert.__dict__
                and type(expert).forward is ExpertMLP.forward
                and expert._modules.get("act_fn", expert.__dict__.get("act_fn")) is act
                and expert._modules["gate_proj"].out_features == width and expert._modules["up_proj"].out_features == width):
            return 1
    rows = hidden_states.shape[0]
    # each expert's slice of the activation starts 256-byte aligned, as a tensor of its own would
    if (rows * width * hidden_states.element_size()) % 256:
        return 1
    gate_bytes = rows * width * hidden_states.element_size()
    if gate_bytes > _GROUPED_OUTPUT_BYTES:
        return 1  # large outputs: the device is the limit, and concatenating them would cost more than it saves
    return max(1, min(len(experts), _ACTIVATION_GROUP_BYTES // (2 * gate_bytes)))


def _observed_modules() -> bool:
    """Whether global module hooks are registered (``nn.modules.module.register_module_forward_(pre_)hook``)."""
    from torch.nn.modules import module as module_module

    return bool(getattr(module_module, "_global_forward_pre_hooks", None) or getattr(module_module, "_global_forward_hooks", None))


def _all_tokens_segments(experts, hidden_states: torch.Tensor, plan: _RoutingPlan, grouped: bool):
    """Run every expert on every token; yield ``(start, stop, rows)``: the outputs of the sorted slots
    ``start:stop`` (one expert's, or a group of consecutive experts'), in slot order."""
    group: list[torch.Tensor] = []
    group_bytes = group_start = group_rank = routed_experts = 0
    outputs = _full_token_outputs(experts, hidden_states) if grouped else (expert(hidden_states) for expert in experts)
    for expert_idx, all_tokens_out in enumerate(outputs):  # each observed on every token
        start, stop = plan.bounds[expert_idx], plan.bounds[expert_idx + 1]
        if stop == start:
            del all_tokens_out  # before the next expert runs
            continue
        routed_experts += 1
        if not (grouped and all_tokens_out.nbytes <= _GROUPED_OUTPUT_BYTES):
            if group:
                yield group_start, start, plan.gather_group(group, group_start, start, group_rank)
                group, group_bytes = [], 0
            rows = all_tokens_out.index_select(0, plan.token[start:stop])
            del all_tokens_out
            yield start, stop, rows
            continue
        if not group:
            group_start, group_rank = start, routed_experts - 1
        group.append(all_tokens_out)
        group_bytes += all_tokens_out.nbytes
        del all_tokens_out
        if group_bytes >= _GATHER_GROUP_BYTES:
            yield group_start, stop, plan.gather_group(group, group_start, stop, group_rank)
            group, group_bytes = [], 0
    if group:
        yield group_start, plan.routed, plan.gather_group(group, group_start, plan.routed, group_rank)


def _routed_segments(experts, hidden_states: torch.Tensor, plan: _RoutingPlan):
    """Run each expert on its routed rows (gathered once for all experts); yield ``(start, stop, rows)``."""
    routed_inputs = hidden_states.index_select(0, plan.token[: plan.routed])
    for expert_idx, expert in enumerate(experts):
        start, stop = plan.bounds[expert_idx], plan.bounds[expert_idx + 1]
        if stop > start:
            yield start, stop, expert(routed_inputs[start:stop])


class _RoutingPlan:
    """The slots ``(t, j)`` of a ``[T, k]`` top-k routing, sorted by expert, and where each lands.

    Slot ``s = j * T + t`` (position-major, as ``torch.where`` over a ``[k, T]`` mask enumerates them): a
    stable sort by expert gives each expert its slots in the order the per-expert loop visited them.
    Out-of-range experts become ``num_experts`` and sort last, a segment no expert runs. ``bounds[e]:bounds[e+1]``
    is expert ``e``'s segment of the sorted slots (host ints: the call's one sync), ``routed`` the number of
    slots routed to an expert, ``token`` the token of each sorted slot, and ``columns[c][t]`` the sorted
    position of token ``t``'s ``c``-th slot in expert order (ties: top-k position), or ``routed`` where that
    slot goes to no expert.
    """

    def __init__(self, top_k_index: torch.Tensor, num_experts: int, top_k_weights: torch.Tensor | None = None):
        tokens, k = top_k_index.shape
        with torch.no_grad():
            # -1 and anything past the last expert -> num_experts (clamp, then -1 wraps round to it)
            expert = top_k_index.t().reshape(-1).clamp(-1, num_experts).remainder(num_experts + 1)
            if top_k_weights is not None and top_k_weights.shape == top_k_index.shape:  # weight 0: no route
                expert = expert.masked_fill(top_k_weights.t().reshape(-1) == 0, num_experts)
            sorted_expert, self.order = torch.sort(expert, stable=True)
            first = torch.arange(num_experts + 1, device=expert.device, dtype=expert.dtype)
            starts = torch.searchsorted(sorted_expert, first)
            self.token = self.order % max(tokens, 1)
            self._sorted_expert, self._tokens = sorted_expert, tokens
            # Sorted positions grouped by token, ascending within a token: its slots in expert order.
            by_token = torch.sort(self.token, stable=True).indices.view(tokens, k)
            self.bounds = starts.tolist()  # the one host sync
        self.routed = self.bounds[-1]
        self.columns = by_token.clamp(max=self.routed).t()

    def gather_group(self, outputs: list[torch.Tensor], start: int, stop: int, first_rank: int) -> torch.Tensor:
        """The rows of sorted slots ``start:stop`` from the full-token ``outputs`` of the consecutive experts
        owning them, the first being the ``first_rank``-th expert with routed slots."""
        if len(outputs) == 1:
            return outputs[0].index_select(0, self.token[start:stop])
        if not hasattr(self, "_stacked_row"):
            # Row of each routed slot in the concatenated outputs of every expert with routed slots:
            # (rank of its expert among those) * T + its token.
            experts = self._sorted_expert[: self.routed]
            new_expert = torch.ones_like(experts, dtype=torch.bool)
            new_expert[1:] = experts[1:] != experts[:-1]
            self._stacked_row = (new_expert.cumsum(0) - 1) * self._tokens + self.token[: self.routed]
        return torch.cat(outputs).index_select(0, self._stacked_row[start:stop] - first_rank * self._tokens)

    def slot_weights(self, top_k_weights: torch.Tensor) -> torch.Tensor:
        """The routing weight of each routed slot in sorted order, then a zero for the skipped-slot row."""
        weights = top_k_weights.t().reshape(-1)[self.order[: self.routed]]
        return nn.functional.pad(weights, (0, 1))


def linear_view(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` whose parameters are the given tensors (views: no copy, no fresh allocation)."""
    # Built without nn.Linear.__init__: its parameter initialisation (even on the meta device) costs more than
    # everything else in unpacking a block's experts, and its tensors would be replaced at once.
    linear = nn.Linear.__new__(nn.Linear)
    nn.Module.__init__(linear)
    linear.out_features, linear.in_features = weight.shape
    linear.weight = nn.Parameter(weight, requires_grad=False)
    linear.register_parameter("bias", nn.Parameter(bias, requires_grad=False) if bias is not None else None)
    return linear


class ExpertMLP(nn.Module):
    """One expert as separate Linears: ``down_proj(gate(gate_proj(x), up_proj(x)))``, or
    ``down_proj(act(up_proj(x)))`` when the experts have no gate; then ``post_expert_norm`` where the experts
    have one (``has_post_expert_norm``: one norm module, shared by every expert, on each expert's output before
    the routing weight, as transformers' eager, batched and grouped forwards apply it).

    ``apply_gate`` is the experts class's own gating function, fed the projection output in the fused layout it
    expects (concatenated ``[gate, up]`` or interleaved ``[g0, u0, g1, u1, ...]``), so custom gates (gpt-oss's
    clamped SwiGLU) are reproduced exactly. None means transformers' default gate, ``act_fn(gate) * up``: on
    CUDA it is computed from the two projections directly, without building and splitting a ``[T, 2I]`` tensor
    on every call (CUDA's elementwise kernels give every element the same bits whatever the layout). On other
    devices the halves of the concatenation are used, as before: the CPU kernels compute an activation's
    transcendental with a vectorised routine or a scalar one depending on where a contiguous run ends, so a
    strided half and a contiguous tensor can differ in the last bit when the width is not a multiple of the
    vector block (the suite's tiny experts).
    """

    def __init__(
        self,
        gate_proj: nn.Linear | None,
        up_proj: nn.Linear,
        down_proj: nn.Linear,
        apply_gate: Callable[[torch.Tensor], torch.Tensor] | None,
        act_fn: nn.Module | Callable,
        interleaved: bool = False,
        post_expert_norm: nn.Module | None = None,
    ):
        super().__init__()
        if gate_proj is not None:
            self.gate_proj = gate_proj
        self.up_proj = up_proj
        self.down_proj = down_proj
        self.act_fn = act_fn
        if post_expert_norm is not None:
            self.post_expert_norm = post_expert_norm
        self._apply_gate = apply_gate
        self._interleaved = interleaved

    @property
    def has_gate(self) -> bool:
        return "gate_proj" in self._modules

    # The all-experts forward calls this once per expert; on a GPU at a few hundred tokens the host issuing it is
    # the limit (benchmarks/bench_cost.py --variants, docs/calibration-cost.md), so the submodules are read from
    # ``_modules`` once (each ``self.name`` of a submodule goes through ``nn.Module.__getattr__``) and the
    # activation is inlined. Every Linear is still called, through its own ``__call__`` (hooks, replaced forwards).
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modules = self._modules
        out = modules["down_proj"](self._activation(x, modules))
        norm = modules.get("post_expert_norm")
        return out if norm is None else norm(out)

    def _activation(self, x: torch.Tensor, modules: Mapping[str, nn.Module] | None = None) -> torch.Tensor:
        modules = self._modules if modules is None else modules
        act_fn = modules.get("act_fn")
        if act_fn is None:  # a plain function, not a submodule
            act_fn = self.act_fn
        gate_proj = modules.get("gate_proj")
        if gate_proj is None:
            return act_fn(modules["up_proj"](x))
        gate, up = gate_proj(x), modules["up_proj"](x)
        if self._apply_gate is None and gate.is_cuda:
            return act_fn(gate) * up
        if self._interleaved:
            gate_up = torch.stack((gate, up), dim=-1).flatten(-2)
        else:
            gate_up = torch.cat((gate, up), dim=-1)
        if self._apply_gate is None:
            gate, up = gate_up.chunk(2, dim=-1)
            return self.act_fn(gate) * up
        return self._apply_gate(gate_up)


# The transformers v5 experts calling contract: ``experts(hidden[T, H], top_k_index[T, k], top_k_weights[T, k])``.
FUSED_EXPERTS_PARAMETERS = ["hidden_states", "top_k_index", "top_k_weights"]


def is_fused_experts(module: nn.Module) -> bool:
    """A transformers v5 experts module: 3-D expert parameters (``gate_up_proj``/``up_proj`` + ``down_proj``)
    called as ``experts(hidden, top_k_index, top_k_weights)``: decorated by ``@use_experts_implementation``
    (which sets the layout flags on the instance) or an undecorated forward with those parameters.

    Fused modules with another contract (llama4's dense ``experts(hidden[E*T, H])``, 4.x gpt-oss's dense
    routing weights) are not: ``LinearExperts`` could not stand in for them, so they need a hand-written
    mechanism."""
    down = getattr(module, "down_proj", None)
    first = getattr(module, "gate_up_proj", getattr(module, "up_proj", None))
    if not all(isinstance(p, torch.Tensor) and p.dim() == 3 for p in (down, first)):
        return False
    if "is_transposed" in vars(module):  # set by @use_experts_implementation's __init__
        return True
    return list(inspect.signature(module.forward).parameters)[:3] == FUSED_EXPERTS_PARAMETERS


class LinearExperts(nn.ModuleList):
    """A fused experts module unpacked into one ``ExpertMLP`` per expert, called like the original:
    ``experts(hidden_states[T, H], top_k_index[T, k], top_k_weights[T, k]) -> [T, H]``.

    Layout flags come from ``@use_experts_implementation`` (``is_transposed``, ``is_concatenated``,
    ``has_bias``, ``has_gate``, ``has_post_expert_norm``); without them the transformers defaults apply. A wrapper for an undecorated
    module passes its ``layout`` (the same flag names) and, where the class has no ``_apply_gate``, the gate
    function ``gate_fn(fused, gate_up)``.
    """

    def __init__(
        self,
        fused: nn.Module,
        calibrate_all_experts: bool = True,
        layout: Mapping[str, bool] | None = None,
        gate_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    ):
        experts: list[nn.Module] = unpack_fused_experts(fused, layout, gate_fn)
        # Rows of gate_up_proj past down_proj's experts are identity ("zero") experts (LongCat-Flash): routed
        # like the others, they pass their tokens through, scaled by the routing weight.
        experts += [nn.Identity() for _ in range(_first_weight(fused, layout).shape[0] - fused.down_proj.shape[0])]
        nn.ModuleList.__init__(self, experts)  # not super(): below a wrapping subclass that is the experts class's
        self.calibrate_all_experts = calibrate_all_experts
        # The config whose `_experts_implementation` picks the decorated original's forward (read per call, as
        # the decorator does); undecorated modules always run their own, eager, arithmetic.
        self._dispatch_config = fused.config if "is_transposed" in vars(fused) else None

    @property
    def num_experts(self) -> int:
        return len(self)

    def forward(self, hidden_states, top_k_index, top_k_weights):
        return self.dispatch(self, hidden_states, top_k_index, top_k_weights)

    def dispatch(self, experts, hidden_states, top_k_index, top_k_weights):
        # The arithmetic of the forward the original would run: eager casts each weighted contribution to the
        # hidden dtype and index_adds there; batched_mm/grouped_mm (a whole v5 model's default) sum in float32
        # and cast once. Both are the same in float32; in bfloat16 they differ by rounding that deep models
        # amplify, so a wrapper matching only eager would not match the model's own default output.
        implementation = getattr(self._dispatch_config, "_experts_implementation", None)
        if implementation in (None, "eager"):
            return dispatch_to_experts(experts, hidden_states, top_k_index, top_k_weights, self.calibrate_all_experts)
        out = dispatch_to_experts(
            experts, hidden_states, top_k_index, top_k_weights, self.calibrate_all_experts, accumulate_dtype=torch.float32
        )
        return out.to(hidden_states.dtype)


def _first_weight(fused: nn.Module, layout: Mapping[str, bool] | None) -> torch.Tensor:
    has_gate = (layout or {}).get("has_gate", getattr(fused, "has_gate", True))
    return fused.gate_up_proj if has_gate else fused.up_proj


def unpack_fused_experts(
    fused: nn.Module,
    layout: Mapping[str, bool] | None = None,
    gate_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
) -> list[ExpertMLP]:
    """One ``ExpertMLP`` per expert whose Linear weights are bit-exact views of ``fused``'s 3-D parameters.

    ``layout`` gives the ``@use_experts_implementation`` flags of a module that does not carry them;
    ``gate_fn(fused, gate_up)`` the gate of a class without ``_apply_gate``."""
    layout = dict(layout or {})

    def flag(name: str, default: bool) -> bool:
        return layout[name] if name in layout else getattr(fused, name, default)

    transposed = flag("is_transposed", False)
    concatenated = flag("is_concatenated", True)
    has_gate = flag("has_gate", True)
    has_bias = flag("has_bias", False)
    post_expert_norm = fused.post_expert_norm if flag("has_post_expert_norm", False) else None

    def as_linear_weight(w: torch.Tensor) -> torch.Tensor:
        # nn.Linear keeps [out, in]; transposed fused layouts store [in, out].
        return w.t() if transposed else w

    first = _first_weight(fused, layout).detach()
    down = fused.down_proj.detach()
    first_bias = getattr(fused, "gate_up_proj_bias" if has_gate else "up_proj_bias", None) if has_bias else None
    down_bias = getattr(fused, "down_proj_bias", None) if has_bias else None
    act_fn = getattr(fused, "act_fn", None)
    apply_gate = None
    if has_gate:
        if gate_fn is None and hasattr(type(fused), "_apply_gate"):
            gate_fn = type(fused)._apply_gate
        standard_gate = gate_fn is None or gate_fn is _transformers_default_gate()

        def apply_gate(gate_up: torch.Tensor, _gate_fn=gate_fn, _fused=fused) -> torch.Tensor:
            if _gate_fn is not None:
                return _gate_fn(_fused, gate_up)
            gate, up = gate_up.chunk(2, dim=-1)
            return _fused.act_fn(gate) * up

        if standard_gate and concatenated:
            apply_gate = None  # ExpertMLP's own act_fn(gate) * up

    experts = []
    for e in range(down.shape[0]):
        w_first = as_linear_weight(first[e])  # [2I, H] (gated) or [I, H]
        b_first = first_bias[e].detach() if first_bias is not None else None
        if has_gate:
            inter = w_first.shape[0] // 2
            if concatenated:
                rows = (slice(0, inter), slice(inter, 2 * inter))
            else:
                rows = (slice(0, None, 2), slice(1, None, 2))
            gate_proj = linear_view(w_first[rows[0]], b_first[rows[0]] if b_first is not None else None)
            up_proj = linear_view(w_first[rows[1]], b_first[rows[1]] if b_first is not None else None)
        else:
            gate_proj, up_proj = None, linear_view(w_first, b_first)
        down_proj = linear_view(as_linear_weight(down[e]), down_bias[e].detach() if down_bias is not None else None)
        experts.append(
            ExpertMLP(
                gate_proj, up_proj, down_proj, apply_gate, act_fn, interleaved=has_gate and not concatenated,
                post_expert_norm=post_expert_norm,
            )
        )
    return experts


def _transformers_default_gate() -> Callable | None:
    """``@use_experts_implementation``'s default ``_apply_gate`` (``act_fn(gate) * up`` on the halves of the
    concatenated projection); None where this transformers has none."""
    try:
        from transformers.integrations.moe import _default_apply_gate
    except ImportError:
        return None
    return _default_apply_gate
