"""The project's own tests run with the suite's plugin (its hypothesis profiles, one thread per process, the
device), and print the mutation kill table at the end of a run of tests/test_mutants.py (on the xdist controller
too)."""

import json
from collections import Counter

from tabulate import tabulate

_kills: dict[tuple[str, str], str] = {}  # (mutant, architecture) -> the check that caught it, "n/a", ...


def pytest_runtest_logreport(report):
    for key, value in report.user_properties:
        if key == "mutant_kill" and (report.when == "call" or report.outcome == "skipped"):
            mutant, arch, verdict = value
            _kills[(mutant, arch)] = verdict


def kill_summary(kills: dict[tuple[str, str], str]) -> dict:
    """One row per mutant, its verdicts counted over the architectures (as columns they would be too wide), and
    how many of the applicable (mutant, architecture) pairs were killed."""
    verdicts: dict[str, Counter] = {}
    for (mutant, _arch), verdict in kills.items():
        verdicts.setdefault(mutant, Counter())[verdict] += 1
    applicable = [v for v in kills.values() if v != "n/a"]
    return {
        "rows": [[m, "; ".join(f"{v}: {n}" for v, n in sorted(c.items()))] for m, c in verdicts.items()],
        "mutants": len(verdicts),
        "killed": sum(v != "SURVIVED" for v in applicable),
        "applicable": len(applicable),
    }


def pytest_terminal_summary(terminalreporter):
    if not _kills:
        return
    summary = kill_summary(_kills)
    terminalreporter.section("mutation kill table: the check that caught each mutant (its aimed-at check run first), per architecture")
    terminalreporter.write_line(tabulate(summary["rows"], headers=["mutant", "caught by (architectures)"], tablefmt="simple"))
    terminalreporter.write_line(f"killed {summary['killed']}/{summary['applicable']} applicable (mutant, architecture) pairs")


def pytest_addhooks(pluginmanager):
    from moe_conformance.run import plugin

    plugin.register(pluginmanager)


def pytest_addoption(parser):
    parser.addoption("--kill-report", default=None, metavar="PATH", help="write the mutation kill table (kill_summary) as JSON to PATH")


def pytest_sessionfinish(session):
    path = session.config.getoption("--kill-report", default=None)
    if path and _kills:
        with open(path, "w") as f:
            json.dump(kill_summary(_kills), f)
