"""Forward time of the reference calibration wrapper on real transformers MoE blocks (printed, never asserted).

    python benchmarks/bench_calibration_forward.py                 # GPU: real layer sizes, bf16
    python benchmarks/bench_calibration_forward.py --cpu           # CPU: the suite's tiny fixture sizes, float32
    python benchmarks/bench_calibration_forward.py --profile glm   # also torch.profiler on the rows matching glm

GPU mode builds each layer from its transformers config class (random weights, bf16, on the GPU): GLM-4.7-Flash
(64 experts, top-4, hidden 2048 / moe intermediate 1536), Qwen3.5-35B-A3B (256, 8, 2048/512) and DeepSeek-V3
(256, 8, 7168/2048), at 512 and 4096 tokens. Columns, each the median of 5 timed calls after 2 warm-ups
(CUDA events; host clock on the CPU), under ``torch.no_grad``:

- reference all-experts / routed: ``CalibrationMoEBlock`` around the block, ``calibrate_all_experts`` True/False;
- seeds' loop: the same wrapper with its dispatch replaced by the seeds' naive loop (per expert ``torch.where``,
  full-token expert forward, gather, ``index_add_``) over the *same* unpacked experts;
- original grouped_mm / eager: the original block under those experts implementations;
- ideal: the all-experts matmul FLOPs ``2 * 3 * T * H * I * E`` at the rate of an 8192^3 matmul (bf16 on the
  GPU; 1024^3 float32 on the CPU) measured in the same run; % of peak = ideal / reference all-experts;
- x seeds: the seeds' loop's time over the reference all-experts time.

Targets (issue 10, on the H100): GLM-4.7-Flash at 4096 tokens >= 70 % of peak; every row >= 2x the seeds' loop at
512 tokens and >= 1.3x at 4096.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import real_layers  # benchmarks/real_layers.py, beside this script
import torch
import transformers
from real_layers import Layer
from torch import nn

from moe_conformance.wrappers import CalibrationMoEBlock, LinearExperts

WARMUP, REPEATS = 2, 5


# GLM-4.7-Flash, Qwen3.5-35B-A3B and DeepSeek-V3 of the shared table (bench_cost.py measures all of it).
LAYERS = tuple(layer for layer in real_layers.LAYERS if layer.name in ("GLM-4.7-Flash", "Qwen3.5-35B-A3B", "DeepSeek-V3"))
# The suite's tiny blocks (fixtures), for --cpu: model_type -> the layer name printed.
CPU_CASES = {"glm4_moe_lite": "glm4_moe_lite (tiny)", "qwen3_5_moe_text": "qwen3_5_moe (tiny)", "deepseek_v3": "deepseek_v3 (tiny)"}


def build_gpu_block(layer: Layer, dtype: torch.dtype, seed: int = 0) -> tuple[nn.Module, object]:
    import importlib

    modeling = importlib.import_module(f"transformers.models.{layer.module}.modeling_{layer.module}")
    config = getattr(importlib.import_module(f"transformers.models.{layer.module}"), layer.config_class)(**layer.config)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in bf16 on the GPU: DeepSeek-V3's experts are 22.5 GB there
    try:
        with torch.device("cuda"):
            block = getattr(modeling, layer.block_class)(config)
    finally:
        torch.set_default_dtype(default)
    generator = torch.Generator("cuda").manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*block.named_parameters(), *block.named_buffers()]:
            if tensor.is_floating_point():
                # Weights ~ 1/sqrt(fan-in) so activations stay O(1); routing biases random so routing varies.
                tensor.normal_(0.0, tensor.shape[-1] ** -0.5 if tensor.dim() >= 2 else 0.1, generator=generator)
    return block.eval(), config


def experts_dims(block: nn.Module) -> tuple[int, int, int]:
    """(experts E, hidden H, intermediate I) of a fused-experts block."""
    down = block.experts.down_proj  # [E, H, I]
    return down.shape[0], down.shape[1], down.shape[2]


class SeedLoopExperts(LinearExperts):
    """The seeds' dispatch (llm-compressor's loop) over the same unpacked experts: per expert ``torch.where``
    (a host sync), the expert on every token, the routed rows gathered, weighted and ``index_add_``-ed."""

    def forward(self, hidden_states, top_k_index, top_k_weights):
        final = torch.zeros_like(hidden_states, dtype=top_k_weights.dtype)
        expert_mask = nn.functional.one_hot(top_k_index, num_classes=len(self)).permute(2, 0, 1)
        for expert_idx, expert in enumerate(self):
            token_indices, weight_indices = torch.where(expert_mask[expert_idx])
            if self.calibrate_all_experts:
                full = expert(hidden_states)
                if token_indices.numel() == 0:
                    continue
                expert_output = full[token_indices]
            else:
                if token_indices.numel() == 0:
                    continue
                expert_output = expert(hidden_states[token_indices])
            weighted = expert_output * top_k_weights[token_indices, weight_indices].unsqueeze(-1)
            final.index_add_(0, token_indices, weighted)
        return final.type(hidden_states.dtype)


def wrapper(block: nn.Module, config, calibrate_all: bool, seeds_loop: bool = False) -> nn.Module:
    wrapped = CalibrationMoEBlock(original=block, config=config, calibrate_all_experts=calibrate_all)
    if seeds_loop:
        wrapped.experts.__class__ = SeedLoopExperts
    return wrapped


def time_ms(fn: Callable[[], object], cuda: bool, warmup: int | None = None, repeats: int | None = None) -> float:
    """Median of ``repeats`` (default REPEATS) calls after ``warmup`` (WARMUP), in milliseconds."""
    for _ in range(WARMUP if warmup is None else warmup):
        fn()
    times = []
    for _ in range(REPEATS if repeats is None else repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            fn()
            times.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(times)


def matmul_rate(device: str, dtype: torch.dtype, n: int) -> float:
    """FLOP/s of an n^3 matmul on random data (the 'peak' the ideal is counted at)."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    return 2 * n**3 / (time_ms(lambda: a @ b, device == "cuda") / 1e3)


