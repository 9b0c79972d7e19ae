"""The suite's command-line options, and the decision whether a run targets the suite: this is the module the
``pytest11`` entry point names, so it is imported by every pytest run of an environment where moe-conformance is
installed. It imports nothing but pytest and the standard library, and reads no environment variable.

The plugin proper (``plugin.py``: the header, ``--impl`` / ``--device`` validation, the table, the results file)
must run in the process that sees every test's report: under pytest-xdist that is the controller, which never
collects the suite and so never loads the suite's ``conftest.py``. So the decision is made here, from the command
line alone, before the session is configured: a run that names the suite (``--pyargs moe_conformance``, a path
inside the package, or one of the suite's own options) gets the plugin in every process; an unrelated run of the
same environment gets nothing but these options in ``pytest --help``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The device table's names (a torch-free module: this one is imported by every pytest run of the environment).
from ..cases.devices import CHOICES as DEVICE_CHOICES, ENV_VAR as DEVICE_VAR  # noqa: E402

LOADS = ("cast", "config_dtype", "both")  # --load: checks/spec.py's LOAD_CHOICES (a test keeps them one)
IMPL_VAR = "MOE_CONFORMANCE_IMPL"  # implementations/loader.py's ENV_VAR (tests/test_impl_option.py keeps them one)

LOAD_VAR = "MOE_CONFORMANCE_LOAD"
PACKAGE = "moe_conformance"  # the installed import name (pyproject: package-dir)
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the package folder, above run/
# The suite's own options (their pytest dest names): setting any of them is asking for the suite.
SUITE_OPTIONS = ("impl", "moe_report", "covered_only", "device", "load", "require_reviewed", "moe_timeout",
                 "memory_limit", "fault_isolation")


def targets_suite(config: pytest.Config) -> bool:
    """Whether this run is a run of the suite: one of the suite's options is set, or an argument names the suite
    (a module of the package under ``--pyargs``, or a path inside the package directory, ``::`` ids included)."""
    if any(config.getoption(name, None) not in (None, False) for name in SUITE_OPTIONS):
        return True
    pyargs = bool(config.getoption("pyargs", False))
    for arg in config.args:
        target = arg.split("::", 1)[0]
        if pyargs and (target == PACKAGE or target.startswith(PACKAGE + ".")):
            return True
        path = Path(target)
        path = (path if path.is_absolute() else config.invocation_params.dir / path).resolve()
        if path == PACKAGE_DIR or PACKAGE_DIR in path.parents:
            return True
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Register the plugin before the session is configured (its ``pytest_configure`` validates the run), in the
    xdist controller as in every worker; an unrelated run is left as it is."""
    if targets_suite(config):
        # by name, as pytest loads plugins: the plugin reads this module's declarations, not the reverse
        import importlib

        importlib.import_module(f"{PACKAGE}.run.plugin").register(config.pluginmanager)
        _isolate(config)


def _isolate(config: pytest.Config) -> None:
    """Contain the implementation's faults in xdist workers (``isolation.py``): a run without ``-n`` (or ``-n 0``)
    gets one worker, unless isolation is off, a debugger is asked for, or xdist is not installed. Before xdist's
    own ``pytest_cmdline_main``, which turns ``-n`` into workers."""
    if hasattr(config, "workerinput"):  # this is a worker already
        return
    if config.getoption("fault_isolation", None) == "off" or not config.pluginmanager.hasplugin("xdist"):
        return
    if config.getoption("usepdb", False) or config.getoption("trace", False) or config.getoption("collectonly", False):
        return
    if not config.option.numprocesses:
        # what xdist's own pytest_cmdline_main makes of -n 1, which may have run already
        config.option.numprocesses, config.option.dist, config.option.tx = 1, "load", ["popen"]
    if config.option.maxworkerrestart is None:
        # each fault ends one worker; the architecture's later tests are skipped, so faults are bounded by the
        # architectures (times the workers that may be running one of its tests at once)
        workers = config.option.numprocesses if isinstance(config.option.numprocesses, int) else os.cpu_count() or 8
        config.option.maxworkerrestart = str(200 * workers)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("moe-conformance")
    group.addoption(
        "--impl",
        default=None,
        metavar="SPEC",
        help=f"implementation under test: 'reference' (default: this project's wrappers), 'llmcompressor' (its "
        f"MoECalibrationModule registry and context), or a dotted module path (or module.path:NAME) defining "
        f"CALIBRATION_WRAPPERS (a registry: block class name -> wrapper class, optionally moe_calibration_context) "
        f"or prepare_model (a model conversion, optionally calibration_mode and CONTRACT_LEVELS) (also ${IMPL_VAR})",
    )
    group.addoption(
        "--moe-report",
        default=None,
        metavar="PATH",
        help="write every conformance result with the environment as JSON to PATH (docs/results-schema.md)",
    )
    group.addoption(
        "--covered-only",
        action="store_true",
        default=False,
        help="for wrapper packages that target some architectures only: an architecture the implementation does "
        "not cover is skipped rather than failed (its 'covered' test and registry_completeness's uncovered "
        "classes); the run still lists every uncovered one",
    )
    group.addoption(
        "--device",
        default=None,
        choices=DEVICE_CHOICES,
        help=f"where blocks and models run: cpu (default), cuda (fails where there is none; several GPUs: one per "
        f"xdist worker) or auto (cuda where available) (also ${DEVICE_VAR})",
    )
    group.addoption(
        "--load",
        default=None,
        choices=LOADS,
        help="how bfloat16 models get their dtype: 'cast' (default: .to(dtype), config.dtype unset), "
        "'config_dtype' (as from_pretrained(dtype=...) leaves config.dtype), or 'both' as separate settings "
        "whose ids end in -cast / -config_dtype (also $MOE_CONFORMANCE_LOAD)",
    )
    group.addoption(
        "--moe-timeout",
        default=None,
        metavar="SECONDS",
        help="time limit of one test (default 120; a fixture entry's timeout_s raises it for its architecture; 0: "
        "none): a test that does not return in time is a TIMEOUT with the implementation's stack, its worker "
        "replaced (also $MOE_CONFORMANCE_TIMEOUT)",
    )
    group.addoption(
        "--memory-limit",
        default=None,
        metavar="GIB",
        help="address space one test of the suite may add on the CPU before an allocation fails (default: a quarter "
        "of the machine's memory, at least 4; 0: none) (also $MOE_CONFORMANCE_MEMORY_LIMIT)",
    )
    group.addoption(
        "--fault-isolation",
        default=None,
        choices=("process", "off"),
        help="process (default): tests run in pytest-xdist workers (one without -n), a worker that crashes, hangs or "
        "faults its device is replaced and its test reported as CRASH / TIMEOUT / DEVICE; off: in this process "
        "(implied by --pdb and --trace)",
    )
    group.addoption(
        "--require-reviewed",
        action="store_true",
        default=False,
        help="canary mode (tox -e tf-newest): registry_completeness also fails for every MoE class of the "
        "installed transformers that no hand-written fixture entry checks, saying per class whether the "
        "implementation already covers it and a derived fixture checks it, or what it needs. Without it, "
        "derived fixtures count as checking",
    )
