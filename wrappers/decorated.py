"""transformers' decorated experts dispatch, found and replaced where it is, whatever a subclass wraps around it.

``@use_experts_implementation(has_gate=..., is_transposed=..., ...)`` decorates an experts class: its flags say
how the 3-D weights are stored, and its ``forward`` becomes the dispatch where transformers plugs in its kernels
(eager, batched_mm, grouped_mm). A subclass may wrap that dispatch: Ergo's ``ErgoExperts.forward`` gives each
route its own row, calls ``super().forward`` (the decorated dispatch) with unit weights, then applies a
per-expert RMSNorm and only then the routing weights. Replacing the whole experts module would drop that norm
silently; so for such a class the wrapper's experts are an instance of a class made from the original's, with
the per-expert Linears' dispatch (``LinearExperts``) put in its MRO right above the decorated class: the
subclass's forward runs unchanged, and its ``super().forward`` reaches the Linears. A class that wraps nothing
(the decorated class itself) gets plain ``LinearExperts``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from torch import nn

from .experts import LinearExperts

__all__ = ["decorated_class", "decorator_flags", "linear_experts"]

# nn.Module bookkeeping the new experts module owns fresh rather than shares with the original; the fused
# parameters are not adopted either: the Linears view them, and nothing but the replaced dispatch read them.
_OWN_STATE = {
    "_parameters", "_buffers", "_modules", "_non_persistent_buffers_set",
    "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks",
    "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks", "_is_full_backward_hook",
}


@lru_cache(maxsize=1)
def _decorated_code() -> tuple[Any, Any] | None:
    """The code objects of the ``__init__`` and ``forward`` that ``@use_experts_implementation`` installs (one
    pair, shared by every class it decorates); None where transformers has no such decorator (4.x)."""
    try:
        from transformers.integrations.moe import use_experts_implementation
    except ImportError:
        return None

    class _Probe(nn.Module):
        def forward(self, hidden_states, top_k_index, top_k_weights):
            return hidden_states

    try:
        probe = use_experts_implementation(_Probe)
    except Exception:  # a future decorator that refuses a bare class: no class counts as decorated
        return None
    return probe.__init__.__code__, probe.forward.__code__


def decorated_class(experts_cls: type) -> type | None:
    """The class in ``experts_cls``'s MRO that ``@use_experts_implementation`` decorated (its own ``forward`` is
    the decorated dispatch): ``experts_cls`` itself, a base it subclasses, or None."""
    codes = _decorated_code()
    if codes is None:
        return None
    for k in experts_cls.__mro__:
        if getattr(vars(k).get("forward"), "__code__", None) is codes[1]:
            return k
    return None


def decorator_flags(experts_cls: type) -> dict[str, bool] | None:
    """The decorator's layout flags (``has_gate``, ``is_transposed``, ``is_concatenated``, ``has_bias``,
    ``has_post_expert_norm``) as the decorated class declares them, read from its decorated ``__init__`` (which
    sets them on every instance): no instance, no config needed. None where the class is not decorated."""
    decorated = decorated_class(experts_cls)
    init = vars(decorated).get("__init__") if decorated is not None else None
    if init is None or init.__code__ is not _decorated_code()[0]:
        return None
    cells = dict(zip(init.__code__.co_freevars, (c.cell_contents for c in init.__closure__ or ())))
    return {k: v for k, v in cells.items() if k.startswith(("has_", "is_")) and isinstance(v, bool)}


def linear_experts(fused: nn.Module, calibrate_all_experts: bool = True) -> LinearExperts:
    """Per-expert Linears standing in for ``fused``'s decorated dispatch: ``LinearExperts`` where the decorated
    class is ``fused``'s own, else an instance of ``fused``'s class with the dispatch replaced below it."""
    decorated = decorated_class(type(fused))
    if decorated is None or decorated is type(fused):
        return LinearExperts(fused, calibrate_all_experts)
    return _around_dispatch(type(fused), decorated)(fused, calibrate_all_experts)


_made: dict[type, type] = {}


def _around_dispatch(experts_cls: type, decorated: type) -> type:
    # MRO: _KeepsBlockTokens, experts_cls ... (the wrapping subclasses), DispatchBelowWrapper, LinearExperts,
    # decorated, nn.ModuleList, nn.Module: the subclasses' super().forward reaches the Linears' dispatch.
    if experts_cls not in _made:
        bases = (_KeepsBlockTokens, experts_cls, DispatchBelowWrapper, decorated)
        _made[experts_cls] = type(f"Linear{experts_cls.__name__}", bases, {"__module__": __name__})
    return _made[experts_cls]


class _KeepsBlockTokens:
    """First in the made class's MRO: builds it as ``DispatchBelowWrapper`` (the experts class's own
    ``__init__`` would build fresh weights) and remembers the tokens the block passed to the wrapping
    forward, for the dispatch below it."""

    def __init__(self, fused: nn.Module, calibrate_all_experts: bool = True):
        DispatchBelowWrapper.__init__(self, fused, calibrate_all_experts)

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any):
        self.__dict__["_block_tokens"] = hidden_states.reshape(-1, hidden_states.shape[-1])
        try:
            return super().forward(hidden_states, *args, **kwargs)
        finally:
            self.__dict__["_block_tokens"] = None


class DispatchBelowWrapper(LinearExperts):
    """``LinearExperts`` as the decorated dispatch of an experts class that wraps it. The wrapping class's
    attributes and modules (Ergo's ``post_expert_norm``) are adopted, the same objects; its experts are the
    numbered children alone. The wrapping forward may call the dispatch on other rows than the block's tokens
    (Ergo's one row per route): all-experts mode still runs each expert once on the block's tokens, every row
    taking its token's output, so each Linear sees every token once; rows that are not the block's tokens
    (a subclass that transforms them) are run as they come."""

    def __init__(self, fused: nn.Module, calibrate_all_experts: bool = True):
        LinearExperts.__init__(self, fused, calibrate_all_experts)
        for name, value in vars(fused).items():
            if name not in _OWN_STATE and name not in vars(self) and not hasattr(type(self), name):
                self.__dict__[name] = value
        for name, module in fused._modules.items():
            self._modules.setdefault(name, module)
        self._buffers.update(fused._buffers)
        self.__dict__["_block_tokens"] = None

    def __len__(self) -> int:
        return sum(name.isdigit() for name in self._modules)

    def __iter__(self):
        return (m for name, m in self._modules.items() if name.isdigit())

    def forward(self, hidden_states, top_k_index, top_k_weights):
        tokens = self.__dict__.get("_block_tokens")
        token_of_row = _token_of_rows(hidden_states, tokens) if self.calibrate_all_experts and tokens is not None else None
        if token_of_row is None:
            return self.dispatch(list(self), hidden_states, top_k_index, top_k_weights)
        members = [_OnTokens(expert, tokens, token_of_row) for expert in self]
        return self.dispatch(members, hidden_states, top_k_index, top_k_weights)


class _OnTokens:
    """An expert run on the block's tokens, answering for rows that each repeat one of them."""

    def __init__(self, expert: nn.Module, tokens: torch.Tensor, token_of_row: torch.Tensor):
        self.expert, self.tokens, self.token_of_row = expert, tokens, token_of_row

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        return self.expert(self.tokens).index_select(0, self.token_of_row)


def _token_of_rows(rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor | None:
    """For each row, the index of a token bitwise equal to it; None unless every row is one of the tokens."""
    if rows.shape[-1] != tokens.shape[-1] or rows.dtype != tokens.dtype:
        return None
    with torch.no_grad():
        _, inverse = torch.unique(torch.cat([tokens, rows]), dim=0, return_inverse=True)
        count = tokens.shape[0]
        first = torch.full((int(inverse.max()) + 1,), count, dtype=torch.long, device=rows.device)
        first.scatter_reduce_(0, inverse[:count], torch.arange(count, device=rows.device), "amin")
        token_of_row = first.index_select(0, inverse[count:])
    return None if bool((token_of_row == count).any()) else token_of_row
