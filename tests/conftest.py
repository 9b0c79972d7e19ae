"""The mutation kill table, printed at the end of a run of tests/test_mutants.py (on the xdist controller too)."""

import json
from collections import Counter

from tabulate import tabulate

_kills: dict[tuple[str, str], str] = {}  # (mutant, architecture) -> the first check that caught it, "n/a", ...


def pytest_runtest_logreport(report):
    for key, value in report.user_properties:
        if key == "mutant_kill" and (report.when == "call" or report.outcome == "skipped"):
            mutant, arch, verdict = value
            _kills[(mutant, arch)] = verdict


def pytest_terminal_summary(terminalreporter):
    if not _kills:
        return
    # One row per mutant, its verdicts counted over the architectures (as columns they would be too wide).
    verdicts: dict[str, Counter] = {}
    for (mutant, _arch), verdict in _kills.items():
        verdicts.setdefault(mutant, Counter())[verdict] += 1
    rows = [[m, "; ".join(f"{v}: {n}" for v, n in sorted(c.items()))] for m, c in verdicts.items()]
    applicable = [v for v in _kills.values() if v != "n/a"]
    terminalreporter.section("mutation kill table: the first check that caught each mutant, per architecture")
    terminalreporter.write_line(tabulate(rows, headers=["mutant", "caught by (architectures)"], tablefmt="simple"))
    killed = sum(v != "SURVIVED" for v in applicable)
    terminalreporter.write_line(f"killed {killed}/{len(applicable)} applicable (mutant, architecture) pairs")


def pytest_addoption(parser):
    parser.addoption("--kill-report", default=None, metavar="PATH", help="write the mutation kill table as JSON to PATH")


def pytest_sessionfinish(session):
    path = session.config.getoption("--kill-report", default=None)
    if path and _kills:
        with open(path, "w") as f:
            json.dump([[m, a, v] for (m, a), v in _kills.items()], f)
