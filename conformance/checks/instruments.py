"""Instruments: forward hooks that observe a block or model without changing what it computes.

- ``recording_routing`` / ``observe_original``: which tokens the *original* block routed to which expert;
- ``find_experts`` / ``record_linear_inputs``: the per-expert Linears of a wrapper or converted block (the
  implementation's enumeration, or numbered children) and the rows each receives;
- ``recording_calls`` / ``feeding_recorded_inputs``: a whole model's MoE blocks' inputs and outputs, call by call,
  and replaying the original's inputs into the same calls.

Hooks only read (or, for ``feeding_recorded_inputs``, substitute recorded inputs); every handle is removed on exit.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..cases.arch import ArchCase
from ..vocabulary import HarnessError, fail
from .oracle import parallel_experts
from .verdicts import run_original

__all__ = [
    "Expert",
    "Routing",
    "find_experts",
    "feeding_recorded_inputs",
    "observe_original",
    "record_linear_inputs",
    "recording_calls",
    "recording_routing",
    "row_indices",
    "scaled_row_indices",
]


@dataclass
class Routing:
    """What the original block did: the token rows its experts consume, and which tokens went to which expert."""

    tokens: torch.Tensor  # [T, H] expert-input rows
    routed: list[list[int]]  # per expert, the token indices routed to it (sorted)
    # [E, T, H] when each expert receives its own pre-scaled copy of the tokens (``dense_expert_inputs``):
    # the row expert e received for token t (zero where t is not routed to e).
    expert_rows: torch.Tensor | None = None


def row_indices(rows: torch.Tensor, tokens: torch.Tensor) -> list[int | None]:
    """For each row, the index of the token it is an exact copy of (None if none)."""
    if rows.numel() == 0:
        return []
    equal = (rows[:, None, :] == tokens[None, :, :]).all(dim=-1)
    found = equal.any(dim=1)
    first = equal.float().argmax(dim=1)
    return [int(i) if ok else None for i, ok in zip(first.tolist(), found.tolist())]


def scaled_row_indices(rows: torch.Tensor, routing: Routing, e: int) -> list[int | None]:
    """For each row an expert received, the token it stands for when tokens reach experts pre-scaled by their
    routing score (``Routing.expert_rows``): a token routed to expert ``e`` must arrive exactly as the original
    fed it; a token not routed there (all-experts mode) as a nonzero multiple of the token, the scale being the
    wrapper's choice."""
    if rows.numel() == 0:
        return []
    routed = torch.zeros(routing.tokens.shape[0], dtype=torch.bool, device=rows.device)
    routed[routing.routed[e]] = True
    exact = (rows[:, None, :] == routing.expert_rows[e][None, :, :]).all(dim=-1) & routed
    r, x = rows.double(), routing.tokens.double()
    scale = (r @ x.T) / (x * x).sum(dim=-1).clamp_min(1e-300)  # [R, T] least-squares multiple of each token
    residual = (r[:, None, :] - scale[..., None] * x[None]).abs().amax(dim=-1)
    tolerance = 4 * torch.finfo(rows.dtype).eps * r.abs().amax(dim=-1, keepdim=True)
    multiple = (residual <= tolerance) & (scale != 0) & ~routed
    match = exact | multiple
    first = match.float().argmax(dim=1)
    return [int(i) if ok else None for i, ok in zip(first.tolist(), match.any(dim=1).tolist())]


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor:
    return next(a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor))


