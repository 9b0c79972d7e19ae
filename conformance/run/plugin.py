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
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from .. import vocabulary
from ..cases import devices
from ..implementations.loader import ENV_VAR as IMPL_VAR
from ..implementations.loader import load_implementation
from ..implementations.protocol import Implementation, ImplementationError
from . import isolation, results, terminal
from .options import LOAD_VAR
from .reporting import FULL_TRACEBACK_STYLES, short_report


@dataclass(frozen=True)
class RunOptions:
    """The run's configuration, resolved once from the command line (each option's environment variable where
    the option is not given) in every process of the run, and read from here alone: the tests' parametrisation,
    the header, the results file."""

    impl_spec: str
    device: str  # as resolved: --device auto names the device it chose
    load: str


_OPTIONS = pytest.StashKey[RunOptions]()
_IMPL = pytest.StashKey[Implementation]()


def run_options(config: pytest.Config) -> RunOptions:
    return config.stash[_OPTIONS]


def register(pluginmanager: pytest.PytestPluginManager) -> None:
    """Register this plugin once, however many of the suite's conftests ask (``pytest conformance tests`` loads
    two) and whether or not the user also passed ``-p moe_conformance.run.plugin``."""
    import sys

    module = sys.modules[__name__]
    if not pluginmanager.is_registered(module):
        pluginmanager.register(module, "moe_conformance.run.plugin")


def pytest_configure(config: pytest.Config) -> None:
    from ..checks.spec import loads

    load = config.getoption("--load") or os.environ.get(LOAD_VAR) or "cast"
    try:
        device = devices.resolve(config.getoption("--device"))
        loads(load)
    except (devices.DeviceError, ValueError) as exc:
        raise pytest.UsageError(str(exc)) from None
    devices.prepare(device)
    _check_fixture_files()
    spec = config.getoption("--impl") or os.environ.get(IMPL_VAR) or "reference"
    config.stash[_OPTIONS] = RunOptions(spec, device, load)
    recorder = _Recorder(config)
    config.pluginmanager.register(recorder, "moe-conformance-recorder")
    if "moe_fault_dir" in getattr(config, "workerinput", {}):
        config.pluginmanager.register(isolation.WorkerGuard(config), "moe-conformance-worker-guard")
    elif not _is_xdist_worker(config):
        if isolation.distributed(config):
            collector = isolation.FaultCollector(isolation.timeout(config), isolation.memory_limit(config, device))
            config.pluginmanager.register(collector, isolation.COLLECTOR)
        recorder.catch_sigterm()


def implementation(config: pytest.Config) -> Implementation:
    """The implementation under test, loaded on first use: by the run header, else at session start. Under
    xdist both come after the controller has started its workers (``pytest_sessionstart``: xdist's runs first),
    so the controller's load (torch, transformers, the implementation) and the workers' start-up overlap. A spec
    that cannot be used is a usage error all the same: one line, exit code 4."""
    if _IMPL not in config.stash:
        single_threaded_unless_set()
        try:
            config.stash[_IMPL] = load_implementation(run_options(config).impl_spec)
        except ImplementationError as exc:
            raise pytest.UsageError(str(exc)) from None
    return config.stash[_IMPL]


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    implementation(session.config)


def _check_fixture_files() -> None:
    """A fixture file that breaks the schema (an unknown or missing key, a TOML syntax error) stops the run with
    one line naming the file, entry and key, before any test runs; at collection it would be a traceback of the
    test module's import. A folder without fixture files is left to the tests that read it: this plugin loads
    in every pytest run of the environment."""
    from ..cases.arch import FIXTURES_DIR
    from ..cases.files import FixtureError, load_fixture_cases

    if not any(FIXTURES_DIR.glob("*.toml")):
        return
    try:
        load_fixture_cases(FIXTURES_DIR)
    except FixtureError as exc:
        raise pytest.UsageError(str(exc)) from None


# Variables through which a user sets torch's intra-op thread count; when any is set, the suite leaves it be.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def single_threaded_unless_set() -> None:
    """The suite's blocks are tiny: intra-op threads only add spin and contention, an order of magnitude on a
    busy machine (``benchmarks/bench_suite.py --threads`` prints the figures). So one thread per process
    (controller and every xdist worker), unless the user chose a count through OMP_NUM_THREADS or
    MKL_NUM_THREADS."""
    if any(os.environ.get(name) for name in THREAD_VARIABLES):
        return
    import torch

    torch.set_num_threads(1)


def _threads() -> str:
    import torch

    chosen = next((f"{name}={os.environ[name]}" for name in THREAD_VARIABLES if os.environ.get(name)), None)
    return f"torch threads {torch.get_num_threads()} ({chosen or 'the suite default: set OMP_NUM_THREADS'})"


@pytest.fixture(scope="session")
def impl(request: pytest.FixtureRequest) -> Implementation:
    return implementation(request.config)


@pytest.fixture(scope="session")
def not_judged(request: pytest.FixtureRequest):
    """``not_judged(arch)``: why an architecture is not judged any further (an earlier test of it faulted), or None."""
    folder = getattr(request.config, "workerinput", {}).get("moe_fault_dir")
    return lambda arch: isolation.faulted_reason(folder and Path(folder), arch)


