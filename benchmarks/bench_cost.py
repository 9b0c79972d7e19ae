"""Calibration cost of an implementation at real layer sizes: what its conversion costs in GPU memory and time,
and what its all-experts and routed forwards cost in time (printed and written as JSON, never asserted).

    python benchmarks/bench_cost.py --impl reference --json cost-reference.json          # on a GPU, bf16
    python benchmarks/bench_cost.py --impl llmcompressor --json cost-llmcompressor.json   # in llm-compressor's env
    python benchmarks/bench_cost.py --impl reference --variants --profile --json ...      # + the reference's designs
    python benchmarks/bench_cost.py --cpu --impl reference                                # CPU dry run, tiny dims

One real-size layer each of GLM-4.7-Flash, Qwen3.5-35B-A3B, DeepSeek-V3, gpt-oss-120b and Mixtral-8x7B is built
from its transformers config class (random weights at the real dims, bf16, on the GPU; ``config.dtype`` set to
bf16 and ``experts_implementation`` ``grouped_mm``, as ``from_pretrained(dtype=torch.bfloat16)`` leaves a v5
model). The implementation is driven only through the harness's public API (``load_implementation`` and the
``Implementation`` protocol's ``calibrating_model``), on a one-block model (the block at ``.block``, the config
at ``.config``), exactly as the suite drives it. Per layer:

- conversion: entering ``calibrating_model(model, calibrate_all_experts=True)`` (a registry implementation builds
  its wrapper there; a conversion converts the model there, once). Peak GPU memory allocated above what the
  block held before, and what is still held after, each as a multiple of the expert weights' bytes (a view is 0,
  a copy 1); its wall time (synchronised);
- forwards at 512 and 4096 tokens, all-experts (``calibrate_all_experts=True``) and routed: median of 5 timed calls
  after 2 warm-ups (CUDA events), ``torch.no_grad``; % of bf16 peak = the all-experts matmul FLOPs
  ``2 * 3 * T * H * I * E`` at the rate of an 8192^3 bf16 matmul measured in the same run, over the time (for
  the routed forward the routed FLOPs ``2 * 3 * T * H * I * k``); x grouped_mm = time over the original block's
  own ``grouped_mm`` forward; x seeds = the seeds' loop (llm-compressor's original per-expert loop over the same
  unpacked experts, ``bench_calibration_forward.SeedLoopExperts``) over the time;
- the output's relative error (Frobenius) against the original block's ``grouped_mm`` output, a sanity column.

``--variants`` (reference only) also times designs of the reference's all-experts forward, each with every
expert ``nn.Linear`` still called on its own input unless marked as a bound; ``--profile`` splits the reference's
all-experts call into GEMM kernels, other kernels and device idle time; ``--host`` times the host's cost of the
launches one expert needs.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import platform
import sys
import time
from pathlib import Path

import torch
import transformers
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_calibration_forward import SeedLoopExperts  # noqa: E402  (the seeds' loop, shared with that benchmark)
from bench_calibration_forward import time_ms as shared_time_ms  # noqa: E402
from real_layers import LAYERS, Layer  # noqa: E402  (the real-size layers, shared with that benchmark)

from moe_conformance import load_implementation  # noqa: E402

WARMUP, REPEATS = 2, 5


class OneBlockModel(nn.Module):
    """The smallest model an implementation calibrates: the block at ``.block``, the config at ``.config``."""

    def __init__(self, block: nn.Module, config):
        super().__init__()
        self.block = block
        self.config = config

    def forward(self, hidden_states):
        return self.block(hidden_states)


def build_block(layer: Layer, device: str, dtype: torch.dtype, cpu_dims: bool, seed: int = 0):
    modeling = importlib.import_module(f"transformers.models.{layer.module}.modeling_{layer.module}")
    kwargs = {**layer.config, **(layer.cpu if cpu_dims else {})}
    config = getattr(importlib.import_module(f"transformers.models.{layer.module}"), layer.config_class)(**kwargs)
    config.dtype = dtype  # as from_pretrained(dtype=...) leaves it
    config._experts_implementation = "grouped_mm" if device == "cuda" else "eager"
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            block = getattr(modeling, layer.block_class)(config)
    finally:
        torch.set_default_dtype(default)
    generator = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for _, tensor in [*block.named_parameters(), *block.named_buffers()]:
            if tensor.is_floating_point():
                # ~ 1/sqrt(fan-in) so activations stay O(1); biases random so the routing varies
                tensor.normal_(0.0, tensor.shape[-1] ** -0.5 if tensor.dim() >= 2 else 0.1, generator=generator)
    return block.eval(), config


def expert_bytes(block: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in block.experts.parameters())


def first(out):
    return out[0] if isinstance(out, tuple) else out


def rel_err(got, want) -> float:
    got, want = first(got).float(), first(want).float()
    return ((got - want).norm() / want.norm()).item()


def sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def time_ms(fn, cuda: bool) -> float:
    """bench_calibration_forward's timing, with this run's --repeats."""
    return shared_time_ms(fn, cuda, warmup=WARMUP, repeats=REPEATS)


def matmul_rate(device: str, dtype: torch.dtype, n: int) -> float:
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    return 2 * n**3 / (time_ms(lambda: a @ b, device == "cuda") / 1e3)


def guarded(row: dict, key: str, fn):
    """fn() into row[key]; an exception (out of memory, a raising forward) becomes a note and None."""
    try:
        row[key] = fn()
    except Exception as exc:  # noqa: BLE001 - a finding, recorded
        row[key] = None
        row.setdefault("notes", []).append(f"{key}: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}")
        if isinstance(exc, torch.OutOfMemoryError):
            gc.collect()
            torch.cuda.empty_cache()
    return row[key]


def measure(impl, layer: Layer, tokens_list, rate: float, device: str, dtype: torch.dtype, cpu_dims: bool, seeds: bool) -> dict:
    cuda = device == "cuda"
    block, config = build_block(layer, device, dtype, cpu_dims)
    hidden = config.hidden_size
    e_bytes = expert_bytes(block)
    row = {"layer": layer.name, "expert_bytes": e_bytes, "tokens": {}}
    routed_only = impl.levels.coverage == "routed_only"
    if routed_only:
        row.setdefault("notes", []).append("all-experts: none (the implementation has no all-experts mode)")
    generator = torch.Generator(device).manual_seed(1)
    xs = {t: torch.randn(1, t, hidden, device=device, dtype=dtype, generator=generator) for t in tokens_list}
    wants = {}
    with torch.no_grad():
        for t, x in xs.items():
            cell = row["tokens"].setdefault(str(t), {})
            wants[t] = block(x)
            guarded(cell, "original grouped_mm ms", lambda: time_ms(lambda: block(x), cuda))
        if seeds:
            from moe_conformance.wrappers import CalibrationMoEBlock

            seeded = CalibrationMoEBlock(original=block, config=config, calibrate_all_experts=True)
            seeded.experts.__class__ = SeedLoopExperts
            for t, x in xs.items():
                guarded(row["tokens"][str(t)], "seeds' loop ms", lambda: time_ms(lambda: seeded(x), cuda))
            del seeded
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    holder = OneBlockModel(block, config)
    del block
    sync(cuda)
    base = torch.cuda.memory_allocated() if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        for calibrate_all, mode in ((True, "all-experts"), (False, "routed")):
            begin = time.perf_counter()
            context = impl.calibrating_model(holder, calibrate_all)
            try:
                model = context.__enter__()
            except Exception as exc:  # noqa: BLE001
                row.setdefault("notes", []).append(f"conversion ({mode}): {type(exc).__name__}: {str(exc)[:160]}")
                break
            try:
                sync(cuda)
                if calibrate_all:
                    row["conversion s"] = time.perf_counter() - begin
                    if cuda:
                        row["conversion peak x"] = (torch.cuda.max_memory_allocated() - base) / e_bytes
                        row["conversion kept x"] = (torch.cuda.memory_allocated() - base) / e_bytes
                module = model.get_submodule("block")
                row.setdefault("module", type(module).__name__)
                row.setdefault("linears", sum(isinstance(m, nn.Linear) for m in module.modules()))
                for t, x in xs.items():
                    if routed_only and calibrate_all:
                        break
                    cell = row["tokens"][str(t)]
                    got = guarded(cell, f"{mode} out", lambda: module(x))
                    if got is not None:
                        cell[f"{mode} rel.err"] = rel_err(got, wants[t])
                        del got
                        guarded(cell, f"{mode} ms", lambda: time_ms(lambda: module(x), cuda))
                    cell.pop(f"{mode} out", None)
                if cuda:
                    row[f"{mode} forward peak x"] = (torch.cuda.max_memory_allocated() - base) / e_bytes
            finally:
                context.__exit__(None, None, None)
    kwargs = {**layer.config, **(layer.cpu if cpu_dims else {})}
    h, i = kwargs["hidden_size"], kwargs.get("moe_intermediate_size", kwargs.get("intermediate_size"))
    for t in tokens_list:
        cell = row["tokens"][str(t)]
        all_flops = 2 * 3 * t * h * i * layer.experts
        routed_flops = 2 * 3 * t * h * i * layer.top_k
        cell["ideal all ms"] = all_flops / rate * 1e3
        for mode, flops in (("all-experts", all_flops), ("routed", routed_flops)):
            ms = cell.get(f"{mode} ms")
            if ms:
                cell[f"{mode} % of peak"] = 100 * flops / rate * 1e3 / ms
                if cell.get("original grouped_mm ms"):
                    cell[f"{mode} x grouped_mm"] = ms / cell["original grouped_mm ms"]
                if cell.get("seeds' loop ms"):
                    cell[f"{mode} x seeds"] = cell["seeds' loop ms"] / ms
    del holder, wants, xs
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return row


# --- the reference's designs (--variants) -------------------------------------------------------------------------

def _silu_mul_kernel():
    """A Triton kernel computing ``silu(gate) * up`` with eager's roundings (silu in float32, rounded to the
    dtype, then the product in float32, rounded): one launch and one pass instead of two."""
    import triton
    import triton.language as tl
    from triton.language.extra.cuda import libdevice

    @triton.jit
    def silu_mul(gate, up, out, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        g = tl.load(gate + offs, mask=mask).to(tl.float32)
        u = tl.load(up + offs, mask=mask).to(tl.float32)
        s = tl.math.div_rn(g, 1.0 + libdevice.exp(-g)).to(out.dtype.element_ty).to(tl.float32)
        tl.store(out + offs, (s * u).to(out.dtype.element_ty), mask=mask)

    def run(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(gate)
        n = gate.numel()
        silu_mul[(triton.cdiv(n, 4096),)](gate, up, out, n, BLOCK=4096)
        return out

    return run


def _before_activation(self, x):
    if not self.has_gate:
        return self.act_fn(self.up_proj(x))
    gate, up = self.gate_proj(x), self.up_proj(x)
    if self._apply_gate is None and gate.is_cuda:
        return self.act_fn(gate) * up
    raise NotImplementedError("the CUDA path only")


def variant_forwards(silu_mul):
    """ExpertMLP forwards for the designs measured: name -> (forward, conformant: every Linear called)."""
    from torch.nn import functional as F

    def lean(self, x):  # the Linears called directly, the activation as a function: fewer Python layers
        m = self._modules
        return m["down_proj"](F.silu(m["gate_proj"](x)) * m["up_proj"](x))

    def fused_act(self, x):  # + silu(gate) * up in one kernel
        m = self._modules
        return m["down_proj"](silu_mul(m["gate_proj"](x), m["up_proj"](x)))

    def gate_up_gemm(self, x):  # bound: gate and up in one GEMM, no Linear called (NOT conformant)
        m = self._modules
        gate_w, up_w = m["gate_proj"].weight, m["up_proj"].weight
        fused = torch.cat((gate_w, up_w)) if gate_w.data_ptr() + gate_w.numel() * gate_w.element_size() != up_w.data_ptr() \
            else torch.as_strided(gate_w, (2 * gate_w.shape[0], gate_w.shape[1]), gate_w.stride())
        gate, up = F.linear(x, fused).chunk(2, dim=-1)
        return F.linear(silu_mul(gate, up) if silu_mul else F.silu(gate) * up, m["down_proj"].weight)

    def before(self, x):  # ExpertMLP.forward at 20b15f7, its CUDA path (each submodule via nn.Module.__getattr__)
        out = self.down_proj(_before_activation(self, x))
        norm = self._modules.get("post_expert_norm")
        return out if norm is None else norm(out)

    variants = {"before (20b15f7)": (before, True), "lean, per expert": (lean, True)}
    if silu_mul is not None:
        variants["lean + fused act (Triton), per expert"] = (fused_act, True)
    variants["bound: gate|up one GEMM, no Linear calls"] = (gate_up_gemm, False)
    return variants


def measure_variants(layer: Layer, tokens_list, rate: float, dtype: torch.dtype, profile: bool) -> list[dict]:
    from moe_conformance.wrappers import CalibrationMoEBlock
    from moe_conformance.wrappers import experts as experts_module
    from moe_conformance.wrappers.experts import ExpertMLP

    group_bytes = getattr(experts_module, "_ACTIVATION_GROUP_BYTES", 0)
    try:
        silu_mul = _silu_mul_kernel()
    except Exception as exc:  # noqa: BLE001 - no Triton here
        print(f"  no Triton kernel: {exc}")
        silu_mul = None
    block, config = build_block(layer, "cuda", dtype, False)
    generator = torch.Generator("cuda").manual_seed(1)
    rows = []
    original_forward = ExpertMLP.forward
    with torch.no_grad():
        wrapped = CalibrationMoEBlock(original=block, config=config, calibrate_all_experts=True)
        for t in tokens_list:
            x = torch.randn(1, t, config.hidden_size, device="cuda", dtype=dtype, generator=generator)
            want = wrapped(x)
            ideal = 2 * 3 * t * layer.hidden * layer.intermediate * layer.experts / rate * 1e3
            row = {"layer": layer.name, "tokens": t, "ideal ms": ideal, "designs": {}}
            designs = {"reference": (original_forward, True), **variant_forwards(silu_mul)}
            for name, (forward, conformant) in designs.items():
                ExpertMLP.forward = forward
                # only the reference groups activations; the other designs are per-expert forwards
                experts_module._ACTIVATION_GROUP_BYTES = group_bytes if name == "reference" else 0
                try:
                    got = wrapped(x)
                    ms = time_ms(lambda: wrapped(x), True)
                    row["designs"][name] = {"ms": ms, "% of peak": 100 * ideal / ms, "conformant": conformant,
                                            "bitwise equal to reference": bool(torch.equal(first(got), first(want))),
                                            "rel.err vs reference": rel_err(got, want)}
                except Exception as exc:  # noqa: BLE001
                    row["designs"][name] = {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
                finally:
                    ExpertMLP.forward = original_forward
                    experts_module._ACTIVATION_GROUP_BYTES = group_bytes
            if profile:
                row["profile"] = profile_call(lambda: wrapped(x))
                ExpertMLP.forward = variant_forwards(silu_mul)["before (20b15f7)"][0]
                experts_module._ACTIVATION_GROUP_BYTES = 0
                try:
                    row["profile before"] = profile_call(lambda: wrapped(x))
                finally:
                    ExpertMLP.forward = original_forward
                    experts_module._ACTIVATION_GROUP_BYTES = group_bytes
            rows.append(row)
            print(f"  {layer.name} T={t}: " + "; ".join(
                f"{n} {d['ms']:.2f} ms ({d['% of peak']:.1f} %)" if "ms" in d else f"{n} {d['error']}" for n, d in row["designs"].items())
                + (f"; profile: {row['profile']['summary']}" if profile else ""), flush=True)
            del x, want
        del wrapped
    del block
    gc.collect()
    torch.cuda.empty_cache()
    return rows


def profile_call(fn) -> dict:
    """One call under torch.profiler: wall, device busy (GEMM / other kernels), idle, kernels, and the host ops
    that cost the most CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for _ in range(WARMUP):
        fn()
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        begin = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - begin) * 1e3
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]

    def is_gemm(name: str) -> bool:
        return any(s in name.lower() for s in ("gemm", "nvjet", "cutlass", "sm90_xmma", "matmul"))

    gemm = sum(e.device_time for e in kernels if is_gemm(e.name)) / 1e3
    other_kernels: dict[str, float] = {}
    for e in kernels:
        if not is_gemm(e.name):
            other_kernels[e.name[:60]] = other_kernels.get(e.name[:60], 0.0) + e.device_time / 1e3
    other = sum(other_kernels.values())
    host_ops = sorted(((a.key, a.self_cpu_time_total / 1e3, a.count) for a in prof.key_averages()), key=lambda r: -r[1])[:10]
    return {
        "wall ms": wall, "gemm ms": gemm, "other kernels ms": other, "idle ms": max(wall - gemm - other, 0.0),
        "kernels": len(kernels),
        "other kernels": dict(sorted(other_kernels.items(), key=lambda kv: -kv[1])[:8]),
        "host self ms": [[k, round(ms, 3), n] for k, ms, n in host_ops],
        "summary": f"wall {wall:.2f} ms, GEMM {gemm:.2f}, other kernels {other:.2f}, idle {max(wall - gemm - other, 0):.2f}, {len(kernels)} kernels",
    }


