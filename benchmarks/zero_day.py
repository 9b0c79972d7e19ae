"""Zero-day coverage, printed as figures (never asserted): what the reference covers and the suite checks for a
block on the day transformers adds it, before anyone writes its `wrappers/table.py` line or fixture entry.

    python benchmarks/zero_day.py            # all standard v5 architectures, pytest -n 1
    python benchmarks/zero_day.py -n 0 -k qwen3_moe
    python benchmarks/zero_day.py --blocks ErgoMoE Kolibri1_1SparseMoeBlock MiniCPM5MoeMoE   # a release's new ones

It takes every hand-written fixture entry whose block the installed transformers builds with standard v5
fused experts (`wrappers.blocks.mechanism_for_class` -> FusedExpertsMechanism), and, in a scratch copy of the
project (a temporary folder; the checkout is not touched):

- removes those entries from the scratch `fixtures/*.toml`;
- makes the scratch `wrappers` forget those blocks' table lines and registered names once it has imported its
  modules (as if the lines had never been written; the names of hand-written mechanisms stay);

then runs `pytest moe_conformance` there (the scratch packages first on the path, `MOE_CONFORMANCE_FIXTURES` at
the scratch fixtures) on the derived cases and the completeness test, and prints, per removed block, whether
the reference still covers it, whether a fixture was derived, and whether every check passed; each failure
with its reason.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The scratch copy is laid out as the installed package is (moe_conformance with its reference, wrappers and
# fixtures inside), so that on PYTHONPATH it shadows the checkout's editable install.
COPIED = {"conformance": "moe_conformance", "wrappers": "moe_conformance/wrappers",
          "reference": "moe_conformance/reference", "fixtures": "moe_conformance/fixtures",
          "pyproject.toml": "pyproject.toml"}
_TABLE = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")


def standard_v5_entries(only: set[str] | None = None) -> dict[str, str]:
    """model_type -> block class of the hand-written entries whose block a generic mechanism serves as fused
    v5 experts in the installed transformers (of those named in ``only``, where given)."""
    from moe_conformance.cases import load_cases
    from moe_conformance.wrappers.blocks import FusedExpertsMechanism, mechanism_for_class

    entries = {}
    for case in load_cases(derive=False):
        if only is not None and case.block not in only:
            continue
        if not case.absent_reason() and mechanism_for_class(case.block_class).mechanism is FusedExpertsMechanism:
            entries[case.model_type] = case.block
    return entries


def drop_tables(toml_text: str, model_types: set[str]) -> str:
    """The TOML text without the `[architectures.<model_type>]` tables (and their sub-tables) named."""
    out, dropping = [], False
    for line in toml_text.splitlines(keepends=True):
        header = _TABLE.match(line)
        if header:
            name = header.group(1).strip()
            dropping = any(name == f"architectures.{m}" or name.startswith(f"architectures.{m}.") for m in model_types)
        if not dropping:
            out.append(line)
    return "".join(out)


def make_scratch(root: Path, model_types: set[str], block_names: set[str]) -> None:
    for name, target in COPIED.items():
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / target)
    for path in (root / COPIED["fixtures"]).glob("*.toml"):
        path.write_text(drop_tables(path.read_text(), model_types))
    # After every wrappers module has registered its names: forget the standard blocks' names, so that only
    # the structural coverage (the registry's class resolver) can cover them.
    with open(root / COPIED["wrappers"] / "__init__.py", "a") as f:
        f.write(textwrap.dedent(f"""

            # -- benchmarks/zero_day.py scratch copy: these blocks' table lines were never written --
            from moe_conformance.reference.calibration import standardize_lookup_name as _standardize
            for _name in {sorted(block_names)!r}:
                if BLOCK_MECHANISMS.get(_name, GENERIC) is GENERIC:
                    BLOCK_MECHANISMS.pop(_name, None)
                if MoECalibrationModule.get_value_from_registry(_name) is CalibrationMoEBlock:
                    del MoECalibrationModule._registry[_standardize(_name)]
            GENERIC_BLOCKS = tuple(
                name for name in MoECalibrationModule.registered_names()
                if MoECalibrationModule.get_value_from_registry(name) is CalibrationMoEBlock
            )
        """))


def scratch_env(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(root), "MOE_CONFORMANCE_FIXTURES": str(root / COPIED["fixtures"])}


_INSPECT = """
import json, sys
import moe_conformance as conformance
from moe_conformance import wrappers
from moe_conformance.cases import load_cases
from moe_conformance.cases.derived import HAND, derived_cases
from moe_conformance.cases.discovery import not_calibration_targets
from moe_conformance.implementations.loader import load_implementation
hand = load_cases(derive=False)
derived = derived_cases(hand, excluded=frozenset(not_calibration_targets()))
impl = load_implementation("reference")
print(json.dumps({
    "packages": [conformance.__file__, wrappers.__file__],
    "derived": {c.block: c.model_type for c in derived.cases},
    "problems": derived.problems,
    "registered": sorted(impl.wrappers),
    "covered": {block: impl.wrapper_for(block) is not None for block in json.loads(sys.argv[1])},
}))
"""


def inspect_scratch(root: Path, blocks: set[str]) -> dict:
    run = subprocess.run([sys.executable, "-c", _INSPECT, json.dumps(sorted(blocks))], cwd=root, env=scratch_env(root), capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"zero_day: the scratch copy does not load:\n{run.stderr[-3000:]}")
    info = json.loads(run.stdout.strip().splitlines()[-1])
    if not all(Path(p).resolve().is_relative_to(root.resolve()) for p in info["packages"]):
        sys.exit(f"zero_day: the scratch run imported {info['packages']}, not the scratch copy at {root}")
    from moe_conformance.reference.calibration import standardize_lookup_name

    still = sorted(b for b in blocks if standardize_lookup_name(b) in info["registered"])
    if still:
        sys.exit(f"zero_day: the scratch wrappers still register {still}")
    return info


def run_suite(root: Path, model_types: list[str], workers: str, extra_k: str | None) -> tuple[dict, float]:
    report = root / "zero_day_results.json"
    select = " or ".join([f"{m}-" for m in model_types] + ["registry_completeness"])
    if extra_k:
        select = f"({select}) and ({extra_k})"
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "moe_conformance", "-q", "-p", "no:cacheprovider", "-n", workers, "-k", select,
         "--moe-report", str(report)],
        cwd=root, env=scratch_env(root), capture_output=True, text=True,
    )
    elapsed = time.perf_counter() - start
    if not report.exists():
        sys.exit("zero_day: pytest wrote no results (it did not run); try it by hand in a scratch copy")
    return json.loads(report.read_text()), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", default="1", help="pytest-xdist workers for the scratch run (default 1)")
    parser.add_argument("-k", default=None, help="narrow the scratch run further (a pytest -k expression)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy and print where it is")
    parser.add_argument("--blocks", nargs="+", default=None, help="only these block classes' hand entries and names removed")
    args = parser.parse_args()

    import torch
    import transformers

    entries = standard_v5_entries(set(args.blocks) if args.blocks else None)
    blocks = set(entries.values())
    if args.blocks and blocks != set(args.blocks):
        sys.exit(f"zero_day: no hand entry of a block served as standard fused experts for {sorted(set(args.blocks) - blocks)}")
    root = Path(tempfile.mkdtemp(prefix="moe-zero-day-"))
    try:
        make_scratch(root, set(entries), blocks)
        info = inspect_scratch(root, blocks)
        derived = info["derived"]
        results, elapsed = run_suite(root, sorted(derived.values()), args.n, args.k)
    finally:
        if args.keep:
            print(f"scratch copy kept at {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    by_arch: dict[str, list[dict]] = defaultdict(list)
    for r in results["results"]:
        if r.get("fixture") == "derived":
            by_arch[r["arch"]].append(r)
    print(f"zero-day coverage: transformers {transformers.__version__}, torch {torch.__version__}; "
          f"scratch run `pytest moe_conformance -n {args.n}` {elapsed:.1f} s")
    print(f"{len(blocks)} blocks served by FusedExpertsMechanism had a hand entry and a registered name; both removed")
    covered = [b for b in sorted(blocks) if info["covered"].get(b)]
    checked = [b for b in sorted(blocks) if b in derived]
    passing, failing, unselected = [], [], []
    for block in checked:
        outcomes = by_arch.get(derived[block], [])
        bad = [r for r in outcomes if r["outcome"] in ("failed", "error")]
        if not outcomes and args.k:
            unselected.append(block)  # left out by -k: neither passed nor failed
        else:
            (failing if bad or not outcomes else passing).append(block)
    print(f"  covered by the reference without a registered name: {len(covered)}/{len(blocks)}")
    print(f"  checked by a derived fixture:                        {len(checked)}/{len(blocks)}")
    print(f"  covered, and every check passes:                     {len([b for b in passing if b in covered])}/{len(blocks)}"
          + (f" ({len(unselected)} left out by -k {args.k!r})" if unselected else ""))
    completeness = results.get("completeness") or {}
    if completeness:
        print(f"  registry_completeness in the scratch run: {completeness.get('covered')} covered of "
              f"{completeness.get('found')} found, uncovered {completeness.get('no_wrapper')}, unchecked {completeness.get('no_fixture')}")
    if args.blocks:  # a few named: one line each
        for block in sorted(blocks):
            outcomes = by_arch.get(derived.get(block, ""), [])
            passed = sum(r["outcome"] == "passed" for r in outcomes)
            print(f"  {block}: covered {info['covered'].get(block)}, derived fixture {derived.get(block)}, {passed}/{len(outcomes)} tests passed")
    for block in sorted(blocks - set(checked)):
        print(f"no fixture derived: {block}: {info['problems'].get(block, '?')}")
    for block in failing:
        outcomes = by_arch.get(derived[block], [])
        bad = [r for r in outcomes if r["outcome"] in ("failed", "error")]
        checks = sorted({r["check"] for r in bad})
        first = bad[0]["message"].splitlines()[0][:300] if bad else "no test ran"
        print(f"fails: {block} ({derived[block]}): {len(bad)}/{len(outcomes)} tests, checks {', '.join(checks)}: {first}")


if __name__ == "__main__":
    main()