@pytest.fixture(scope="session")
def covered_only(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--covered-only"))


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [f"moe-conformance: impl={implementation(config).describe()}", f"moe-conformance: {_versions()}, {_threads()}",
             f"moe-conformance: device {devices.describe(run_options(config).device)}",
             f"moe-conformance: isolation: {isolation.describe(config)}"]
    return [part for line in lines for part in terminal.wrap(line)]


def _versions() -> str:
    import torch
    import transformers

    return f"transformers {transformers.__version__}, torch {torch.__version__}"


PARTIAL_WRITE_S = 30.0  # how often a running suite rewrites its results file, marked incomplete


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
        self.selected: int | None = None
        self.incomplete: str | None = None
        self.written = time.time()

    def catch_sigterm(self) -> None:
        """SIGTERM (a CI time limit, a job cancelled) interrupts the run as Ctrl-C does, so that the results file
        is still written, marked incomplete."""
        import signal

        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            def interrupt(signum, frame):
                self.incomplete = "interrupted by SIGTERM"
                raise KeyboardInterrupt("SIGTERM")

            signal.signal(signal.SIGTERM, interrupt)

    def write_results(self, exit_code: int, incomplete: str | None) -> None:
        """The results file, by the one process that sees every report (the controller under xdist)."""
        path = self.config.getoption("--moe-report")
        if path and not _is_xdist_worker(self.config):
            data = self.results_file(exit_code)
            data["incomplete"] = {"reason": incomplete, "selected": self.selected, "recorded": len(self.results)} if incomplete else None
            results.write_atomically(Path(path), json.dumps(data, indent=1))
            self.written = time.time()

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus) -> None:
        interrupted = int(exitstatus) == pytest.ExitCode.INTERRUPTED
        self.write_results(int(exitstatus), (self.incomplete or "interrupted") if interrupted else None)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.selected = len(session.items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids) -> None:
        self.selected = len(ids)

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
            if time.time() - self.written > PARTIAL_WRITE_S:  # what a SIGKILL would leave: every finished record
                self.write_results(int(pytest.ExitCode.INTERRUPTED), "the run had not finished when this was written")

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.other_failures.append({"nodeid": report.nodeid, "when": "collect", "message": str(report.longrepr)[-2000:]})

    def pytest_terminal_summary(self, terminalreporter, exitstatus) -> None:
        """The run's account, every line within ``terminal.WIDTH`` columns: the MoE classes found, the table, its
        legend, the failures with their roots, and what was skipped or not covered, and why."""
        tr, config = terminalreporter, self.config

        def write(*lines: str) -> None:
            for line in lines:
                for part in terminal.wrap(line):
                    tr.write_line(part)

        if self.completeness:
            c = self.completeness
            tr.section("moe-conformance: MoE classes in the installed transformers")
            write(f"transformers {c['transformers']}: {c['found']} found, {c['covered']} covered, "
                  f"{len(c['excluded'])} excluded, {len(c['no_wrapper'])} without a wrapper, "
                  f"{len(c['no_fixture'])} without a fixture entry")
            if config.getoption("verbose") > 0:
                write(*(f"excluded: {name}: {reason}" for name, reason in sorted(c["excluded"].items())))
            write(*(f"uncovered: {name}: no wrapper; calibration would be silently skipped" for name in c["no_wrapper"]))
            write(*(f"unchecked: {name}: no fixture entry; the suite does not check it" for name in c["no_fixture"]))
        smoke_failed = any(r["check"] == "calibration_smoke" and vocabulary.is_red(r["outcome"]) for r in self.results)
        if self.smoke and (smoke_failed or config.getoption("verbose") > 0):
            tr.section("moe-conformance: calibration smoke (experts natural routing left unseen)")
            write(*sorted(self.smoke))
        if not self.results:
            return
        headers, rows = terminal.summarise(self.results)
        device = run_options(config).device
        on = f"; {devices.describe(device)}" if device != devices.DEFAULT else ""
        tr.section(f"moe-conformance: {implementation(config).describe()}")
        write(f"{_versions()}{on}")
        write(*terminal.render_table(headers, rows))
        write(*terminal.legend(self.results))
        failures = terminal.failure_lines(self.results)
        if failures:
            tr.section("moe-conformance: failures (root first, then what follows from it)")
            write(*failures)
        placed = Counter(r["placed_on"] for r in self.results if "placed_on" in r)
        if len(placed) > 1:
            write("tests per GPU: " + ", ".join(f"{gpu} {n}" for gpu, n in sorted(placed.items())))
        skips = {r["message"] for r in self.results if r["outcome"] == vocabulary.SKIPPED and r["message"]
                 and not r.get("uncovered") and not r.get("not_judged")}
        write(*(f"skip: {reason}" for reason in sorted(skips)))  # absences, the fixtures' known skips
        write(*terminal.uncovered_lines(self.results, config.getoption("--covered-only")))
        for r in self.results:  # a known gap is shown with its reason, never as a bare "xfail"
            if r["outcome"] == vocabulary.XFAIL:
                write(f"xfail: {r['id']}: {r['message'].splitlines()[0] if r['message'] else ''}")
        if config.getoption("--moe-report"):
            write(f"moe-conformance: results written to {config.getoption('--moe-report')}")

    def results_file(self, exit_code: int) -> dict:
        from ..checks.table import CHECKS
        from . import results

        config = self.config
        return results.build(
            impl=implementation(config),
            spec=run_options(config).impl_spec,
            device=run_options(config).device,
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


def _recorded(report: pytest.TestReport) -> dict | None:
    return dict(getattr(report, "user_properties", ())).get("moe_conformance")


@pytest.hookimpl(tryfirst=True)
def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):
    """A harness error is reported as ERROR (counted with pytest's errors), not as the implementation's FAIL."""
    outcome = (_recorded(report) or {}).get("outcome")
    if report.when == "call" and report.failed and outcome == vocabulary.ERROR:
        return "error", "E", "ERROR"
    if report.when == "call" and report.failed and outcome in vocabulary.FAULTS:
        label = vocabulary.LABELS[outcome]
        return "failed", label[0], label
    if report.outcome == "rerun" and "moe_replaced" in dict(report.user_properties):
        return "", "", ""  # a worker ended after a device fault: the test runs again on a fresh one
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
