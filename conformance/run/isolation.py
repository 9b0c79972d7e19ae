"""Fault containment: an implementation that hangs, crashes its process or poisons its device context is one
located failure (TIMEOUT, CRASH, DEVICE), the rest of its architecture is not judged, and every other
architecture is judged as usual.

The isolation is pytest-xdist's: tests run in worker processes, and xdist replaces a worker that dies, blaming
the test it was running (``pytest_handlecrashitem``). A run of the suite without ``-n`` (or with ``-n 0``) gets one
worker (``options.py``), so that ``-n 0`` and ``-n N`` contain faults alike; ``--fault-isolation off`` (implied by
``--pdb`` / ``--trace``, or where xdist is not installed) runs in-process, unprotected.

What each side does, talking through files in one folder per run (the controller's, named in ``workerinput``):

- a worker (``WorkerGuard``) notes the test it starts (``<worker>.running.json``: its node id and record skeleton),
  arms a watchdog thread with the test's time limit, and writes Python's fault handler output to
  ``<worker>.fatal``. On expiry the watchdog writes the main thread's stack (``<worker>.timeout.json``) and ends
  the process; a signal (SIGSEGV, SIGABRT ...) is left to the fault handler. After a sticky device error
  (``outcomes.device_fault``: reported as that test's DEVICE outcome by the worker itself) the worker ends before
  its next test, so that later tests run on a fresh context, and that test is put back in the queue;
- the controller (``FaultCollector``), told of the dead worker's test, turns it into a record of its kind with
  the implementation's frames, and marks the architecture (``faulted/<arch>``), whose remaining tests every
  worker then skips as not judged.
"""

from __future__ import annotations

import faulthandler
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from ..cases import devices
from .results import write_atomically
from ..vocabulary import CRASH, DEVICE, FAULT_WORDS, FAULTS, SKIPPED, TIMEOUT

TIMEOUT_VAR = "MOE_CONFORMANCE_TIMEOUT"
# The slowest healthy test seen anywhere (results files under reports/) took 12.7 s (CUDA, first call into a
# kernel), 6.5 s on the CPU with a peer's conversion and 1.8 s with the reference: 120 s is 9x the first and 18x
# the second, room for a CPU 10-20x slower (2 busy cores). A fixture entry's ``timeout_s`` raises it for its
# architecture.
DEFAULT_TIMEOUT_S = 120.0
MEMORY_VAR = "MOE_CONFORMANCE_MEMORY_LIMIT"
EXIT_REPLACE = 98
COLLECTOR = "moe-conformance-fault-collector"  # the controller's FaultCollector, by its plugin name
HARNESS_DIR = Path(__file__).resolve().parents[1]  # the package folder
IMPLEMENTATION_DIRS = tuple(HARNESS_DIR / name for name in ("wrappers", "reference"))  # the reference's own code
RUNNER_MODULES = re.compile(r"[/\\](_pytest|pytest|pluggy|xdist|execnet|threading\.py)([/\\]|$)")
FRAMES_SHOWN = 8


def is_harness_frame(filename: str) -> bool:
    path = Path(filename)
    if path.is_relative_to(HARNESS_DIR) and not any(path.is_relative_to(d) for d in IMPLEMENTATION_DIRS):
        return True
    return filename.startswith("<") or bool(RUNNER_MODULES.search(filename))  # <string>: execnet's bootstrap


def implementation_frames(frames: list[tuple[str, int, str]]) -> str:
    """The frames outside the harness and the test runner, most recent first: where the implementation was."""
    own = [f for f in frames if not is_harness_frame(f[0])]
    return "; ".join(f"{func} ({file}:{line})" for file, line, func in own[:FRAMES_SHOWN]) or "no frame outside the harness"


def timeout_for(item: pytest.Item, default: float) -> float:
    case = getattr(item, "callspec", None) and item.callspec.params.get("case")
    return float(getattr(case, "timeout_s", None) or default)


def _skeleton(item: pytest.Item) -> dict[str, Any] | None:
    """The record a test of the suite would write, less its outcome: what a fault record is built from."""
    params = getattr(item, "callspec", None) and item.callspec.params
    if not params or "setting" not in params:
        return None
    return {**params["setting"].record(), "fixture": params["case"].source}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def faulted_reason(folder: Path | None, arch: str) -> str | None:
    """Why ``arch`` is not judged any further in this run (an earlier test of it faulted), or None."""
    if folder is None:
        return None
    try:
        return (folder / "faulted" / arch).read_text()
    except OSError:
        return None


