"""Measure the rounding the output tolerances must allow: the largest relative error between a correct wrapper
(the reference) and the original, per dtype and kind of comparison, over every architecture of the fixtures.

    python benchmarks/measure_rounding.py --device cuda -j 8            # what docs/checks.md's tolerances are derived from
    python benchmarks/measure_rounding.py --device cuda -j 8 --tf32     # the same with TF32 matmuls allowed
    python benchmarks/measure_rounding.py --device cpu -k glm4_moe_lite # one architecture, on the CPU
    python benchmarks/measure_rounding.py --device cuda --kernels       # which CUDA kernels each dispatch runs

Runs ``output_matches``, ``whole_model`` and ``experts_implementation`` in every setting of the device with the
tolerances lifted (so no comparison stops a check early) and records ``max |got - want| / max |want|`` of
every output comparison, as ``compare_outputs`` computes it. Comparisons are grouped as: ``block`` (a block's
output, wrapper vs original), ``exp_impl <name>`` (the same under an experts implementation), ``model logits``
and ``model block (fed)`` (a whole model's MoE block fed the original's input, in bfloat16/float16). Prints
the figures (a measurement, never asserted) beside the tolerance in force, and anything that did not pass.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from moe_conformance.cases.devices import CHOICES as DEVICE_CHOICES  # torch-free: the device table's names

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHECKED = ("output_matches", "whole_model", "experts_implementation")


def _category(label: str, path: str) -> str:
    if "experts_implementation=" in label:
        return "exp_impl " + label.split("experts_implementation=", 1)[1].split(",")[0].split(" ")[0]
    if path.startswith("logits"):
        return "model logits"
    if "fed the original's input" in path:
        return "model block (fed)"
    return "block"


_worker: dict = {}


def _init(device: str, tf32: bool, counter) -> None:
    """One process of the pool: its GPU (round robin, as xdist workers get theirs), TF32 as asked, and the
    tolerances lifted with every comparison recorded."""
    import torch

    from moe_conformance.cases import devices
    from moe_conformance.checks import verdicts

    torch.set_num_threads(1)
    with counter.get_lock():
        index, counter.value = counter.value, counter.value + 1
    devices.prepare(device, worker=f"gw{index}")
    if tf32 and device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    seen: dict[tuple[str, str], list] = {}

    def record(label, path, dtype, relative):
        entry = seen.setdefault((devices.dtype_name(dtype), _category(label, path)), [0.0, "", 0])
        entry[2] += 1
        if relative > entry[0] or not entry[1]:
            entry[0], entry[1] = relative, f"{label}: {path}"

    measuring = verdicts.measuring_errors(record)
    measuring.__enter__()  # for the life of this pool process
    _worker["seen"], _worker["device"] = seen, device


def _measure(model_type: str) -> tuple[dict, list[str]]:
    from moe_conformance import load_cases, load_implementation
    from moe_conformance.checks.outcomes import evaluate
    from moe_conformance.checks.table import CHECKS

    case = next(c for c in load_cases() if c.model_type == model_type)
    impl = load_implementation("reference")
    seen = _worker["seen"]
    seen.clear()
    problems = []
    for name in CHECKED:
        for setting in CHECKS[name].settings(case, device=_worker["device"]):
            outcome = evaluate(case, CHECKS[name], setting, impl)
            if outcome.kind not in ("passed", "n/a", "skipped"):
                problems.append(f"{outcome.kind}: {outcome.message.splitlines()[0][:300] if outcome.message else setting.id}")
    return {"|".join(k): v for k, v in seen.items()}, problems


def kernels(device: str) -> None:
    """The CUDA kernels the original's experts run under batched_mm and grouped_mm, per dtype, on one
    architecture with fused experts (the first of the fixtures that has them)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from moe_conformance import load_cases
    from moe_conformance.cases import devices
    from moe_conformance.cases.devices import dtype_name
    from moe_conformance.cases.setting import Setting, build_block
    from moe_conformance.checks.routing import dispatched_experts

    devices.prepare(device)
    for case in load_cases():
        if case.absent_reason():
            continue
        probe = build_block(case, Setting(case.model_type, "kernels", device=device), None).block
        if dispatched_experts(getattr(probe, "experts", None)):
            break
    for dtype in devices.dtypes_for(device):
        for name in ("eager", "batched_mm", "grouped_mm"):
            run = build_block(case, Setting(case.model_type, "kernels", dtype=dtype, device=device), (2, 5))
            run.block.experts.config._experts_implementation = name
            with torch.no_grad():
                run.block(*run.args, **run.kwargs)  # warm-up: lazy initialisation stays out of the trace
                with profile(activities=[ProfilerActivity.CUDA]) as trace:
                    run.block(*run.args, **run.kwargs)
                    torch.cuda.synchronize()
            names = sorted({e.name for e in trace.events() if any(w in e.name.lower() for w in ("gemm", "mm", "cutlass", "grouped"))})
            print(f"kernels {case.model_type} {dtype_name(dtype)} {name}: "
                  + "; ".join(n[:90] for n in names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    parser.add_argument("-j", "--jobs", type=int, default=1, help="processes (on several GPUs, spread round robin)")
    parser.add_argument("-k", dest="keyword", default=None, help="only architectures whose model_type contains this")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (the suite switches them off)")
    parser.add_argument("--kernels", action="store_true", help="list the CUDA kernels each experts implementation runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args()

    from moe_conformance import load_cases
    from moe_conformance.cases import devices

    device = devices.resolve(args.device)
    if args.kernels:
        kernels(device)
        return
    import torch
    import transformers

    cases = [c.model_type for c in load_cases() if not c.absent_reason() and (not args.keyword or args.keyword in c.model_type)]
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, device {device}"
          f"{' (TF32 allowed)' if args.tf32 else ''}, {len(cases)} architectures, {args.jobs} processes")
    start = time.perf_counter()
    totals: dict[str, list] = {}
    problems: list[str] = []
    context = multiprocessing.get_context("spawn")
    counter = context.Value("i", 0)
    with ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_init, initargs=(device, args.tf32, counter)) as pool:
        for seen, trouble in pool.map(_measure, cases):
            problems += trouble
            for key, (relative, where, count) in seen.items():
                total = totals.setdefault(key, [0.0, "", 0])
                total[2] += count
                if relative >= total[0]:
                    total[0], total[1] = relative, where
    print(f"{time.perf_counter() - start:.1f} s")
    tolerances = devices.DEVICES[device].tolerances
    print(f"{'dtype':9} {'comparison':22} {'max rel. error':>14} {'tolerance':>9} {'comparisons':>11}  at")
    for key in sorted(totals):
        dtype, category = key.split("|")
        relative, where, count = totals[key]
        print(f"{dtype:9} {category:22} {relative:14.3g} {tolerances.get(dtype, float('nan')):9.3g} {count:11d}  {where[:140]}")
    for line in problems:
        print("not passed:", line)
    if args.json:
        args.json.write_text(json.dumps({"device": devices.describe(device), "tf32": args.tf32, "transformers": transformers.__version__,
                                         "torch": torch.__version__, "figures": totals, "problems": problems}, indent=1))


if __name__ == "__main__":
    main()
