"""The architecture x check table at the end of a run (and in the Markdown reports): one row per architecture,
one column per check, each cell an aggregate of its tests' outcome kinds in the words of ``vocabulary.py``."""

from __future__ import annotations

from collections import defaultdict

from .. import vocabulary

__all__ = ["summarise", "uncovered_lines"]


def uncovered_lines(results: list[dict], covered_only: bool) -> list[str]:
    """One line per architecture whose block the implementation does not cover: green under ``--covered-only``,
    but never silent."""
    by_arch: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        if r.get("uncovered"):
            by_arch[r["arch"]].append(r)
    lines = []
    for arch, records in sorted(by_arch.items()):
        reason = next((r for r in records if r["outcome"] == "skipped"), records[0])["message"]
        if any(r["outcome"] == "failed" for r in records):
            how = "its covered test fails, its other checks are skipped"
        else:
            how = "skipped (--covered-only)" if covered_only else "skipped"
        lines.append(f"{reason}; {how}")
    return lines


def _cell(outcomes: list[str]) -> str:
    """One architecture x check cell over its tests' outcome kinds (``conformance.outcomes``), and
    'uncovered' for the skips of a block the implementation does not cover."""
    if not outcomes:
        return ""
    red = vocabulary.red_cell(outcomes)
    if red:
        return red
    if "uncovered" in outcomes:
        return "uncovered"
    if vocabulary.NOT_JUDGED in outcomes:
        return vocabulary.NOT_JUDGED
    if all(o == "n/a" for o in outcomes):
        return "n/a"
    if all(o in ("n/a", "not offered") for o in outcomes):
        return "not offered"
    if all(o in ("skipped", "n/a", "not offered") for o in outcomes):
        return "skip"
    if "xfail" in outcomes:
        return "xfail"
    return "ok"


def summarise(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The architecture x check table: a cell is 'ok', 'FAIL f/n' (the implementation broke the contract in f of
    its n tests), 'ERROR e/n' (the harness, the fixture or the original block failed), 'skip' (absent from this
    transformers), 'uncovered' (the implementation has no wrapper for the block), 'n/a' (the check does not
    apply), 'not offered' (the implementation's declared contract levels do not promise what the check judges)
    or 'xfail' over its tests."""
    from ..checks.table import CHECKS

    cells: dict[tuple[str, str], list[str]] = defaultdict(list)
    archs: list[str] = []
    for r in results:
        if r["arch"] not in archs:
            archs.append(r["arch"])
        skipped = r["outcome"] == "skipped"
        kind = "uncovered" if skipped and r.get("uncovered") else vocabulary.NOT_JUDGED if skipped and r.get("not_judged") else r["outcome"]
        cells[(r["arch"], r["check"])].append(kind)
    extra = [c for c in dict.fromkeys(r["check"] for r in results) if c not in CHECKS]
    checks = [c for c in [*CHECKS, *extra] if any((a, c) in cells for a in archs)]
    rows = [[arch, *(_cell(cells.get((arch, check), [])) for check in checks)] for arch in sorted(archs)]
    return ["architecture", *(CHECKS[c].short if c in CHECKS else c for c in checks)], rows
