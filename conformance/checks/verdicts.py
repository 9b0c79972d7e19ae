"""Verdicts: who is to blame when something goes wrong, and the output comparison with its tolerance.

A check ends in one of three exceptions, or returns (the implementation conforms):

- ``ConformanceFailure``: the implementation under test broke the contract (FAIL);
- ``HarnessError``: the original block, the fixture or the harness itself failed, so nothing was learnt about the
  implementation (ERROR);
- ``NotApplicable``: the check does not apply to this architecture here (n/a).

The exceptions are the vocabulary's (``vocabulary.py``). The helpers here run modules and contexts on the right
side of that line: ``run_original`` blames the harness; ``run_implementation``, ``calibrating_block`` and
``calibrating_model`` the implementation. ``compare_outputs`` holds an output to the device table's tolerance
(``cases/devices.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ..cases.devices import dtype_name, tolerance
from ..implementations.protocol import ConstructionError, Implementation
from ..vocabulary import ConformanceFailure, HarnessError, NotApplicable, fail, raised

__all__ = [
    "calibrating_block",
    "calibrating_model",
    "compare_outputs",
    "compare_tensors",
    "measuring_errors",
    "relative_error",
    "run_implementation",
    "run_original",
]


def run_original(module: nn.Module, args: tuple, kwargs: dict, label: str, what: str) -> Any:
    """Run a module the harness built and nothing has touched yet: if it raises, the fixture or the installed
    transformers is at fault, not the implementation."""
    try:
        with torch.no_grad():
            return module(*args, **kwargs)
    except Exception as exc:
        raise HarnessError(f"{label}: {what} {raised(exc)}") from exc


def run_implementation(module: nn.Module, args: tuple, kwargs: dict, label: str, what: str) -> Any:
    """Run the implementation's module (or a model it has changed): if it raises, that is its failure."""
    try:
        with torch.no_grad():
            return module(*args, **kwargs)
    except Exception as exc:
        raise fail(label, f"{what} {raised(exc)}") from exc


@contextlib.contextmanager
def calibrating_block(impl: Implementation, run: Any, calibrate_all: bool, label: str) -> Iterator[nn.Module]:
    """``impl.calibrating_block`` for a ``BlockRun``: the module that calibrates in place of ``run.block``. A
    missing wrapper, a constructor or conversion that raises, or a context that fails on leaving is the
    implementation's failure; what the body raises passes unchanged."""
    manager = impl.calibrating_block(run.block, run.config, calibrate_all, run.model_config)
    with _entered(manager, label, "building the wrapper (or converting the block)") as module:
        yield module


@contextlib.contextmanager
def calibrating_model(impl: Implementation, model: nn.Module, calibrate_all: bool, label: str) -> Iterator[nn.Module]:
    """``impl.calibrating_model``: the model to run while calibrating, blamed as ``calibrating_block``."""
    with _entered(impl.calibrating_model(model, calibrate_all), label, "the calibration context") as active:
        yield active


@contextlib.contextmanager
def _entered(manager: Any, label: str, what: str) -> Iterator[Any]:
    """Enter and leave the implementation's context manager, each side's exceptions blamed on it; the body's
    exception is handed to it (it may restore, and must not swallow or replace it: the caller judges that)."""
    try:
        value = manager.__enter__()
    except (ConformanceFailure, HarnessError, NotApplicable):
        raise
    except (LookupError, ConstructionError) as exc:
        # The constructor's own exception stays the cause, so a short report can show the frame that raised.
        raise fail(label, str(exc)) from exc.__cause__
    except Exception as exc:
        raise fail(label, f"{what} {raised(exc)}") from exc
    try:
        yield value
    except BaseException as body:
        try:
            swallowed = manager.__exit__(type(body), body, body.__traceback__)
        except BaseException as exc:
            if exc is body or isinstance(exc, (ConformanceFailure, HarnessError, NotApplicable)):
                raise
            raise fail(label, f"{what} {raised(exc, ' on leaving')}") from exc
        if not swallowed:
            raise
        return
    try:
        manager.__exit__(None, None, None)
    except Exception as exc:
        raise fail(label, f"{what} {raised(exc, ' on leaving')}") from exc