def host_costs(tokens: int, hidden: int, inter: int, dtype: torch.dtype) -> dict:
    """Host microseconds per launch of what one expert needs (many launches queued, one sync at the end), at a
    size whose kernels are shorter than their launch (so the host is what is timed)."""
    from torch.nn import functional as F

    from moe_conformance.wrappers.experts import ExpertMLP, linear_view

    x = torch.randn(tokens, hidden, device="cuda", dtype=dtype)
    w = torch.randn(3, inter, hidden, device="cuda", dtype=dtype)
    wd = torch.randn(hidden, inter, device="cuda", dtype=dtype)
    expert = ExpertMLP(linear_view(w[0], None), linear_view(w[1], None), linear_view(wd, None), None, nn.SiLU())
    g = torch.randn(tokens, inter, device="cuda", dtype=dtype)
    index = torch.arange(tokens // 2, device="cuda")
    cases = {
        "F.linear": lambda: F.linear(x, w[0]),
        "nn.Linear call": lambda: expert.gate_proj(x),
        "F.silu": lambda: F.silu(g),
        "mul": lambda: g * g,
        "index_select": lambda: x.index_select(0, index),
        "ExpertMLP call (3 Linears, act, mul)": lambda: expert(x),
    }
    out = {}
    for name, fn in cases.items():
        for _ in range(50):
            fn()
        torch.cuda.synchronize()
        n = 400
        begin = time.perf_counter()
        for _ in range(n):
            fn()
        host = (time.perf_counter() - begin) / n * 1e6
        torch.cuda.synchronize()
        out[name] = host
    return {"tokens": tokens, "hidden": hidden, "intermediate": inter, "host us per call": out}


# --- printing ---------------------------------------------------------------------------------------------------

def fmt(v, f="{:.2f}"):
    return "n/a" if v is None else f.format(v)


def print_rows(rows: list[dict], header: str) -> None:
    print(f"\n{header}")
    head = ["layer", "conv s", "conv peak x", "kept x", "tokens", "all ms", "% peak", "x gmm", "x seeds", "routed ms",
            "x gmm", "x seeds", "err all", "err routed"]
    lines = []
    for r in rows:
        for t, c in r["tokens"].items():
            lines.append([r["layer"], fmt(r.get("conversion s"), "{:.3f}"), fmt(r.get("conversion peak x")), fmt(r.get("conversion kept x")), t,
                          fmt(c.get("all-experts ms")), fmt(c.get("all-experts % of peak"), "{:.1f}"), fmt(c.get("all-experts x grouped_mm"), "{:.1f}"),
                          fmt(c.get("all-experts x seeds")), fmt(c.get("routed ms")), fmt(c.get("routed x grouped_mm"), "{:.1f}"),
                          fmt(c.get("routed x seeds")), fmt(c.get("all-experts rel.err"), "{:.1e}"), fmt(c.get("routed rel.err"), "{:.1e}")])
    widths = [max(len(h), *(len(str(line[i])) for line in lines)) if lines else len(h) for i, h in enumerate(head)]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths)))
    for line in lines:
        print(" | ".join(str(c).ljust(w) for c, w in zip(line, widths)))
    for r in rows:
        for n in r.get("notes", []):
            print(f"  {r['layer']}: {n}")


