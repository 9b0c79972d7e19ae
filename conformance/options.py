"""The suite's command-line options, and nothing else: this is the module the ``pytest11`` entry point names, so
it is imported by every pytest run of an environment where moe-conformance is installed. It imports nothing but
pytest and reads no environment variable; the plugin proper (``plugin.py``: the header, the implementation, the
table) is registered by the suite's ``conftest.py`` only in runs that collect the suite, so an unrelated run
only sees these options in ``pytest --help``.
"""

from __future__ import annotations

import pytest

IMPL_VAR = "MOE_CONFORMANCE_IMPL"
DEVICE_VAR = "MOE_CONFORMANCE_DEVICE"
DEVICE_CHOICES = ("cpu", "cuda", "auto")


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
        choices=("cast", "config_dtype", "both"),
        help="how bfloat16 models get their dtype: 'cast' (default: .to(dtype), config.dtype unset), "
        "'config_dtype' (as from_pretrained(dtype=...) leaves config.dtype), or 'both' as separate settings "
        "whose ids end in -cast / -config_dtype (also $MOE_CONFORMANCE_LOAD)",
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