def _hook_experts(case: ArchCase, block: nn.Module, captured: dict[str, Any]) -> list | None:
    """Hooks on the original's experts, by how its experts are called; None where none of the ways fits."""
    experts = getattr(block, "experts", None)
    parallel = parallel_experts(case, block)
    if parallel is not None:
        captured["rows"] = {i: [] for i in range(case.experts)}

        def grab_sorted(module, hook_args):  # (rows sorted by expert, rows per expert)
            for i, rows in enumerate(hook_args[0].detach().split(list(hook_args[1]), dim=0)):
                captured["rows"][i].append(rows)

        return [parallel["gate_up"].register_forward_pre_hook(grab_sorted)]
    if case.dense_expert_inputs:
        def grab_dense(module, hook_args, hook_kwargs):
            rows = _first_tensor(hook_args, hook_kwargs)
            captured["dense"] = rows.detach().reshape(case.experts, -1, rows.shape[-1])

        return [experts.register_forward_pre_hook(grab_dense, with_kwargs=True)]
    if isinstance(experts, (nn.ModuleList, nn.ModuleDict)):
        members = list(experts.values() if isinstance(experts, nn.ModuleDict) else experts)
        captured["rows"] = {i: [] for i in range(len(members))}

        def grab_member(i):
            def grab(module, hook_args):
                captured["rows"][i].append(hook_args[0].detach().reshape(-1, hook_args[0].shape[-1]))

            return grab

        hooks = [m.register_forward_pre_hook(grab_member(i)) for i, m in enumerate(members)]
        if type(experts).forward is not nn.Module.forward:
            # a container with a forward of its own (5.x NLLB-MoE's, called with (tokens, index, weights)): where
            # it passes an index with weights shaped like it, the routing is read from them, weight-0 slots
            # dropped, rather than from the rows its members received (see routing())
            hooks.append(experts.register_forward_pre_hook(_grab_indexed(experts, captured, "container_"), with_kwargs=True))
        return hooks
    if isinstance(experts, nn.Module):
        # One module for all experts (fused 3-D, DBRX's stacked 2-D), called with the tokens and the top-k index.
        return [experts.register_forward_pre_hook(_grab_indexed(experts, captured), with_kwargs=True)]
    return None


def _grab_indexed(experts: nn.Module, captured: dict[str, Any], prefix: str = ""):
    """A pre-hook recording an experts call's tokens, top-k index and routing weights under ``prefix``."""
    signature = inspect.signature(experts.forward)

    def grab(module, hook_args, hook_kwargs):
        # Positional or keyword (4.57 gpt-oss passes router_indices=...): the first tensor is the hidden
        # states, the first integer tensor after it the top-k expert index, the first floating tensor after
        # that shaped like the index its routing weights.
        bound = signature.bind(*hook_args, **hook_kwargs).arguments.values()
        tensors = [a for a in bound if isinstance(a, torch.Tensor)]
        index = next((a.detach() for a in tensors[1:] if not a.is_floating_point()), None)
        weights = [a for a in tensors[1:] if a.is_floating_point() and index is not None and a.shape == index.shape]
        captured[f"{prefix}tokens"] = tensors[0].detach().reshape(-1, tensors[0].shape[-1])
        captured[f"{prefix}index"] = index
        captured[f"{prefix}weights"] = weights[0].detach() if weights else None

    return grab


@contextlib.contextmanager
def recording_routing(case: ArchCase, block: nn.Module, label: str) -> Iterator[Callable[[], Routing]]:
    """While open, hooks on the original block and its experts record what one call of the block routed where;
    the yielded function returns that call's ``Routing`` once the block has run. The hooks only read; a block
    they cannot observe is a harness fault (``HarnessError``)."""
    captured: dict[str, Any] = {}

    def grab_block_input(module, hook_args, hook_kwargs):
        hidden = _first_tensor(hook_args, hook_kwargs)
        captured.setdefault("block_input", hidden.detach().reshape(-1, hidden.shape[-1]))

    expert_hooks = _hook_experts(case, block, captured)
    if expert_hooks is None:
        experts = type(getattr(block, "experts", None)).__name__
        raise HarnessError(f"{label}: cannot observe the original {case.block}: its experts are {experts}")
    handles = [block.register_forward_pre_hook(grab_block_input, with_kwargs=True), *expert_hooks]

    def routing() -> Routing:
        if "dense" in captured:
            tokens, rows = captured["block_input"], captured["dense"]
            routed = [torch.nonzero((rows[e] != 0).any(dim=-1)).flatten().tolist() for e in range(case.experts)]
            return Routing(tokens, routed, rows)
        if captured.get("container_weights") is not None:  # a container's own forward, given weights
            captured.update({k: captured[f"container_{k}"] for k in ("tokens", "index", "weights")})
        if "tokens" in captured:
            tokens, index = captured["tokens"], captured["index"]
            if index is None:
                raise HarnessError(f"{label}: cannot observe the original {case.block}: its experts were called without a top-k index")
            # A route of weight exactly 0 is not routing: the expert's rows for it add nothing to the output, and a
            # quantizer calibrating the expert on them would skew its statistics with tokens it never serves. The
            # original may still compute them (LongCat-Flash 5.25 sends its zero-expert routes to real experts
            # as weight-0 dummy rows, to spread expert-parallel traffic; ZAYA's skip class goes to expert 0).
            if captured.get("weights") is not None:
                index = index.masked_fill(captured["weights"] == 0, -1)
            routed = [sorted(set(torch.nonzero((index == e).any(dim=-1)).flatten().tolist())) for e in range(case.experts)]
            return Routing(tokens, routed)
        if "rows" not in captured or "block_input" not in captured:
            raise HarnessError(f"{label}: the original {case.block} never called its experts")
        tokens = captured["block_input"]
        routed = []
        for i in range(case.experts):
            rows = torch.cat(captured["rows"][i]) if captured["rows"][i] else tokens[:0]
            routed.append(sorted(t for t in row_indices(rows, tokens) if t is not None))
        return Routing(tokens, routed)

    try:
        yield routing
    finally:
        for h in handles:
            h.remove()