def main() -> None:
    global REPEATS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--impl", default="reference", help="an --impl spec (load_implementation)")
    parser.add_argument("--cpu", action="store_true", help="dry run on the CPU: the same layers with tiny dims, float32")
    parser.add_argument("--layers", nargs="+", default=None, help="substrings of the layer names to run")
    parser.add_argument("--tokens", type=int, nargs="+", default=None, help="default 512 4096 (GPU), 16 64 (CPU)")
    parser.add_argument("--no-seeds", action="store_true", help="skip the seeds' loop baseline")
    parser.add_argument("--variants", action="store_true", help="also the reference's designs (GPU)")
    parser.add_argument("--profile", action="store_true", help="with --variants: torch.profiler on the reference's calls")
    parser.add_argument("--host", action="store_true", help="host cost of one expert's launches (GPU)")
    parser.add_argument("--only-variants", action="store_true", help="the designs (and --profile/--host) without the scoreboard rows")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    REPEATS = args.repeats
    device = "cpu" if args.cpu else "cuda"
    cuda = device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: use --cpu")
    if not cuda:
        torch.set_num_threads(1)
    dtype = torch.bfloat16 if cuda else torch.float32
    tokens_list = args.tokens or ([512, 4096] if cuda else [16, 64])
    impl = load_implementation(args.impl)
    version = None
    with contextlib.suppress(Exception):
        from importlib.metadata import version as dist_version

        version = {"llmcompressor": "llmcompressor", "defuser": "defuser", "auto_round": "auto-round"}.get(args.impl)
        version = dist_version(version) if version else None
    device_name = torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()})"
    rate = matmul_rate(device, dtype, 8192 if cuda else 512)
    env = {"impl": args.impl, "describe": impl.describe(), "project_version": version, "device": device_name,
           "torch": torch.__version__, "transformers": transformers.__version__, "dtype": str(dtype).replace("torch.", ""),
           "matmul_tflops": rate / 1e12, "repeats": REPEATS, "warmup": WARMUP, "date": time.strftime("%Y-%m-%d"),
           "cuda": torch.version.cuda if cuda else None}
    print(f"{args.impl}: {env['describe']}\ndevice {device_name}; torch {torch.__version__}; transformers "
          f"{transformers.__version__}; {env['dtype']}; matmul {rate / 1e12:.3g} TFLOP/s", flush=True)
    layers = [l for l in LAYERS if not args.layers or any(s.lower() in l.name.lower() for s in args.layers)]
    rows = []
    for layer in layers if not args.only_variants else []:
        try:
            rows.append(measure(impl, layer, tokens_list, rate, device, dtype, args.cpu, not args.no_seeds))
        except Exception as exc:  # noqa: BLE001 - one layer's failure is that layer's row
            rows.append({"layer": layer.name, "tokens": {}, "notes": [f"{type(exc).__name__}: {str(exc)[:200]}"]})
        print(f"  measured {layer.name}: " + json.dumps({k: v for k, v in rows[-1].items() if k != "tokens"})[:300], flush=True)
        if args.json:  # after every layer: a run stopped at its time limit keeps what it measured
            Path(args.json).write_text(json.dumps({**env, "rows": rows, "partial": True}, indent=1))
    result = {**env, "rows": rows}
    if (args.variants or args.only_variants) and cuda:
        # the designs replace ExpertMLP.forward with the standard gate: layers whose experts use it (not gpt-oss's
        # clamped, biased SwiGLU)
        result["variants"] = []
        for layer in layers:
            if layer.module != "gpt_oss":
                result["variants"] += measure_variants(layer, tokens_list, rate, dtype, args.profile)
                if args.json:
                    Path(args.json).write_text(json.dumps({**result, "partial": True}, indent=1))
    if args.host and cuda:
        result["host"] = [host_costs(64, 2048, 512, dtype), host_costs(512, 2048, 1536, dtype)]
        print("host us per call:", json.dumps(result["host"]), flush=True)
    print_rows(rows, f"{args.impl} ({env['describe']}); {device_name}, torch {torch.__version__}, transformers {transformers.__version__}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))




# --- the scoreboard (--render) ----------------------------------------------------------------------------------

ORDER = ("reference", "llmcompressor", "defuser", "auto_round")


def load_results(paths) -> list[dict]:
    runs = [json.loads(Path(p).read_text()) | {"_file": Path(p).name} for p in paths]
    return sorted(runs, key=lambda r: (ORDER.index(r["impl"]) if r["impl"] in ORDER else 99, r["transformers"]))


def run_label(run: dict) -> str:
    name = {"reference": "reference", "llmcompressor": "llm-compressor", "defuser": "Defuser", "auto_round": "auto-round"}.get(run["impl"], run["impl"])
    return f"{name} {run.get('project_version') or ''}".strip() + f" @ {run['transformers']}"


def _cell(c: dict, mode: str) -> str:
    ms = c.get(f"{mode} ms")
    if ms is None:
        return "n/a"
    parts = [f"{ms:.2f} ms", f"{c[f'{mode} % of peak']:.1f} %"]
    if c.get(f"{mode} x grouped_mm") is not None:
        parts.append(f"{c[f'{mode} x grouped_mm']:.1f}x gmm")
    if c.get(f"{mode} x seeds") is not None:
        parts.append(f"{c[f'{mode} x seeds']:.2f}x seeds")
    return " · ".join(parts)


def render_markdown(runs: list[dict]) -> str:
    tokens = sorted({t for run in runs for row in run["rows"] for t in row["tokens"]}, key=int)
    lines = ["| implementation @ transformers | layer | conversion: peak · kept (x expert bytes) · time | "
             + " | ".join(f"all-experts {t}" for t in tokens) + " | " + " | ".join(f"routed {t}" for t in tokens)
             + " | rel. error all · routed (largest over tokens) |",
             "| --- | --- | --- | " + " | ".join("---" for _ in tokens) * 2 + " | --- |"]
    # (two joins of the same width: fix the separator count)
    lines[1] = "| --- | --- | --- | " + " | ".join("---" for _ in range(2 * len(tokens))) + " | --- |"
    notes = []
    for run in runs:
        for row in run["rows"]:
            cells = row["tokens"]
            conv = "n/a" if row.get("conversion s") is None else (
                f"{row.get('conversion peak x', float('nan')):.2f} · {row.get('conversion kept x', float('nan')):.2f} · {row['conversion s']:.2f} s")
            errs = []
            for mode in ("all-experts", "routed"):
                values = [c[f"{mode} rel.err"] for c in cells.values() if c.get(f"{mode} rel.err") is not None]
                errs.append(f"{max(values):.1e}" if values else "n/a")
            lines.append(f"| {run_label(run)} | {row['layer']} | {conv} | "
                         + " | ".join(_cell(cells.get(str(t), {}), "all-experts") for t in tokens) + " | "
                         + " | ".join(_cell(cells.get(str(t), {}), "routed") for t in tokens) + f" | {' · '.join(errs)} |")
            for note in row.get("notes", []):
                notes.append(f"- {run_label(run)}, {row['layer']}: {note}")
    head = ["Runs (each number in a row was measured in that run; x gmm = time over the original block's own "
            "`grouped_mm` forward, x seeds = the seeds' loop's time over this one, % = matmul FLOPs at the run's "
            "8192^3 bf16 rate over the time):", ""]
    for run in runs:
        if not run["rows"]:
            continue  # a designs-only run (--only-variants): rendered by render_variants
        head.append(f"- **{run_label(run)}**: {run['describe']}; {run['device']}, torch {run['torch']}, transformers "
                    f"{run['transformers']}, {run['dtype']}, matmul {run['matmul_tflops']:.0f} TFLOP/s, {run['date']} (`{run['_file']}`)")
    return "\n".join(head + [""] + lines + ([""] + notes if notes else [])) + "\n"


def render_variants(runs: list[dict]) -> str:
    out = []
    for run in runs:
        for row in run.get("variants", []):
            if not out:
                out += [f"Designs of the reference's all-experts forward ({run['device']}, torch {run['torch']}, transformers "
                        f"{run['transformers']}, {run['dtype']}; ms · % of peak; = : bitwise equal to the reference's output):", "",
                        "| layer | tokens | " + " | ".join(row["designs"]) + " |", "| --- | --- | " + " | ".join("---" for _ in row["designs"]) + " |"]
            cells = []
            for d in row["designs"].values():
                if "ms" not in d:
                    cells.append(d.get("error", "n/a")[:40])
                else:
                    cells.append(f"{d['ms']:.2f} · {d['% of peak']:.1f} %" + (" =" if d["bitwise equal to reference"] else f" ({d['rel.err vs reference']:.0e})"))
            out.append(f"| {row['layer']} | {row['tokens']} | " + " | ".join(cells) + " |")
        for row in run.get("variants", []):
            for key in ("profile", "profile before"):
                if key in row:
                    p = row[key]
                    out.append(f"- {row['layer']} T={row['tokens']}, {key.replace('profile', 'reference').replace('reference before', 'before (20b15f7)')}: {p['summary']}; "
                               f"other kernels: " + ", ".join(f"{k} {v:.2f}" for k, v in list(p["other kernels"].items())[:4]))
        if run.get("host"):
            for h in run["host"]:
                out.append(f"- host µs per call (T={h['tokens']}, H={h['hidden']}, I={h['intermediate']}): "
                           + ", ".join(f"{k} {v:.1f}" for k, v in h["host us per call"].items()))
    return "\n".join(out) + ("\n" if out else "")


def render_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="render reports/cost/*.json as Markdown")
    parser.add_argument("files", nargs="+")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    runs = load_results(args.files)
    text = render_markdown(runs) + "\n" + render_variants(runs)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--render"]:
        render_main(sys.argv[2:])
    else:
        main()
