from tabulate import tabulate


def pytest_terminal_summary(terminalreporter):
    from tests.test_mutants import KILLS

    if not KILLS:
        return
    archs = sorted({a for _, a in KILLS})
    mutants = list(dict.fromkeys(m for m, _ in KILLS))
    rows = [[m, *(KILLS.get((m, a), "") for a in archs)] for m in mutants]
    applicable = [v for v in KILLS.values() if v != "n/a"]
    killed = sum(v != "SURVIVED" for v in applicable)
    terminalreporter.section("mutation kill table (cell: the first check that caught the mutant)")
    terminalreporter.write_line(tabulate(rows, headers=["mutant", *archs], tablefmt="simple"))
    terminalreporter.write_line(f"killed {killed}/{len(applicable)} applicable (mutant, architecture) pairs")
