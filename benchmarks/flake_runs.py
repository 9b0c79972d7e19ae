"""Repeat the whole conformance suite with different run seeds and count flakes (printed, never asserted).

    python benchmarks/flake_runs.py --runs 20 -n 2
    python benchmarks/flake_runs.py --runs 5 --first-seed 5     # seeds 5..9, to spread the runs over machines
    python benchmarks/flake_runs.py --runs 5 -n 8 --device cuda  # on the GPU(s)

Run i sets ``MOE_CONFORMANCE_SEED=i``: every block, input and model is drawn anew (reproducibly), and the
hypothesis profile stays ``ci``. A flake is a test that fails in some run: against a correct implementation
every outcome must be the same under every seed. Prints, per run, its wall time and counts, then the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from moe_conformance.cases.devices import CHOICES as DEVICE_CHOICES  # torch-free: the device table's names

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + runs - 1")
    parser.add_argument("-n", "--workers", default="2")
    parser.add_argument("--impl", default="reference")
    parser.add_argument("--device", default="cpu", choices=DEVICE_CHOICES)
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="keep each run's results JSON there (run<seed>.json; reports/generate.py renders them)")
    args = parser.parse_args()
    import transformers

    outcomes: dict[str, Counter] = defaultdict(Counter)
    print(f"transformers {transformers.__version__}, {os.cpu_count()} CPUs, {args.runs} runs, -n {args.workers}, --device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.results_dir:
            args.results_dir.mkdir(parents=True, exist_ok=True)
        for seed in range(args.first_seed, args.first_seed + args.runs):
            report = (args.results_dir or Path(tmp)) / f"run{seed}.json"
            env = {**os.environ, "MOE_CONFORMANCE_SEED": str(seed), "HYPOTHESIS_PROFILE": "ci"}
            start = time.perf_counter()
            run = subprocess.run(
                [sys.executable, "-m", "pytest", "conformance", "-q", "-p", "no:cacheprovider", "-n", args.workers,
                 "--impl", args.impl, "--device", args.device, f"--moe-report={report}"],
                cwd=REPO, env=env, capture_output=True, text=True,
            )
            elapsed = time.perf_counter() - start
            results = json.loads(report.read_text())["results"] if report.exists() else []
            for r in results:
                outcomes[r["nodeid"]][r["outcome"]] += 1
            counts = Counter(r["outcome"] for r in results)
            print(f"seed {seed:2d}: exit {run.returncode}, {elapsed:6.1f} s, " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
            if run.returncode not in (0, 1) or not results:
                # Exit 2-5 (interrupted, internal or usage error, no tests): nothing was measured, so no flake
                # figure can be printed; e.g. exit 4 where the project is not installed and --impl is unknown.
                sys.exit(f"seed {seed}: the suite did not run (exit {run.returncode}); no flake figure:\n"
                         + (run.stderr or run.stdout)[-2000:])
    flaky = sorted(test for test, seen in outcomes.items() if seen["failed"] or seen["error"])
    print(f"\n{len(outcomes)} tests x {args.runs} runs: {len(flaky)} flaky (failed or a harness error in some run)")
    for test in flaky:
        print(f"  {test}: {dict(outcomes[test])}")


if __name__ == "__main__":
    main()
