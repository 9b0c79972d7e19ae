"""The mutation kill table, printed at the end of a run of tests/test_mutants.py (on the xdist controller too)."""

import json

from tabulate import tabulate

_kills: dict[tuple[str, str], str] = {}  # (mutant, architecture) -> the first check that caught it, "n/a", ...


def pytest_runtest_logreport(report):
    for key, value in report.user_properties:
        if key == "mutant_kill" and report.when == "call" or (key == "mutant_kill" and report.outcome == "skipped"):
            mutant, arch, verdict = value
            _kills[(mutant, arch)] = verdict


def kill_table() -> tuple[list[str], list[list[str]], int, int]:
    archs = sorted({a for _, a in _kills})
    mutants = list(dict.fromkeys(m for m, _ in _kills))
    rows = [[m, *(_kills.get((m, a), "") for a in archs)] for m in mutants]
    applicable = [v for v in _kills.values() if v != "n/a"]
    return ["mutant", *archs], rows, sum(v != "SURVIVED" for v in applicable), len(applicable)


def pytest_terminal_summary(terminalreporter):
    if not _kills:
        return
    headers, rows, killed, applicable = kill_table()
    # One row per mutant; architectures as columns would be too wide, so each row lists the verdicts compactly.
    terminalreporter.section("mutation kill table: the first check that caught each mutant, per architecture")
    compact = []
    for row in rows:
        verdicts: dict[str, list[str]] = {}
        for arch, verdict in zip(headers[1:], row[1:]):
            if verdict:
                verdicts.setdefault(verdict, []).append(arch)
        compact.append([row[0], "; ".join(f"{v}: {len(a)}" for v, a in sorted(verdicts.items()))])
    terminalreporter.write_line(tabulate(compact, headers=["mutant", "caught by (architectures)"], tablefmt="simple"))
    terminalreporter.write_line(f"killed {killed}/{applicable} applicable (mutant, architecture) pairs")


def pytest_addoption(parser):
    parser.addoption("--kill-report", default=None, metavar="PATH", help="write the mutation kill table as JSON to PATH")


def pytest_sessionfinish(session):
    path = session.config.getoption("--kill-report", default=None)
    if path and _kills:
        with open(path, "w") as f:
            json.dump([[m, a, v] for (m, a), v in _kills.items()], f)
