"""Wall time of the conformance suite, printed as figures (never asserted).

    python benchmarks/bench_suite.py                    # -k glm4_moe_lite, then the whole suite with -n 2
    python benchmarks/bench_suite.py --per-arch         # also every architecture alone (-k <model_type>)

Each figure is one run of ``pytest conformance`` in a fresh interpreter, start-up and imports included, as a
wrapper author sees it. Targets (issues 2 and 3): <= 8 s for one architecture, <= 60 s for the whole suite
with -n 2 on a 2-core machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ARCH_TARGET_S = 8.0  # one architecture, `pytest conformance -k ARCH`
SUITE_TARGET_S = 60.0  # the whole suite with -n 2


def timed(*pytest_args: str) -> tuple[float, str]:
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider", *pytest_args],
        cwd=REPO, capture_output=True, text=True,
    )
    elapsed = time.perf_counter() - start
    summary = next((line for line in reversed(run.stdout.splitlines()) if " in " in line and ("passed" in line or "failed" in line)), "?")
    return elapsed, summary.strip("= ")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-arch", action="store_true", help="time every architecture alone as well")
    args = parser.parse_args()
    import torch
    import transformers

    from conformance.cases import load_cases

    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {__import__('os').cpu_count()} CPUs")
    rows = [("-k glm4_moe_lite (-n 0)", ARCH_TARGET_S, *timed("-n", "0", "-k", "glm4_moe_lite"))]
    rows.append(("whole suite (-n 2)", SUITE_TARGET_S, *timed("-n", "2")))
    if args.per_arch:
        for case in load_cases():
            if not case.absent_reason():
                # "<type>-" matches that architecture's test ids only (plain "glm4_moe" also matches glm4_moe_lite)
                rows.append((f"-k {case.model_type}- (-n 0)", ARCH_TARGET_S, *timed("-n", "0", "-k", f"{case.model_type}-")))
    width = max(len(r[0]) for r in rows)
    for name, target, seconds, summary in rows:
        verdict = "within" if seconds <= target else "OVER"
        print(f"{name:<{width}}  {seconds:6.1f} s  {verdict} target {target:g} s   {summary}")
    if args.per_arch:
        per_arch = rows[2:]
        slowest = max(per_arch, key=lambda row: row[2])
        over = sum(row[2] > ARCH_TARGET_S for row in per_arch)
        print(f"{len(per_arch)} architectures alone: slowest {slowest[0]} {slowest[2]:.1f} s; {over} over {ARCH_TARGET_S:g} s")


if __name__ == "__main__":
    main()
