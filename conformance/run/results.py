"""The results file (``pytest conformance --moe-report PATH``): every test's outcome inside an envelope that says
what ran where — suite version and commit, implementation and its version, torch, transformers, Python,
platform, device, duration, exit code, summary counts, completeness.

The format is ``results.schema.json`` beside this module (JSON Schema 2020-12), documented in
``docs/results-schema.md``; ``SCHEMA_VERSION`` changes when a field is removed or changes meaning (adding one
does not). This module imports neither torch nor pytest at import time, so report tools can use
``suite_status`` and ``load_schema`` cheaply.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import tempfile
from collections import Counter
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from ..vocabulary import RED  # the standard library only: this module stays light

__all__ = ["SCHEMA_ID", "SCHEMA_VERSION", "build", "load_schema", "suite_info", "suite_status", "summary"]

SCHEMA_ID = "moe-conformance/results"
SCHEMA_VERSION = 1
DISTRIBUTION = "moe-conformance"


def load_schema() -> dict:
    """The JSON Schema of the results file, as shipped with the package."""
    return json.loads(resources.files(__package__).joinpath("results.schema.json").read_text())


def _package_dir() -> Path:
    return Path(__file__).resolve().parents[1]  # the package folder


def suite_info() -> dict[str, Any]:
    """The suite's version, and its git commit when it runs from a checkout of this project (not when the
    package is installed inside some other project's repository: the checkout's top level must hold this very
    package directory)."""
    try:
        version = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        version = None
    info: dict[str, Any] = {"name": DISTRIBUTION, "version": version, "commit": None, "dirty": None, "source": "package"}
    here = _package_dir()

    def git(*args: str, where: Path = here) -> str | None:
        try:
            run = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return run.stdout.strip() if run.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top and (Path(top) / here.name).resolve() == here:
        info["commit"] = git("rev-parse", "HEAD")
        # reports/ holds what report runs write (results, reports, the page): a checkout regenerating them is
        # not running changed code
        status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)reports", where=Path(top))
        info["dirty"] = None if status is None else bool(status)
        info["source"] = "git"
    return info


def implementation_info(impl: Any, spec: str) -> dict[str, Any]:
    """What was tested: the spec given, the implementation's name, its version (the distribution that ships its
    top-level module, where one does) and its one-line description."""
    version = getattr(impl, "version", "") or None
    top = impl.name.split(":")[0].split(".")[0]
    if version is None and impl.name == "reference":
        version = suite_info()["version"]
    elif version is None:
        try:
            dists = metadata.packages_distributions().get(top, [])
            version = metadata.version(dists[0]) if dists else None
        except Exception:  # an odd metadata entry must not cost the run its results
            version = None
    return {"spec": spec, "name": impl.name, "version": version, "description": impl.describe()}


def device_info(device: str | None) -> dict[str, Any]:
    """The device the checks ran on (``--device``, where the suite has it; else the CPU): its kind and model."""
    device = device or "cpu"
    kind, _, index = device.partition(":")
    model = None
    if kind == "cpu":
        model = _cpu_model()
    else:
        try:
            import torch

            module = torch.get_device_module(kind)
            model = module.get_device_name(int(index or 0)) if module.is_available() else None
        except Exception:  # a device torch cannot name: the kind still says where it ran
            model = None
    return {"name": device, "kind": kind, "model": model}


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def summary(results: list[dict], other_failures: list[dict], exit_code: int) -> dict[str, Any]:
    """Counts per outcome kind, and whether the suite passed: exit code 0, no failed or error outcome and no
    failure outside the per-architecture checks (a red run is never reported green)."""
    outcomes = Counter(r["outcome"] for r in results)
    return {
        "status": suite_status(exit_code, results, other_failures),
        "total": len(results),
        "outcomes": dict(sorted(outcomes.items())),
        "other_failures": len(other_failures),
    }


def suite_status(exit_code: int | None, results: list[dict], other_failures: list[dict] | None) -> str:
    red = exit_code != 0 or bool(other_failures) or any(r["outcome"] in RED for r in results)
    return "failed" if red else "passed"


def build(
    *,
    impl: Any,
    spec: str,
    device: str | None,
    started: float,
    finished: float,
    exit_code: int,
    selection: str | None,
    checks: list[dict],
    completeness: dict | None,
    other_failures: list[dict],
    results: list[dict],
    deselected: int = 0,
) -> dict[str, Any]:
    """The results file's content. ``environment`` keeps the keys earlier files had (implementation as its
    description string, transformers, torch, python, platform) and gains the device."""
    import torch
    import transformers

    implementation = implementation_info(impl, spec)
    return {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "suite": suite_info(),
        "implementation": implementation,
        "environment": {
            "implementation": implementation["description"],
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "device": device_info(device),
            "torch_threads": torch.get_num_threads(),
        },
        "started": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(finished - started, 3),
        "exit_code": int(exit_code),
        "selection": selection or None,
        "deselected": int(deselected),
        "summary": summary(results, other_failures, int(exit_code)),
        "checks": checks,
        "completeness": completeness,
        "other_failures": other_failures,
        "results": results,
    }


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