def set_experts_implementation(config, name: str) -> None:
    config._experts_implementation = name


def measure_layer(name: str, block: nn.Module, config, tokens: int, rate: float, cuda: bool, dtype: torch.dtype) -> dict:
    experts, hidden, inter = experts_dims(block)
    x = torch.randn(1, tokens, hidden, device=block.experts.down_proj.device, dtype=dtype)
    row = {"layer": name, "tokens": tokens}
    with torch.no_grad():
        # Whole v5 models run grouped_mm; the wrapper sums as that forward does (float32, one cast).
        for implementation in ("grouped_mm", "eager"):
            set_experts_implementation(config, implementation)
            try:
                row[f"original {implementation}"] = time_ms(lambda: block(x), cuda)
            except Exception as exc:  # an implementation this device/torch lacks
                row[f"original {implementation}"] = None
                row.setdefault("notes", []).append(f"{implementation}: {type(exc).__name__}: {str(exc)[:80]}")
        set_experts_implementation(config, "grouped_mm" if cuda else "eager")
        want = block(x)
        for label, calibrate_all, seeds in (("reference all-experts", True, False), ("reference routed", False, False), ("seeds' loop", True, True)):
            wrapped = wrapper(block, config, calibrate_all, seeds)
            got = wrapped(x)
            row[label] = time_ms(lambda: wrapped(x), cuda)
            first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
            row[f"{label} rel.err"] = ((first(got).float() - first(want).float()).norm() / first(want).float().norm()).item()
            del wrapped
    row["ideal"] = 2 * 3 * tokens * hidden * inter * experts / rate * 1e3
    row["% of peak"] = 100 * row["ideal"] / row["reference all-experts"]
    row["x seeds' loop"] = row["seeds' loop"] / row["reference all-experts"]
    return row


COLUMNS = (
    ("reference all-experts", "ref all ms", "{:.2f}"), ("reference routed", "ref routed ms", "{:.2f}"),
    ("seeds' loop", "seeds' loop ms", "{:.2f}"), ("original grouped_mm", "orig grouped_mm ms", "{:.2f}"),
    ("original eager", "orig eager ms", "{:.2f}"), ("ideal", "ideal ms", "{:.3f}"), ("% of peak", "% of peak", "{:.1f}"),
    ("x seeds' loop", "x seeds' loop", "{:.2f}"),
)


