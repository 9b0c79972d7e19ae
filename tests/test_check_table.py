"""docs/checks.md's check table is ``python -m moe_conformance --list-checks``'s output, read from the CheckSpecs: the two
cannot drift apart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from moe_conformance.__main__ import check_table
from moe_conformance.checks.table import CHECKS

REPO = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- check table: python -m moe_conformance --list-checks -->\n", "<!-- end of check table -->"


def test_docs_check_table_is_the_list_checks_output():
    run = subprocess.run([sys.executable, "-m", "moe_conformance", "--list-checks"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout == check_table(), run.stderr[-2000:]
    page = (REPO / "docs" / "checks.md").read_text()
    shown = page.split(BEGIN, 1)[1].split(END, 1)[0]
    assert shown == run.stdout, (
        "docs/checks.md's check table differs from `python -m moe_conformance --list-checks`: paste that command's output "
        "between the check table markers in docs/checks.md"
    )


def test_every_check_has_a_row_with_its_contract():
    table = check_table()
    for name, spec in CHECKS.items():
        assert f"| `{name}` | `{spec.short}` |" in table and spec.doc in table, name
        assert "\n" not in spec.doc and "|" not in spec.doc, f"{name}: a contract is one line of a Markdown table"


def test_what_a_check_follows_is_a_check_and_never_itself():
    """``follows`` names checks of the table, and no check follows itself through others: a root exists in every
    group of failing checks (``run/terminal.py`` marks the rest)."""
    for name, spec in CHECKS.items():
        seen, todo = set(), list(spec.follows)
        while todo:
            other = todo.pop()
            assert other in CHECKS, f"{name} follows {other!r}, which is no check"
            assert other != name, f"{name} follows itself"
            if other not in seen:
                seen.add(other)
                todo += list(CHECKS[other].follows)
