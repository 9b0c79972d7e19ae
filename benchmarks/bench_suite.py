"""Wall time of the conformance suite, and where it goes, printed as figures (never asserted).

    python benchmarks/bench_suite.py                          # this checkout
    python benchmarks/bench_suite.py --baseline ../old-tree   # and an older tree, measured in the same run
    python benchmarks/bench_suite.py --arch qwen3_moe --rounds 2
    python benchmarks/bench_suite.py --per-arch               # also every architecture alone
    python benchmarks/bench_suite.py --threads                # one architecture quiet and beside a CPU-bound job,
                                                              # with the suite's one torch thread and torch's default

Each wall figure is one ``pytest conformance`` run in a fresh interpreter, start-up included, as a wrapper author
sees it: one architecture (``-k <arch>-``, the default fault isolation: one xdist worker) and the whole suite
with ``-n 2``. Start-up is the same command with ``--collect-only`` (imports, the class scan, fixtures,
collection). Each check's share is the sum of its tests' durations in the whole run's results file. Building
(blocks, models and inputs drawn from the fixtures) is measured in this process, on the one architecture, for
this checkout only. Targets: one architecture at most 5 s, the whole suite at most 45 s, on a quiet 2-core
machine (the rounds alternate the trees, so both see the same machine).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGETS = {"one architecture": 5.0, "whole suite (-n 2)": 45.0}


def installed(tree: Path, into: Path) -> dict[str, str]:
    """The environment that runs ``tree``'s suite: its package built and installed into ``into`` (ahead of any
    other install on the path); this checkout runs as installed already."""
    if tree == REPO:
        return dict(os.environ)
    wheels = into / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(tree)]
    # this environment's setuptools where it can build (no network needed), pip's isolated build otherwise
    if subprocess.run([*build, "--no-build-isolation"], capture_output=True).returncode:
        subprocess.run(build, check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(into / "site"), *map(str, wheels.glob("*.whl"))], check=True)
    return {**os.environ, "PYTHONPATH": str(into / "site")}


def timed(tree: Path, env: dict[str, str], *args: str) -> tuple[float, str]:
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider", *args],
                         cwd=tree, capture_output=True, text=True, env={**env, "OMP_NUM_THREADS": "1"})
    elapsed = time.perf_counter() - start
    tail = [line for line in run.stdout.splitlines() if " in " in line and ("passed" in line or "failed" in line or "selected" in line)]
    return elapsed, (tail[-1] if tail else f"exit {run.returncode}: {run.stderr[-300:]}").strip("= ")


def measure(tree: Path, env: dict[str, str], arch: str, report: Path) -> dict:
    figures = {}
    figures["start-up (--collect-only, one architecture)"] = timed(tree, env, "--collect-only", "-k", f"{arch}-")
    figures["one architecture"] = timed(tree, env, "-k", f"{arch}-")
    figures["whole suite (-n 2)"] = timed(tree, env, "-n", "2", "--moe-report", str(report))
    return figures


def check_shares(report: Path) -> Counter:
    data = json.loads(report.read_text())
    shares = Counter()
    for record in data["results"]:
        shares[record["check"]] += record.get("duration_s", 0.0)
    return shares


def building_share(arch: str) -> tuple[float, float]:
    """(seconds building, seconds in all checks) of every setting of ``arch``, in this process."""
    from moe_conformance import load_cases, load_implementation
    from moe_conformance.cases.arch import ArchCase
    from moe_conformance.checks.outcomes import evaluate
    from moe_conformance.checks.table import CHECKS

    case = next(c for c in load_cases() if c.model_type == arch)
    impl = load_implementation("reference")
    case.block_class  # the modeling module's import is start-up, not building
    spent = [0.0]

    def timing(method):
        def timed_method(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start
        return timed_method

    originals = {name: getattr(ArchCase, name) for name in ("make_block", "make_model", "make_inputs", "make_model_inputs")}
    for name, method in originals.items():
        setattr(ArchCase, name, timing(method))
    try:
        start = time.perf_counter()
        for spec in CHECKS.values():
            for setting in spec.settings(case):
                evaluate(case, spec, setting, impl)
        total = time.perf_counter() - start
    finally:
        for name, method in originals.items():
            setattr(ArchCase, name, method)
    return spent[0], total


@contextlib.contextmanager
def cpu_bound_background_job():
    """One busy-looping process per CPU, as another CI job beside the suite would be; stopped on exit."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(1.0)  # let them get scheduled
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def thread_figures(arch: str) -> None:
    """Why the suite runs torch with one thread: one architecture with it and with torch's default (a thread per
    CPU), on a quiet machine and beside a CPU-bound job."""
    quiet = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    for load, manager in (("quiet", contextlib.nullcontext), ("beside a CPU-bound job", cpu_bound_background_job)):
        for threads, env in (("1 thread (the suite's)", quiet), (f"{os.cpu_count()} threads", {**quiet, "OMP_NUM_THREADS": str(os.cpu_count())})):
            with manager():
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider", "-k", f"{arch}-"],
                               cwd=REPO, capture_output=True, env=env)
                print(f"-k {arch}-, {load}, {threads}: {time.perf_counter() - start:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="an older tree of this project to measure in the same run")
    parser.add_argument("--arch", default="glm4_moe_lite", help="the one architecture (default glm4_moe_lite)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds, each tree once per round (default 1)")
    parser.add_argument("--per-arch", action="store_true", help="also every architecture alone, this checkout")
    parser.add_argument("--threads", action="store_true", help="only the thread figures")
    args = parser.parse_args()
    import platform

    import torch
    import transformers

    print(f"transformers {transformers.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), load {os.getloadavg()[0]:.1f}")
    if args.threads:
        thread_figures(args.arch)
        return
    trees = {"this checkout": REPO, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    with tempfile.TemporaryDirectory() as scratch:
        envs = {name: installed(tree, Path(scratch) / name.replace(" ", "-")) for name, tree in trees.items()}
        runs: dict[str, list[dict]] = {name: [] for name in trees}
        shares: dict[str, Counter] = {}
        for _ in range(args.rounds):
            for name, tree in reversed(trees.items()):  # the baseline first: a warm disk cache favours neither
                report = Path(scratch) / f"{name.replace(' ', '-')}.json"
                runs[name].append(measure(tree, envs[name], args.arch, report))
                shares[name] = check_shares(report)
    print(f"\n{'figure':<46}" + "".join(f"{name:>16}" for name in trees) + "   target")
    for figure in runs["this checkout"][0]:
        best = {name: min(r[figure][0] for r in rounds) for name, rounds in runs.items()}
        target = f"<= {TARGETS[figure]:g} s" if figure in TARGETS else ""
        print(f"{figure:<46}" + "".join(f"{best[name]:>14.1f} s" for name in trees) + f"   {target}")
    for name, rounds in runs.items():
        print(f"  {name}: " + "; ".join(f"{figure.split(' (')[0]}: {r[figure][1]}" for r in rounds[:1] for figure in r))
    print("\neach check's share of the whole suite's test time (sum of test durations, both workers)")
    for name, counter in shares.items():
        total = sum(counter.values()) or 1.0
        print(f"  {name}: {total:.1f} s: " + ", ".join(f"{check} {100 * s / total:.0f} %" for check, s in counter.most_common()))
    if args.per_arch:
        from moe_conformance import load_cases

        print("\neach architecture alone (-k <arch>-), this checkout")
        for case in load_cases():
            if not case.absent_reason():
                seconds, summary = timed(REPO, dict(os.environ), "-k", f"{case.model_type}-")
                print(f"  {case.model_type:<28} {seconds:6.1f} s   {summary}")
    building, total = building_share(args.arch)
    print(f"\nbuilding blocks, models and inputs, this checkout, -k {args.arch} in process: {building:.2f} s of "
          f"{total:.2f} s in the checks ({100 * building / total:.0f} %)")


if __name__ == "__main__":
    main()
