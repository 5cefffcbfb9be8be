"""Fused in-place Langevin step against the eager composite a researcher writes and against torch.compile of it.

    python benchmarks/bench_ops.py                    # CPU (and CUDA when present), sizes 1K..16M, float32 + bfloat16
    python benchmarks/bench_ops.py --quick            # a smoke run (CI)
    python benchmarks/bench_ops.py --json out.json    # also write the rows as JSON
    python benchmarks/bench_ops.py --roof             # float32 in place at 1M and 16M, 1 and 2 threads, against
                                                      #   torch's x.add_(g, alpha=a): the bytes the update must move

Times are medians over repeats (CUDA: CUDA events). Bandwidth counts 12 bytes per float32 element (read x and
grad, write x; the noise never touches memory in the fused op) and 6 per bfloat16 element.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from dualmcmc import ops

A, B, P = 0.1, 0.01, 0.5  # step size, noise std, prior precision


def eager_composite(x, grad):
    x.add_(grad + P * x, alpha=-A * A / 2)
    x.add_(torch.randn_like(x), alpha=B)


def fused(x, grad):
    ops.langevin_step_(x, grad, A, B, prior_precision=P)


def time_ms(fn, x, grad, repeats: int, device: str) -> float:
    for _ in range(2):
        fn(x, grad)
    samples = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(x, grad)
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn(x, grad)
            samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def roof_table(sizes, thread_counts, repeats: int) -> list[dict]:
    """The CPU operator against the machine: torch's own vectorised axpy (the least any in-place update of x from
    grad costs), the fused step without and with noise, and the eager composite, at each thread count."""
    rows = []
    print("| n | threads | add_ ms | fused no-noise ms | fused noise ms | eager ms | no-noise / add_ | noise / add_ "
          "| eager / noise |")
    print("|---|---|---|---|---|---|---|---|---|")
    before = torch.get_num_threads()
    try:
        for n in sizes:
            x, grad = torch.randn(n), torch.randn(n)
            for threads in thread_counts:
                torch.set_num_threads(threads)
                reps = max(5, min(repeats, (1 << 26) // n))
                add_ms = time_ms(lambda x, g: x.add_(g, alpha=-A * A / 2), x, grad, reps, "cpu")
                plain_ms = time_ms(lambda x, g: ops.langevin_step_(x, g, A, 0.0, prior_precision=P), x, grad, reps, "cpu")
                noise_ms = time_ms(fused, x, grad, reps, "cpu")
                eager_ms = time_ms(eager_composite, x, grad, reps, "cpu")
                row = dict(n=n, threads=threads, add_ms=add_ms, fused_plain_ms=plain_ms, fused_noise_ms=noise_ms,
                           eager_ms=eager_ms)
                rows.append(row)
                print(f"| {n} | {threads} | {add_ms:.3f} | {plain_ms:.3f} | {noise_ms:.3f} | {eager_ms:.3f} | "
                      f"{plain_ms / add_ms:.2f}x | {noise_ms / add_ms:.2f}x | {eager_ms / noise_ms:.2f}x |", flush=True)
    finally:
        torch.set_num_threads(before)
    return rows


def copy_bandwidth_gbs(n: int, device: str, repeats: int) -> float:
    src = torch.empty(n, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda a, b: b.copy_(a), src, dst, repeats, device)
    return 2 * 4 * n / ms / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (smoke test)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    parser.add_argument("--devices", default=None, help="comma list, default: cpu and cuda when available")
    parser.add_argument("--json", default=None, help="write the rows to this JSON file")
    parser.add_argument("--roof", action="store_true", help="only the CPU roof table (1M and 16M, 1 and 2 threads)")
    args = parser.parse_args()
    if args.roof:
        print(f"# bench_ops --roof: torch {torch.__version__}, backend {ops.backend()}, cpu isa "
              f"{torch.ops.dualmcmc._cpu_isa(None) if ops.backend() == 'extension' else '-'}, "
              f"{platform.processor() or platform.machine()}")
        rows = roof_table([1 << 20, 1 << 24], [1, 2], repeats=50)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"torch": torch.__version__, "backend": ops.backend(), "roof": rows}, f, indent=1)
        return

    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    sizes = [1 << 10, 1 << 14] if args.quick else [1 << 10, 1 << 14, 1 << 20, 1 << 22, 1 << 24]
    compiled = None if args.no_compile else torch.compile(eager_composite)
    rows = []
    print(f"# bench_ops: torch {torch.__version__}, backend {ops.backend()}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads" + (f", {torch.cuda.get_device_name()}" if "cuda" in devices else ""))
    print("| device | dtype | n | eager ms | compiled ms | fused ms | fused vs eager | fused vs compiled | fused GB/s | copy GB/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for device in devices:
        for dtype in (torch.float32, torch.bfloat16):
            for n in sizes:
                repeats = 3 if args.quick else max(5, min(200, (1 << 24) // n))
                if device == "cuda":
                    repeats = 20 if args.quick else 100
                x = torch.randn(n, device=device, dtype=dtype)
                grad = torch.randn(n, device=device, dtype=dtype)
                eager_ms = time_ms(eager_composite, x, grad, repeats, device)
                compiled_ms = time_ms(compiled, x, grad, repeats, device) if compiled else float("nan")
                fused_ms = time_ms(fused, x, grad, repeats, device)
                bytes_moved = 3 * x.element_size() * n
                copy_gbs = copy_bandwidth_gbs(n, device, repeats) if n >= (1 << 20) else float("nan")
                row = dict(device=device, dtype=str(dtype).replace("torch.", ""), n=n, eager_ms=eager_ms,
                           compiled_ms=compiled_ms, fused_ms=fused_ms, speedup_eager=eager_ms / fused_ms,
                           speedup_compiled=compiled_ms / fused_ms, fused_gbs=bytes_moved / fused_ms / 1e6,
                           copy_gbs=copy_gbs)
                rows.append(row)
                print(f"| {device} | {row['dtype']} | {n} | {eager_ms:.3f} | {compiled_ms:.3f} | {fused_ms:.3f} | "
                      f"{row['speedup_eager']:.2f}x | {row['speedup_compiled']:.2f}x | {row['fused_gbs']:.1f} | {copy_gbs:.1f} |",
                      flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "backend": ops.backend(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