def observe_original(case: ArchCase, block: nn.Module, args: tuple, kwargs: dict, label: str) -> tuple[Any, Routing]:
    """Run the original block once; return its output and its routing, observed through hooks."""
    with recording_routing(case, block, label) as routing:
        out = run_original(block, args, kwargs, label, f"the original {case.block}")
    return out, routing()


@dataclass
class Expert:
    """One expert of a calibrating module, as the harness sees it: its Linears by projection name, and every
    parameter under it (those of a norm all experts share too)."""

    linears: dict[str, nn.Module]  # nn.Linear, or (experts level fused_observed) the implementation's observation modules
    parameters: dict[str, torch.Tensor]

    @classmethod
    def of(cls, member: nn.Module | Mapping[str, nn.Module], fused_observed: bool = False) -> Expert:
        if isinstance(member, Mapping):  # the implementation's own enumeration: projection name -> Linear
            # Experts kept fused by design have no nn.Linear: the module named for a projection is where its rows
            # are observed (called with them); an implementation that promises Linears gets only its Linears counted.
            kept = nn.Module if fused_observed else nn.Linear
            linears = {name: m for name, m in member.items() if isinstance(m, kept)}
            parameters = {f"{name}.{p}": t for name, m in member.items() for p, t in m.named_parameters()}
            return cls(linears, parameters)
        linears = {name: m for name, m in member.named_modules() if isinstance(m, nn.Linear)}
        return cls(linears, dict(member.named_parameters()))


_NUMBERED = re.compile(r"(?:^|_)(\d+)$")  # experts.0, experts.expert_0


def _numbered_members(container: nn.Module) -> list[nn.Module]:
    """The children of ``container`` named by a number, in that order, that hold an nn.Linear (an identity
    "zero expert" holds none)."""
    numbered = [(int(m[1]), child) for name, child in container.named_children() if (m := _NUMBERED.search(name))]
    return [child for _, child in sorted(numbered, key=lambda item: item[0]) if _holds_linear(child)]


def _holds_linear(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Linear) for m in module.modules())


def find_experts(module: nn.Module, case: ArchCase, impl: Any, label: str) -> list[Expert]:
    """The per-expert Linears of a calibrating ``module`` (a wrapper, or a converted block), in expert order:
    the implementation's own ``expert_linears(module)`` where it has one; else the numbered children of
    ``module.experts`` (``experts.0``, ``experts.expert_0``); else the first module below ``module`` with one
    numbered child holding nn.Linear per expert. Fails unless there are ``case.experts`` of them."""
    own = impl.expert_linears(module) if impl is not None else None
    if own is not None:
        members = list(own)
        where = f"{getattr(impl, 'name', 'the implementation')}'s expert_linears"
    else:
        members, where = _members_under(module, case, label)
    if len(members) != case.experts:
        raise fail(label, f"{where} exposes {len(members)} experts with nn.Linear, expected {case.experts}")
    fused_observed = getattr(getattr(impl, "levels", None), "experts", "linear") == "fused_observed"
    experts = [Expert.of(member, fused_observed and own is not None) for member in members]
    empty = [e for e, expert in enumerate(experts) if not expert.linears]
    if empty:  # nothing to observe would pass every observation check vacuously
        kind = "observation module" if fused_observed else "nn.Linear"
        raise fail(label, f"{where}: expert {empty[0]} has no {kind} ({len(empty)} of {len(experts)} experts)")
    return experts