def print_table(rows: list[dict]) -> None:
    head = ["layer", "tokens", *(title for _, title, _ in COLUMNS)]
    lines = [[r["layer"], str(r["tokens"]), *("n/a" if r.get(k) is None else f.format(r[k]) for k, _, f in COLUMNS)] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("-|-".join("-" * w for w in widths))
    for line in lines:
        print(" | ".join(c.ljust(w) for c, w in zip(line, widths)))
    for r in rows:
        errs = ", ".join(f"{k.split(' rel.err')[0]} {v:.1e}" for k, v in r.items() if k.endswith("rel.err"))
        print(f"  {r['layer']} T={r['tokens']}: rel. error vs the original: {errs}" + "".join(f"; {n}" for n in r.get("notes", [])))


def profile(block: nn.Module, config, tokens: int, dtype: torch.dtype, label: str) -> str:
    """Where the reference all-experts forward spends its time on the device: GEMM kernels, other kernels, and
    wall time the device sat idle (host-bound)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    x = torch.randn(1, tokens, experts_dims(block)[1], device="cuda", dtype=dtype)
    wrapped = wrapper(block, config, True)
    with torch.no_grad():
        for _ in range(WARMUP):
            wrapped(x)
        torch.cuda.synchronize()
        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            begin = time.perf_counter()
            wrapped(x)
            torch.cuda.synchronize()
            wall = (time.perf_counter() - begin) * 1e3
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    def is_gemm(name: str) -> bool:
        return any(s in name.lower() for s in ("gemm", "nvjet", "cutlass", "sm90_xmma", "matmul"))
    gemm = sum(e.device_time for e in kernels if is_gemm(e.name)) / 1e3
    other = sum(e.device_time for e in kernels if not is_gemm(e.name)) / 1e3
    summary = (f"profile {label} (reference all-experts, one call): wall {wall:.2f} ms; device busy {gemm + other:.2f} ms "
               f"(GEMM {gemm:.2f}, other kernels {other:.2f}); device idle {max(wall - gemm - other, 0):.2f} ms; "
               f"{len(kernels)} kernels")
    print(f"\n{summary}")
    print(prof.key_averages().table(sort_by="device_time_total", row_limit=12, max_name_column_width=60), flush=True)
    return summary


def main() -> None:
    global REPEATS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu", action="store_true", help="the suite's tiny fixture blocks on the CPU, float32")
    parser.add_argument("--tokens", type=int, nargs="+", default=None, help="default: 512 4096 (GPU), 10 64 (CPU)")
    parser.add_argument("--layers", nargs="+", default=None, help="substrings of the layer names to run")
    parser.add_argument("--profile", nargs="*", default=None, help="torch.profiler on the rows whose layer matches")
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--repeats", type=int, default=REPEATS, help=f"timed calls per figure (default {REPEATS})")
    parser.add_argument("--grouped-output-mib", type=float, default=None,
                        help="try another size limit for full-token outputs gathered in groups (wrappers.experts)")
    args = parser.parse_args()
    REPEATS = args.repeats
    if args.grouped_output_mib is not None:
        from moe_conformance.wrappers import experts as experts_module

        experts_module._GROUPED_OUTPUT_BYTES = int(args.grouped_output_mib * 2**20)
        print(f"full-token outputs up to {args.grouped_output_mib} MiB gathered in groups")
    cuda = not args.cpu
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: use --cpu")
    device_name = torch.cuda.get_device_name() if cuda else "CPU"
    dtype = torch.bfloat16 if cuda else torch.float32
    tokens_list = args.tokens or ([512, 4096] if cuda else [10, 64])
    rate = matmul_rate("cuda" if cuda else "cpu", dtype, 8192 if cuda else 1024)
    print(f"device {device_name}; torch {torch.__version__}; transformers {transformers.__version__}; {dtype}; "
          f"matmul rate {rate / 1e12:.3g} TFLOP/s ({'8192^3 bf16' if cuda else '1024^3 float32'}); "
          f"median of {REPEATS} after {WARMUP} warm-ups ({'CUDA events' if cuda else 'host clock'})", flush=True)
    rows, profiles = [], []
    if cuda:
        for layer in LAYERS:
            if args.layers and not any(s.lower() in layer.name.lower() for s in args.layers):
                continue
            block, config = build_gpu_block(layer, dtype)
            for tokens in tokens_list:
                try:
                    rows.append(measure_layer(layer.name, block, config, tokens, rate, cuda, dtype))
                except torch.OutOfMemoryError as exc:
                    print(f"{layer.name} T={tokens}: out of memory ({str(exc)[:120]})")
                torch.cuda.empty_cache()
                print(f"  measured {layer.name} T={tokens}", flush=True)
                if args.profile is not None and any(s.lower() in layer.name.lower() for s in args.profile or [""]):
                    set_experts_implementation(config, "grouped_mm")
                    profiles.append(profile(block, config, tokens, dtype, f"{layer.name} T={tokens}"))
            del block
            torch.cuda.empty_cache()
    else:
        torch.set_num_threads(1)  # as the suite runs
        from moe_conformance import load_cases

        for case in load_cases():
            if case.model_type in CPU_CASES and not case.absent_reason():
                block, config = case.make_block()
                for tokens in tokens_list:
                    rows.append(measure_layer(CPU_CASES[case.model_type], block.eval(), config, tokens, rate, cuda, dtype))
    print()
    print(f"device {device_name}; torch {torch.__version__}; transformers {transformers.__version__}")
    print_table(rows)
    for summary in profiles:
        print(summary)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device_name, "torch": torch.__version__, "transformers": transformers.__version__,
                       "matmul_tflops": rate / 1e12, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
