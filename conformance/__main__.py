"""``python -m moe_conformance --list-checks``: the check table, one row per check with its one-line contract, read
from the ``CheckSpec``s (``suite.CHECKS``). docs/checks.md's check table is this output, and a test keeps it so."""

from __future__ import annotations

import argparse
import sys

from .cases.devices import DEVICES
from .cases.discovery import COMPLETENESS_CONTRACT
from .checks.spec import CheckSpec
from .checks.table import CHECKS

__all__ = ["check_table", "main"]


def _runs(spec: CheckSpec) -> str:
    """The settings a check runs in per architecture: every routing variant or the default one, its modes, its
    dtypes; 'once' for a check that takes none of them."""
    parts = ["each variant"] if spec.per_variant else []
    parts += [", ".join(m for m in spec.modes if m)] + [", ".join(str(d).removeprefix("torch.") for d in spec.dtypes if d is not None)]
    for device in DEVICES:  # the dtypes a device adds to the default device's
        extra = [str(d).removeprefix("torch.") for d in spec.dtypes_on(device) if d not in spec.dtypes]
        parts[-1] += f" (+ {', '.join(extra)} on {device})" if extra else ""
    return " · ".join(p for p in parts if p) or "once"


def check_table() -> str:
    """The checks as a Markdown table: name, summary-table column, settings, contract."""
    rows = [
        "| check | column | runs in | what must hold |",
        "| --- | --- | --- | --- |",
        *(f"| `{name}` | `{spec.short}` | {_runs(spec)} | {spec.doc} |" for name, spec in CHECKS.items()),
        f"| `registry_completeness` | (its own test) | once per run | {COMPLETENESS_CONTRACT} |",
    ]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moe_conformance", description="moe-conformance: the suite's checks.")
    parser.add_argument("--list-checks", action="store_true", help="print the check table (Markdown), one line per check with its contract")
    args = parser.parse_args(argv)
    if not args.list_checks:
        parser.print_help()
        return 2
    sys.stdout.write(check_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