def compare_outputs(got: Any, want: Any, label: str, path: str = "output", tolerance_dtype: torch.dtype | None = None) -> None:
    """Same structure (tensor / tuple / list), dtype and shape; values within the device's tolerance of the reference's
    own scale. Raises ``ConformanceFailure`` naming the element and the worst value. ``tolerance_dtype`` is the
    precision the computation ran in, where it differs from the output's (a bfloat16 model whose logits come
    out in float32)."""
    if isinstance(want, torch.Tensor):
        compare_tensors(got, want, label, path, tolerance_dtype)
        return
    if isinstance(want, (tuple, list)):
        if type(got) is not type(want) and not (isinstance(got, tuple) and isinstance(want, tuple)):
            raise fail(label, f"{path}: expected a {type(want).__name__} of {len(want)}, got {type(got).__name__}")
        if len(got) != len(want):
            raise fail(label, f"{path}: expected {len(want)} elements, got {len(got)}")
        for i, (g, w) in enumerate(zip(got, want)):
            compare_outputs(g, w, label, f"{path}[{i}]", tolerance_dtype)
        return
    if got != want:
        raise fail(label, f"{path}: {got!r}, expected {want!r}")


def compare_tensors(got: Any, want: torch.Tensor, label: str, path: str, tolerance_dtype: torch.dtype | None) -> None:
    if not isinstance(got, torch.Tensor):
        raise fail(label, f"{path}: expected a tensor, got {type(got).__name__}")
    if got.shape != want.shape:
        raise fail(label, f"{path}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    if got.dtype != want.dtype:
        raise fail(label, f"{path}: dtype {dtype_name(got.dtype)}, expected {dtype_name(want.dtype)}")
    if not want.is_floating_point():
        if not torch.equal(got, want):
            raise fail(label, f"{path}: integer values differ")
        return
    finite = torch.isfinite(want)
    if not torch.equal(torch.isfinite(got), finite):
        raise fail(label, f"{path}: non-finite values where the original has finite ones (or the reverse)")
    relative, worst, g, w = relative_error(got, want)
    if w is None:
        return
    for record in _measuring:
        record(label, path, tolerance_dtype or want.dtype, relative)
    limit = tolerance(want.device.type, tolerance_dtype or want.dtype)
    if not _measuring and not relative <= limit:
        flat = int(torch.nonzero(finite.cpu().flatten())[worst])
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), want.shape))
        raise fail(
            label,
            f"{path}: max error {relative:.3g} of the output's scale {w.abs().max().item() or 1.0:.3g} exceeds {limit:g} "
            f"(at {index}: got {g[worst].item():.6g}, expected {w[worst].item():.6g})",
        )


# The recorders of an open ``measuring_errors``.
_measuring: list[Callable[[str, str, torch.dtype, float], None]] = []


@contextlib.contextmanager
def measuring_errors(record: Callable[[str, str, torch.dtype, float], None]) -> Iterator[None]:
    """While open, every floating tensor comparison calls ``record(label, path, dtype, relative error)`` and no
    tolerance is enforced: how ``benchmarks/measure_rounding.py`` measures the rounding a device's tolerances
    must allow."""
    _measuring.append(record)
    try:
        yield
    finally:
        _measuring.remove(record)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> tuple[float, int, torch.Tensor, torch.Tensor | None]:
    """``max |got - want| / max |want|`` over the elements where ``want`` is finite, the flat position (among
    those) of the worst one, and both as float64 on the CPU (``None`` for ``want`` where nothing is finite)."""
    # On the CPU: the error's position and values are reported, and double precision is not on every device.
    finite = torch.isfinite(want).cpu()
    g, w = got.detach().cpu().double()[finite], want.detach().cpu().double()[finite]
    if w.numel() == 0:
        return 0.0, 0, g, None
    scale = w.abs().max().item() or 1.0
    err = (g - w).abs()
    worst = int(err.argmax())
    return err[worst].item() / scale, worst, g, w