def _members_under(module: nn.Module, case: ArchCase, label: str) -> tuple[list[nn.Module], str]:
    name = type(module).__name__
    experts = getattr(module, "experts", None)
    if isinstance(experts, nn.Module):
        members = _numbered_members(experts)
        if not members and hasattr(experts, "__getitem__") and hasattr(experts, "__len__"):
            try:  # an indexable container whose children are not named by number
                members = [m for m in (experts[i] for i in range(len(experts))) if _holds_linear(m)]
            except (TypeError, KeyError, IndexError):
                members = []
        if members:
            return members, f"{name}.experts"
    for path, candidate in module.named_modules():
        members = _numbered_members(candidate) if candidate is not experts else []
        if len(members) == case.experts:
            return members, f"{name}.{path}" if path else name
    if isinstance(experts, nn.Module):
        raise fail(
            label, f"{name}.experts is a {type(experts).__name__}, not per-expert modules (fused experts must be "
            "unpacked into one module of nn.Linear per expert)"
        )
    raise fail(label, f"{name} has no per-expert modules holding nn.Linear (numbered children such as experts.0, one per expert)")


@contextlib.contextmanager
def record_linear_inputs(experts: Sequence[Expert]) -> Iterator[list[dict[str, list[torch.Tensor]]]]:
    """Per expert, per Linear name: the input rows each call received."""
    seen: list[dict[str, list[torch.Tensor]]] = [{} for _ in experts]
    handles = []
    for i, expert in enumerate(experts):
        for name, module in expert.linears.items():
            seen[i][name] = []

            def grab(mod, hook_args, _calls=seen[i][name]):
                _calls.append(hook_args[0].detach().reshape(-1, hook_args[0].shape[-1]))

            handles.append(module.register_forward_pre_hook(grab))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def recording_calls(modules: dict[str, nn.Module], recorded: dict[str, list[tuple]], outputs: dict[str, list[Any]]) -> Iterator[None]:
    """While open, keep the inputs and output of every call of each named module, in call order: a block can be
    called more than once per model call (a looped layer runs once per pass), each time on another input."""
    handles = []

    # Hooks that return something replace the call's inputs or output: these return None. Tensors are cloned: a
    # later layer may change in place what it was given (the residual stream), and the recording must not move.
    def grab_inputs(name: str, args: tuple, kwargs: dict) -> None:
        recorded.setdefault(name, []).append((_cloned(args), _cloned(kwargs)))

    def grab_output(name: str, out: Any) -> None:
        outputs.setdefault(name, []).append(_cloned(out))

    for name, module in modules.items():
        handles.append(module.register_forward_pre_hook(lambda m, a, k, _n=name: grab_inputs(_n, a, k), with_kwargs=True))
        handles.append(module.register_forward_hook(lambda m, a, out, _n=name: grab_output(_n, out)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _cloned(value: Any) -> Any:
    """``value`` with every tensor in it (in tuples, lists and plain dicts) cloned, the containers' types kept."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*map(_cloned, value))
    if isinstance(value, (tuple, list)):
        return type(value)(map(_cloned, value))
    if type(value) is dict:
        return {k: _cloned(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def feeding_recorded_inputs(
    model: nn.Module, names: set[str], recorded: dict[str, list[tuple]], outputs: dict[str, list[Any]]
) -> Iterator[None]:
    """While open, the i-th call of the module at each of ``names`` receives the tensors the original model gave
    its i-th call in place of its own (other arguments, such as a cache this very call fills, stay the current
    ones), and every call's output is kept in ``outputs``, in call order. A call beyond those recorded runs on
    its own input (the check then sees the call counts differ)."""
    modules = dict(model.named_modules())
    handles = []
    calls = dict.fromkeys(names, 0)

    def feed(name: str, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        i, calls[name] = calls[name], calls[name] + 1
        if i >= len(recorded.get(name, ())):
            return None
        old_args, old_kwargs = recorded[name][i]
        # fresh copies each time: a block that changes its input in place must not change the recording
        args = tuple(_cloned(o) if isinstance(o, torch.Tensor) else a for a, o in zip(args, old_args))
        kwargs = {k: _cloned(old_kwargs[k]) if isinstance(old_kwargs.get(k), torch.Tensor) else v for k, v in kwargs.items()}
        return args, kwargs

    for name in names:
        handles.append(modules[name].register_forward_pre_hook(lambda m, a, k, _n=name: feed(_n, a, k), with_kwargs=True))
        handles.append(modules[name].register_forward_hook(lambda m, a, out, _n=name: outputs.setdefault(_n, []).append(_cloned(out))))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