def not_judged_reason(record: dict, kind: str) -> str:
    return f"{record['arch']}: not judged: the implementation {FAULT_WORDS[kind]} in {record['id']}"


def mark_faulted(folder: Path, record: dict, kind: str) -> None:
    """Tell every worker to skip the architecture's remaining tests; the first fault's reason stays."""
    (folder / "faulted").mkdir(exist_ok=True)
    try:
        with open(folder / "faulted" / record["arch"], "x") as f:
            f.write(not_judged_reason(record, kind))
    except FileExistsError:
        pass


def distributed(config: pytest.Config) -> bool:
    return config.getoption("dist", "no") != "no" and bool(config.getoption("numprocesses", 0))


def timeout(config: pytest.Config) -> float:
    value = config.getoption("--moe-timeout") or os.environ.get(TIMEOUT_VAR) or DEFAULT_TIMEOUT_S
    try:
        return float(value)
    except ValueError:
        raise pytest.UsageError(f"--moe-timeout / ${TIMEOUT_VAR}: {value!r} is not a number of seconds") from None


def memory_limit(config: pytest.Config, device: str) -> int | None:
    """Bytes of address space a worker may add to what it has at start: on the CPU, a quarter of the machine's
    memory (at least 4 GiB) unless --memory-limit says otherwise (0: none); never on an accelerator."""
    value = config.getoption("--memory-limit") or os.environ.get(MEMORY_VAR)
    if not devices.DEVICES[device].address_space_limited:
        return None
    if value is not None:
        try:
            gib = float(value)
        except ValueError:
            raise pytest.UsageError(f"--memory-limit / ${MEMORY_VAR}: {value!r} is not a number of GiB") from None
        return int(gib * 2**30) or None
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(4 * 2**30, physical // 4)


def describe(config: pytest.Config) -> str:
    if not distributed(config):
        return "none: tests run in this process (--fault-isolation off, --pdb, or without pytest-xdist): a crash ends the run"
    faults = config.pluginmanager.get_plugin(COLLECTOR)
    limit = f"{faults.memory_limit / 2**30:.1f} GiB more address space" if faults.memory_limit else "no memory limit"
    return (f"worker processes, replaced after a crash, a hang or a device fault; {faults.timeout:g} s and {limit} "
            f"a test (--moe-timeout, --memory-limit)")


class WorkerGuard:
    """Registered in each xdist worker of a suite run."""

    def __init__(self, config: pytest.Config):
        self.folder = Path(config.workerinput["moe_fault_dir"])
        self.name = config.workerinput["workerid"]
        self.default_timeout = float(config.workerinput["moe_timeout"])
        self.poisoned: str | None = None
        # open for the process' life: the fault handler writes into them from a signal handler or its watchdog
        self._fatal = open(self.folder / f"{self.name}.fatal", "w")  # noqa: SIM115
        self._timeout = open(self.folder / f"{self.name}.timeout", "w")  # noqa: SIM115
        self.memory_limit = config.workerinput.get("moe_memory_limit")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # after pytest's own faulthandler plugin, which points the handler at stderr when it is configured
        faulthandler.enable(file=self._fatal, all_threads=False)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem):
        running = self.folder / f"{self.name}.running.json"
        if self.poisoned:  # the device context is unusable: a fresh worker runs this test instead
            write_atomically(running, json.dumps({"nodeid": item.nodeid, "replace": self.poisoned}))
            os._exit(EXIT_REPLACE)
        skeleton = _skeleton(item)
        if skeleton is None:  # not a test of the suite (the project's own tests share this plugin): left alone
            return (yield)
        limit = timeout_for(item, self.default_timeout)
        write_atomically(running, json.dumps({"nodeid": item.nodeid, "record": skeleton, "limit": limit}))
        if limit > 0:
            # faulthandler's watchdog is a C thread: it fires even while the hung code holds the GIL, writes every
            # thread's stack and ends the process
            faulthandler.dump_traceback_later(limit, exit=True, file=self._timeout)
        address_space = _limit_address_space(int(self.memory_limit)) if self.memory_limit else None
        try:
            return (yield)
        finally:
            if limit > 0:
                faulthandler.cancel_dump_traceback_later()
            if address_space is not None:
                _restore_address_space(address_space)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = dict(report.user_properties).get("moe_conformance")
        if record and report.when == "call" and record["outcome"] == DEVICE:
            self.poisoned = record["id"]
            mark_faulted(self.folder, record, DEVICE)  # the worker's siblings skip the architecture from now


