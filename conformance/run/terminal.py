"""What a run prints at its end (and the Markdown reports reuse): the architecture x check table, its legend, and
the failures with their roots. Every line fits ``WIDTH`` columns: a table wider than that is printed in blocks of
columns, each repeating the architecture.

A cell is the vocabulary's (``vocabulary.cell``). Where one behaviour breaks several checks of an architecture
(the output inside the context, say: restore, model, experts_implementation and routing_properties compare it
too), the checks that only follow (``CheckSpec.follows``) are marked ``(FAIL)`` and the failure list names the
root, so the reader sees one broken behaviour, not five.
"""

from __future__ import annotations

import textwrap
from collections import defaultdict

from .. import vocabulary

__all__ = ["WIDTH", "failure_lines", "legend", "render_table", "roots", "summarise", "uncovered_lines", "wrap"]

WIDTH = 100
FOLLOWS_MARK = "({})"  # a red cell that follows from a root failure of the same architecture


def wrap(line: str, width: int = WIDTH) -> list[str]:
    """A long line as lines of at most ``width``, continuation lines indented."""
    return textwrap.wrap(line, width, subsequent_indent="  ", break_on_hyphens=False, break_long_words=True) or [""]


def uncovered_lines(results: list[dict], covered_only: bool) -> list[str]:
    """One line per architecture whose block the implementation does not cover: green under ``--covered-only``,
    but never silent."""
    by_arch: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        if r.get("uncovered"):
            by_arch[r["arch"]].append(r)
    lines = []
    for arch, records in sorted(by_arch.items()):
        reason = next((r for r in records if r["outcome"] == vocabulary.SKIPPED), records[0])["message"]
        if any(r["outcome"] == vocabulary.FAILED for r in records):
            how = "its covered test fails, its other checks are skipped"
        else:
            how = "skipped (--covered-only)" if covered_only else "skipped"
        lines.append(f"{reason}; {how}")
    return lines


def _red_checks(results: list[dict]) -> dict[str, list[str]]:
    """Architecture -> the checks with a red outcome, in the check table's order."""
    from ..checks.table import CHECKS

    red: dict[str, set[str]] = defaultdict(set)
    for r in results:
        if vocabulary.is_red(r["outcome"]):
            red[r["arch"]].add(r["check"])
    order = list(CHECKS)
    return {arch: sorted(checks, key=lambda c: order.index(c) if c in order else len(order)) for arch, checks in red.items()}


def roots(results: list[dict]) -> dict[str, dict[str, list[str]]]:
    """Per architecture with red checks: each root check -> the red checks that follow from it (a check follows
    a root when the root is among what it ``follows``, directly or through another follower). A red check that
    follows no red check of its architecture is a root."""
    from ..checks.table import CHECKS

    def upstream(check: str) -> set[str]:
        seen, todo = set(), list(CHECKS[check].follows if check in CHECKS else ())
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += list(CHECKS[name].follows) if name in CHECKS else []
        return seen

    found = {}
    for arch, checks in _red_checks(results).items():
        red = set(checks)
        tree = {c: [] for c in checks if not (upstream(c) & red)}
        for c in checks:
            if c not in tree:
                root = next(r for r in tree if r in upstream(c))
                tree[root].append(c)
        found[arch] = tree
    return found


def summarise(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The architecture x check table (headings: the checks' short names), each cell ``vocabulary.cell`` of its
    tests; a red cell that follows from a root failure of its architecture is shown as ``(FAIL)``."""
    from ..checks.table import CHECKS

    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    archs: list[str] = []
    for r in results:
        if r["arch"] not in archs:
            archs.append(r["arch"])
        cells[(r["arch"], r["check"])].append(r)
    following = {(arch, c) for arch, tree in roots(results).items() for followers in tree.values() for c in followers}
    extra = [c for c in dict.fromkeys(r["check"] for r in results) if c not in CHECKS]
    checks = [c for c in [*CHECKS, *extra] if any((a, c) in cells for a in archs)]

    def label(arch: str, check: str) -> str:
        text = vocabulary.cell(cells.get((arch, check), []))[1]
        return FOLLOWS_MARK.format(text.split()[0]) if (arch, check) in following else text

    rows = [[arch, *(label(arch, check) for check in checks)] for arch in sorted(archs)]
    return ["architecture", *(CHECKS[c].short if c in CHECKS else c for c in checks)], rows


def render_table(headers: list[str], rows: list[list[str]], width: int = WIDTH) -> list[str]:
    """The table as text lines of at most ``width``: as many check columns per block as fit beside the
    architecture column, blocks one under the other."""
    from tabulate import tabulate

    def block(columns: list[int]) -> list[str]:
        return tabulate([[row[0], *(row[c] for c in columns)] for row in rows], headers=[headers[0], *(headers[c] for c in columns)],
                        tablefmt="simple").splitlines()

    lines: list[str] = []
    columns: list[int] = []
    for c in range(1, len(headers)):
        if columns and max(map(len, block([*columns, c]))) > width:
            lines += [*block(columns), ""]
            columns = []
        columns.append(c)
    lines += block(columns) if columns else []
    return lines


def legend(results: list[dict]) -> list[str]:
    """The columns' names, and the cell words the table uses, in lines of at most ``WIDTH``."""
    from ..checks.table import CHECKS

    used = {r["check"] for r in results}
    names = "; ".join(f"{spec.short} = {name}" for name, spec in CHECKS.items() if name in used and spec.short != name)
    words = ("cells: ok; FAIL f/n (the implementation broke the contract in f of n tests); ERROR (the harness or "
             "fixture); TIMEOUT, CRASH, DEVICE (faults); (FAIL): fails as a consequence of a root failure of the same "
             "architecture (listed below); skip, n/a, not offered, uncovered, xfail: green")
    return [*wrap(f"checks: {names}"), *wrap(words)] if names else wrap(words)


def failure_lines(results: list[dict]) -> list[str]:
    """Per architecture with red checks: each root failure with its first message, then the checks that fail
    because of it."""
    first: dict[tuple[str, str], str] = {}
    for r in results:
        if vocabulary.is_red(r["outcome"]):
            first.setdefault((r["arch"], r["check"]), (r.get("message") or "").strip().splitlines()[0] if r.get("message") else r["outcome"])
    lines = []
    for arch, tree in sorted(roots(results).items()):
        for root, followers in tree.items():
            lines += wrap(f"{arch}: {root} (root): {first[(arch, root)]}")
            if followers:
                lines += wrap(f"  follows from it: {', '.join(followers)}")
    return lines
