"""Short failure reports: a conformance test that fails prints its verdict — what, where (the setting's id, shape,
expert, value) — and, where the implementation (or the original block) raised, the frames that raised; not the
harness' own traceback, which says nothing about the implementation. ``--tb=long`` (or ``native``,
``--full-trace``) still prints everything."""

from __future__ import annotations

import traceback
from pathlib import Path


__all__ = ["FULL_TRACEBACK_STYLES", "raising_frames", "short_report"]

FULL_TRACEBACK_STYLES = ("long", "native")
MAX_FRAMES = 3
MAX_NOTE_LINES = 4

_HARNESS = Path(__file__).resolve().parents[1]  # the package folder
# Frames that only carry a call through: torch's module call machinery, context managers, pytest, pluggy.
_PLUMBING = ("torch/nn/modules/module.py", "contextlib.py", "/_pytest/", "/pluggy/")


def _is_plumbing(filename: str) -> bool:
    path = Path(filename).resolve()
    return _HARNESS in path.parents or any(part in filename for part in _PLUMBING)


def _root_cause(exc: BaseException) -> BaseException | None:
    """The exception the verdict was raised from (following ``raise ... from``), or None."""
    cause = exc.__cause__
    while cause is not None and cause.__cause__ is not None:
        cause = cause.__cause__
    return cause


def raising_frames(exc: BaseException, limit: int = MAX_FRAMES) -> list[str]:
    """The innermost ``limit`` frames of the exception behind the verdict that are neither the harness' nor
    plumbing, one line each: ``path:line in function: source``."""
    cause = _root_cause(exc)
    if cause is None:
        return []
    frames = [f for f in traceback.extract_tb(cause.__traceback__) if not _is_plumbing(f.filename)]
    return [f"  {_short_path(f.filename)}:{f.lineno} in {f.name}: {(f.line or '').strip()}" for f in frames[-limit:]]


def _short_path(filename: str) -> str:
    path = Path(filename)
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        parts = path.parts  # site-packages/<package>/...: the package path is what a reader recognises
        return str(Path(*parts[parts.index("site-packages") + 1 :])) if "site-packages" in parts else filename


def short_report(kind: str, message: str, exc: BaseException) -> str:
    """The report of one failed (``kind`` "failed") or harness-error ("error") conformance test."""
    if kind == "error":
        lines = [f"ERROR (harness, fixture or original block; not the implementation): {message}"]
    else:  # FAIL, or a fault whose message starts with its own label (DEVICE)
        lines = [message if kind != "failed" else f"FAIL: {message}"]
    notes = [line for note in getattr(exc, "__notes__", ()) for line in str(note).splitlines()]
    if notes:  # hypothesis: the falsifying example
        lines += notes[:MAX_NOTE_LINES] + (["  ..."] if len(notes) > MAX_NOTE_LINES else [])
    frames = raising_frames(exc)
    if frames:
        cause = _root_cause(exc)
        lines.append(f"raised {type(cause).__name__} at:")
        lines += frames
    lines.append("(--tb=long: the full traceback)")
    return "\n".join(lines)
