"""The suite's pytest plugin: the implementation fixture, the run header, and the architecture x check table at
the end of a run. Its command-line options are declared by ``options.py``; this module is registered only where
the suite runs (``register``, called by the suite's ``conftest.py`` and the project's ``tests/conftest.py``).

``--impl SPEC`` (or ``MOE_CONFORMANCE_IMPL=SPEC``) picks the implementation under test; a spec that cannot be
used, or a fixture file that breaks the schema, stops the run with one error line (pytest's usage error, exit
code 4) before any test runs.
``--moe-report PATH`` also writes every result, with the environment, as JSON (``conformance/results.py``; the
format is ``results.schema.json``, documented in ``docs/results-schema.md``); ``reports/generate.py`` turns it
into the compatibility reports and the HTML matrix.
``--device {cpu,cuda,auto}`` (or ``MOE_CONFORMANCE_DEVICE``) picks where the blocks run (``conformance.device``); a
device that cannot be used is the same kind of usage error.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from . import device as devices
from .checks_properties import register_hypothesis_profiles
from .impl import ENV_VAR, Implementation, ImplementationError, load_implementation
from .reporting import FULL_TRACEBACK_STYLES, short_report

_IMPL = pytest.StashKey[Implementation]()


def register(pluginmanager: pytest.PytestPluginManager) -> None:
    """Register this plugin once, however many of the suite's conftests ask (``pytest conformance tests`` loads
    two) and whether or not the user also passed ``-p moe_conformance.plugin``."""
    import sys

    module = sys.modules[__name__]
    if not pluginmanager.is_registered(module):
        pluginmanager.register(module, "moe_conformance.plugin")


def pytest_configure(config: pytest.Config) -> None:
    _single_threaded_unless_set()
    register_hypothesis_profiles()
    try:
        device = devices.resolve(config.getoption("--device"))
    except devices.DeviceError as exc:
        raise pytest.UsageError(str(exc)) from None
    # Before collection: the device is part of every test id. Exported, so that the pytest runs a test starts
    # (tests/test_mutants.py's end-to-end ones) run on it too.
    devices.set_run_device(device)
    devices.prepare(device)
    os.environ[devices.ENV_VAR] = device
    _check_fixture_files()
    if config.getoption("--load"):  # read when the tests are parametrised (suite.loads), by xdist workers too
        os.environ["MOE_CONFORMANCE_LOAD"] = config.getoption("--load")
    spec = config.getoption("--impl") or os.environ.get(ENV_VAR) or "reference"
    try:
        config.stash[_IMPL] = load_implementation(spec)
    except ImplementationError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.pluginmanager.register(_Recorder(config), "moe-conformance-recorder")


def _check_fixture_files() -> None:
    """A fixture file that breaks the schema (an unknown or missing key, a TOML syntax error) stops the run with
    one line naming the file, entry and key, before any test runs; at collection it would be a traceback of the
    test module's import. A folder without fixture files is left to the tests that read it: this plugin loads
    in every pytest run of the environment."""
    from .cases import FIXTURES_DIR
    from .fixture_files import FixtureError, load_fixture_cases

    if not any(FIXTURES_DIR.glob("*.toml")):
        return
    try:
        load_fixture_cases(FIXTURES_DIR)
    except FixtureError as exc:
        raise pytest.UsageError(str(exc)) from None


# Variables through which a user sets torch's intra-op thread count; when any is set, the suite leaves it be.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _single_threaded_unless_set() -> None:
    """The suite's blocks are tiny: intra-op threads only add spin and contention. On a busy 2-core machine
    `-k glm4_moe_lite` took 58-81 s with torch's default threads and 3.2 s with one; with -n 2, two workers of
    two threads each made a 35 s run take 400 s. So one thread per process (controller and every xdist worker),
    unless the user chose a count through OMP_NUM_THREADS or MKL_NUM_THREADS."""
    if any(os.environ.get(name) for name in THREAD_VARIABLES):
        return
    import torch

    torch.set_num_threads(1)


def _threads() -> str:
    import torch

    chosen = next((f"{name}={os.environ[name]}" for name in THREAD_VARIABLES if os.environ.get(name)), None)
    return f"torch threads {torch.get_num_threads()} ({chosen or 'the suite default; set OMP_NUM_THREADS to change'})"


@pytest.fixture(scope="session")
def impl(request: pytest.FixtureRequest) -> Implementation:
    return request.config.stash[_IMPL]


@pytest.fixture(scope="session")
def covered_only(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--covered-only"))


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"moe-conformance: impl={config.stash[_IMPL].describe()}, {_versions()}, {_threads()}", f"moe-conformance: device {_device()}"]


def _versions() -> str:
    import torch
    import transformers

    return f"transformers {transformers.__version__}, torch {torch.__version__}"


def _device() -> str:
    return devices.describe(devices.run_device())


class _Recorder:
    """Collects the outcome of every conformance test (on the xdist controller too) for the summary table."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.started = time.time()
        self.results: list[dict] = []
        self.completeness: dict | None = None
        self.smoke: list[str] = []
        # Failures of tests that are not per-architecture checks (completeness, collection errors): a report
        # of the run must show them too, or a red run would read "0 failed".
        self.other_failures: list[dict] = []
        # Tests the selection (-k, -m) left out: a count, never records. Under xdist each worker deselects the
        # same tests from the same collection and hands its count to the controller (workeroutput).
        self.deselected: int = 0

    def pytest_deselected(self, items) -> None:
        self.deselected += len(items)
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput["moe_deselected"] = self.deselected

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        self.deselected = max(self.deselected, getattr(node, "workeroutput", {}).get("moe_deselected", 0))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        properties = dict(report.user_properties)
        record = properties.get("moe_conformance")
        if report.failed and (record is None or report.when != "call"):
            crash = getattr(report.longrepr, "reprcrash", None)
            self.other_failures.append(
                {"nodeid": report.nodeid, "when": report.when, "message": crash.message if crash else str(report.longrepr)}
            )
        if report.when != "call":
            return  # a conformance test records its outcome in its call
        if "moe_completeness" in properties:
            self.completeness = properties["moe_completeness"]
        if "moe_smoke" in properties:
            self.smoke.append(properties["moe_smoke"])
        if record is not None:
            self.results.append({**record, "nodeid": report.nodeid, "duration_s": round(report.duration, 4)})
            if "placed_on" in properties:  # which GPU of several ran it (xdist workers spread over them)
                self.results[-1]["placed_on"] = properties["placed_on"]

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.other_failures.append({"nodeid": report.nodeid, "when": "collect", "message": str(report.longrepr)[-2000:]})

    def pytest_terminal_summary(self, terminalreporter, exitstatus) -> None:
        if self.completeness:
            c = self.completeness
            terminalreporter.section("moe-conformance: MoE classes in the installed transformers")
            terminalreporter.write_line(
                f"transformers {c['transformers']}: {c['found']} found, {c['covered']} covered, "
                f"{len(c['excluded'])} excluded, {len(c['no_wrapper'])} without a wrapper, "
                f"{len(c['no_fixture'])} without a fixture entry"
            )
            for name, reason in sorted(c["excluded"].items()):
                terminalreporter.write_line(f"excluded: {name}: {reason}")
            for name in c["no_wrapper"]:
                terminalreporter.write_line(f"uncovered: {name}: no wrapper; calibration would be silently skipped")
            for name in c["no_fixture"]:
                terminalreporter.write_line(f"unchecked: {name}: no fixture entry; the suite does not check it")
        if self.smoke:
            terminalreporter.section("moe-conformance: calibration smoke (experts natural routing left unseen)")
            for line in sorted(self.smoke):
                terminalreporter.write_line(line)
        config_path = self.config.getoption("--moe-report")
        if config_path and not _is_xdist_worker(self.config):  # the controller sees every report; a worker a share
            write_atomically(Path(config_path), json.dumps(self.results_file(int(exitstatus)), indent=1))
        if not self.results:
            return
        from tabulate import tabulate

        from .suite import CHECKS

        config = self.config
        headers, rows = summarise(self.results)
        impl = config.stash[_IMPL].describe()
        tr = terminalreporter
        device = devices.run_device()
        tr.section(f"moe-conformance: {impl}; {_versions()}" + (f"; {_device()}" if device != "cpu" else ""))
        tr.write_line(tabulate(rows, headers=headers, tablefmt="simple"))
        placed = Counter(r["placed_on"] for r in self.results if "placed_on" in r)
        if len(placed) > 1:
            tr.write_line("tests per GPU: " + ", ".join(f"{gpu} {n}" for gpu, n in sorted(placed.items())))
        skips = {r["message"] for r in self.results if r["outcome"] == "skipped" and r["message"] and not r.get("uncovered")}
        for reason in sorted(skips):  # absences, the fixtures' known skips
            tr.write_line(f"skip: {reason}")
        for line in uncovered_lines(self.results, config.getoption("--covered-only")):
            tr.write_line(line)
        for r in self.results:  # a known gap is shown with its reason, never as a bare "xfail"
            if r["outcome"] == "xfail":
                tr.write_line(f"xfail: {r['id']}: {r['message'].splitlines()[0] if r['message'] else ''}")
        tr.write_line("checks: " + "; ".join(f"{spec.short} = {name}" for name, spec in CHECKS.items() if spec.short != name))
        if config_path:
            tr.write_line(f"moe-conformance: results written to {config_path}")

    def results_file(self, exit_code: int) -> dict:
        from . import results
        from .suite import CHECKS

        config = self.config
        return results.build(
            impl=config.stash[_IMPL],
            spec=config.getoption("--impl") or os.environ.get(ENV_VAR) or "reference",
            device=devices.run_device(),  # as resolved: --device auto names the device it chose
            started=self.started,
            finished=time.time(),
            exit_code=exit_code,
            selection=config.getoption("keyword", None),
            checks=[{"name": name, "short": spec.short, "contract": spec.doc} for name, spec in CHECKS.items()],
            completeness=self.completeness,
            other_failures=self.other_failures,
            results=self.results,
            deselected=self.deselected,
        )


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def write_atomically(path: Path, text: str) -> None:
    """A reader (a CI step, a report tool) sees the old file or the whole new one, never a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as f:
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


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
    failed, errors = outcomes.count("failed"), outcomes.count("error")
    if failed or errors:
        parts = [f"FAIL {failed}/{len(outcomes)}"] if failed else []
        return " ".join(parts + ([f"ERROR {errors}/{len(outcomes)}"] if errors else []))
    if "uncovered" in outcomes:
        return "uncovered"
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
    from .suite import CHECKS

    cells: dict[tuple[str, str], list[str]] = defaultdict(list)
    archs: list[str] = []
    for r in results:
        if r["arch"] not in archs:
            archs.append(r["arch"])
        uncovered = r.get("uncovered") and r["outcome"] == "skipped"
        cells[(r["arch"], r["check"])].append("uncovered" if uncovered else r["outcome"])
    extra = [c for c in dict.fromkeys(r["check"] for r in results) if c not in CHECKS]
    checks = [c for c in [*CHECKS, *extra] if any((a, c) in cells for a in archs)]
    rows = [[arch, *(_cell(cells.get((arch, check), [])) for check in checks)] for arch in sorted(archs)]
    return ["architecture", *(CHECKS[c].short if c in CHECKS else c for c in checks)], rows


def _recorded(report: pytest.TestReport) -> dict | None:
    return dict(report.user_properties).get("moe_conformance")


@pytest.hookimpl(tryfirst=True)
def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):
    """A harness error is reported as ERROR (counted with pytest's errors), not as the implementation's FAIL."""
    if report.when == "call" and report.failed and (_recorded(report) or {}).get("outcome") == "error":
        return "error", "E", "ERROR"
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed conformance test reports its verdict and the frames that raised, not the harness' traceback,
    unless the run asked for full tracebacks."""
    report = yield
    record = dict(item.user_properties).get("moe_conformance")
    if record and report.when == "call" and report.failed and call.excinfo is not None and not _full_tracebacks(item.config):
        report.longrepr = short_report(record["outcome"], record["message"], call.excinfo.value)
    return report


def _full_tracebacks(config: pytest.Config) -> bool:
    return config.getoption("tbstyle", "auto") in FULL_TRACEBACK_STYLES or bool(config.getoption("fulltrace", False))
