"""Wall time of the conformance suite, printed as figures (never asserted).

    python benchmarks/bench_suite.py                    # -k glm4_moe_lite, then the whole suite with -n 2
    python benchmarks/bench_suite.py --per-arch         # also every architecture alone (-k <model_type>)
    python benchmarks/bench_suite.py --threads          # -k glm4_moe_lite quiet and beside a CPU-bound job,
                                                        # with the suite's one thread and with torch's default

Each figure is one run of ``pytest conformance`` in a fresh interpreter, start-up and imports included, as a
wrapper author sees it. Targets (issues 2 and 3): <= 8 s for one architecture, <= 60 s for the whole suite
with -n 2 on a 2-core machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ARCH_TARGET_S = 8.0  # one architecture, `pytest conformance -k ARCH`
SUITE_TARGET_S = 60.0  # the whole suite with -n 2


def timed(*pytest_args: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider", *pytest_args],
        cwd=REPO, capture_output=True, text=True, env=env,
    )
    elapsed = time.perf_counter() - start
    summary = next((line for line in reversed(run.stdout.splitlines()) if " in " in line and ("passed" in line or "failed" in line)), "?")
    return elapsed, summary.strip("= ")


@contextlib.contextmanager
def cpu_bound_background_job():
    """One busy-looping process per CPU, as another CI job or a build beside the suite would be; stopped on exit."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(1.0)  # let them get scheduled
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def thread_rows() -> list[tuple[str, float, float, str]]:
    """`-k glm4_moe_lite` with the suite's default (one torch thread) and with torch's default (a thread per CPU,
    what the suite did before), on a quiet machine and beside a CPU-bound job."""
    quiet = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    torch_default = {**quiet, "OMP_NUM_THREADS": str(os.cpu_count() or 1)}
    rows = []
    for load, manager in (("quiet", contextlib.nullcontext), ("beside a CPU-bound job", cpu_bound_background_job)):
        for threads, env in (("suite default, 1 thread", quiet), (f"OMP_NUM_THREADS={os.cpu_count()}", torch_default)):
            with manager():
                rows.append((f"-k glm4_moe_lite (-n 0), {load}, {threads}", ARCH_TARGET_S, *timed("-n", "0", "-k", "glm4_moe_lite", env=env)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-arch", action="store_true", help="time every architecture alone as well")
    parser.add_argument("--threads", action="store_true", help="only the thread figures: quiet and beside a CPU-bound job")
    args = parser.parse_args()
    import torch
    import transformers

    from moe_conformance.cases import load_cases

    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {__import__('os').cpu_count()} CPUs")
    if args.threads:
        rows = thread_rows()
        width = max(len(r[0]) for r in rows)
        for name, target, seconds, summary in rows:
            print(f"{name:<{width}}  {seconds:6.1f} s   {summary}")
        return
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