def _limit_address_space(extra_bytes: int) -> tuple[int, int]:
    """For one test of the suite: a memory blow-up fails an allocation (a located failure) instead of waking the
    kernel's OOM killer, which may pick any process of the machine. The CPU only (CUDA reserves address space by
    terabytes), and only around the suite's tests: the project's own tests start browsers that need far more.
    Returns the limits to put back."""
    import resource

    with open("/proc/self/status") as f:
        size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    before = resource.getrlimit(resource.RLIMIT_AS)
    hard = before[1]
    soft = size + extra_bytes if hard == resource.RLIM_INFINITY else min(size + extra_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    return before


def _restore_address_space(limits: tuple[int, int]) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, limits)


class FaultCollector:
    """Registered in the xdist controller of a suite run."""

    def __init__(self, timeout: float, memory_limit: int | None):
        self.folder = Path(tempfile.mkdtemp(prefix="moe-conformance-faults-"))
        self.timeout, self.memory_limit = timeout, memory_limit
        self.first_fault: dict[str, tuple[dict, str]] = {}  # architecture -> (its first fault's record, kind)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def pytest_configure_node(self, node) -> None:
        node.workerinput["moe_fault_dir"] = str(self.folder)
        node.workerinput["moe_timeout"] = self.timeout
        node.workerinput["moe_memory_limit"] = self.memory_limit

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: pytest.TestReport, sched) -> None:
        worker = report.node.gateway.id
        running = _read_json(self.folder / f"{worker}.running.json") or {}
        if running.get("nodeid") != crashitem or running.get("record") is None and "replace" not in running:
            return  # not a test of the suite (or it died before noting one): xdist's own report stands
        if "replace" in running:  # ended on purpose after a device fault; the test never started
            sched.mark_test_pending(crashitem)
            report.outcome = "rerun"
            report.user_properties.append(("moe_replaced", running["replace"]))
            return
        record = dict(running["record"])
        hung = _read_text(self.folder / f"{worker}.timeout")
        if hung.startswith("Timeout"):
            kind = TIMEOUT
            message = (f"{record['id']}: TIMEOUT: did not return within {running['limit']:g} s; the implementation "
                       f"was at: {implementation_frames(_main_thread_frames(hung))}")
        else:
            kind = CRASH
            message = f"{record['id']}: CRASH: {crash_description(_read_text(self.folder / f'{worker}.fatal'))}"
        record.update(outcome=kind, message=message, uncovered=False)
        report.user_properties.append(("moe_conformance", record))
        report.when = "call"  # the test's own outcome, as if its call had reported it
        report.longrepr = message
        mark_faulted(self.folder, record, kind)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """The first fault of an architecture is its one failure. Another test of it that faults too (running at
        the same time on another worker) is not judged, as the tests that start after the first."""
        record = dict(report.user_properties).get("moe_conformance")
        if not record or report.when != "call" or record["outcome"] not in FAULTS:
            return
        first = self.first_fault.setdefault(record["arch"], (record, record["outcome"]))
        if first[0] is not record:
            reason = not_judged_reason(*first)
            record.update(outcome=SKIPPED, message=reason, not_judged=True)
            report.outcome, report.longrepr = "skipped", (report.nodeid.split("::")[0], None, reason)


FATAL_LINE = re.compile(r"^Fatal Python error: (.+)$", re.M)
FRAME_LINE = re.compile(r'^\s+File "(.+)", line (\d+) in (.+)$', re.M)


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _frames(block: str) -> list[tuple[str, int, str]]:
    return [(f, int(line), func) for f, line, func in FRAME_LINE.findall(block)]


def _stacks(dump: str) -> list[list[tuple[str, int, str]]]:
    return [frames for frames in map(_frames, dump.split("\n\n")) if frames]


def _main_thread_frames(dump: str) -> list[tuple[str, int, str]]:
    """From a dump of every thread's stack (most recent call first), the thread that was running the test."""
    stacks = _stacks(dump)
    running = [s for s in stacks if any(func.startswith("pytest_runtest") for _, _, func in s)]
    return (running or stacks or [[]])[0]


def crash_description(fatal: str) -> str:
    """The signal and the implementation's frames from Python's fault handler output, or what is known without."""
    reason = FATAL_LINE.search(fatal)
    if not reason:
        return ("the worker process died without a fault report (killed by SIGKILL: the kernel's OOM killer or "
                "another process)")
    stacks = _stacks(fatal[reason.end():])  # the thread that faulted comes first
    return f"the process died: {reason.group(1)}; the implementation was at: {implementation_frames(stacks[0] if stacks else [])}"
