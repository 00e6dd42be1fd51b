"""Selective-scan backends side by side: `python -m kernels.bench --help`.

Every backend runs the streaming workload (D skip, silu(z) gate, delta bias + softplus, a non-zero
initial state in, the final state out) on the same inputs. Effective bandwidth counts the minimal
bytes a scan must move (u, delta, z, B, C, A, D, bias in; out; state in and out). On CUDA the
table adds the fraction of measured device bandwidth and the time relative to mamba-ssm's own
zero-state `selective_scan_fn` when it is installed.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch

from . import available_backends, selective_scan

# (batch, dim, length) at dstate 16: single streams from tiny blocks to long files, then many streams.
SHAPES = {
    "cpu": [
        (1, 64, 16), (1, 256, 16), (1, 1024, 16), (1, 256, 256), (1, 256, 1024), (1, 256, 4096),
        (1, 256, 8192), (1, 1024, 1024), (8, 256, 1024), (64, 64, 256), (64, 1024, 16),
    ],
    "cuda": [
        (1, 256, 16), (1, 256, 64), (1, 256, 256), (1, 256, 1024), (1, 256, 4096), (1, 256, 8192),
        (1, 1024, 1024), (1, 1024, 8192), (8, 1024, 1024), (8, 1024, 8192), (64, 64, 8192),
        (64, 256, 256), (64, 1024, 16), (64, 1024, 256), (64, 1024, 2048),
    ],
}  # fmt: skip
QUICK_SHAPES = [(1, 64, 16), (1, 256, 256), (8, 256, 1024)]
DSTATE = 16
# The reference loops over L in Python and materialises (B, D, L, N) twice: skip it above this
# many state-steps (B*D*L*N) unless --all.
REFERENCE_WORK_LIMIT = {"cpu": 2**22, "cuda": 2**26}
ACCEPT_DIM, ACCEPT_LEN, ACCEPT_LENS_PER_SAMPLE = 256, 4096, (256, 8192)
MULTISTEP_LENS, MULTISTEP_SHAPES = (1, 4, 16, 64), [(1, 1024), (64, 1024)]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def scan_bytes(batch: int, dim: int, dstate: int, length: int, elem: int) -> int:
    """Minimal bytes a scan moves: u, delta, z, B, C, A, D, bias in; out; fp32 state in and out."""
    return (
        3 * batch * length * dim * elem
        + 2 * batch * dstate * length * elem
        + 4 * (dim * dstate + 2 * dim)
        + batch * length * dim * elem
        + 8 * batch * dim * dstate
    )


def make_inputs(
    batch: int, dim: int, length: int, dtype: torch.dtype, device: str, dstate: int = DSTATE
) -> dict:
    """Mamba-like inputs (A = -(n+1), dt bias for steps in [1e-3, 0.1]) and a non-zero initial state."""
    g = torch.Generator(device=device).manual_seed(0)

    def randn(*shape: int, dt: torch.dtype = dtype) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=device, dtype=torch.float32).to(dt)

    dt_init = torch.exp(torch.linspace(math.log(1e-3), math.log(0.1), dim, device=device))
    return dict(
        u=randn(batch, dim, length),
        delta=(0.5 * randn(batch, dim, length, dt=torch.float32)).to(dtype),
        A=-torch.arange(1, dstate + 1, device=device, dtype=torch.float32).repeat(dim, 1),
        B=randn(batch, dstate, length),
        C=randn(batch, dstate, length),
        D=randn(dim, dt=torch.float32),
        z=randn(batch, dim, length),
        delta_bias=dt_init + torch.log(-torch.expm1(-dt_init)),
        delta_softplus=True,
        initial_state=randn(batch, dim, dstate, dt=torch.float32),
        return_final_state=True,
    )


def median_ms(fn: Callable[[], object], device: str, min_time_s: float = 0.3, max_reps: int = 50) -> float:
    """Median wall time of `fn` in ms: triton's do_bench (CUDA events, L2 flushed) on CUDA."""
    if device == "cuda":
        try:
            from triton.testing import do_bench
        except ImportError:
            return _cuda_event_median_ms(fn)
        return float(do_bench(fn, return_mode="median"))
    fn()  # warm-up: allocator, lazy imports
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time_s and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _cuda_event_median_ms(fn: Callable[[], object], reps: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def device_bandwidth_gbps(nbytes: int = 2**31) -> float:
    """Measured device-to-device copy bandwidth, bytes read + written."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), "cuda")
    return 2 * nbytes / ms / 1e6


def _mamba_raw(x: dict) -> Callable[[], object]:
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True)
    return lambda: selective_scan_fn(*args, return_last_state=True)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Bench:
    """Times backends on shapes, caching results so acceptance rows reuse table timings."""

    def __init__(self, device: str, dtype: torch.dtype, run_all: bool) -> None:
        self.device, self.dtype, self.run_all = device, dtype, run_all
        self.cache: dict[tuple, float | str] = {}

    def time(self, backend: str, batch: int, dim: int, length: int, force: bool = False) -> float | str:
        """Median ms, or a string saying why the backend did not run at this shape."""
        work = batch * dim * length * DSTATE
        if (
            backend == "reference"
            and not (force or self.run_all)
            and work > REFERENCE_WORK_LIMIT[self.device]
        ):
            return "skipped"
        key = (backend, batch, dim, length)
        if key in self.cache:
            return self.cache[key]
        log(f"  {backend:<10} batch {batch:>3} dim {dim:>5} L {length:>5} ...")
        try:
            x = make_inputs(batch, dim, length, self.dtype, self.device)
            fn = _mamba_raw(x) if backend == "mamba_ssm_raw" else lambda: selective_scan(**x, backend=backend)
            result: float | str = median_ms(fn, self.device)
        except torch.cuda.OutOfMemoryError:
            result = "out of memory"
        finally:
            if self.device == "cuda":
                torch.cuda.empty_cache()
        self.cache[key] = result
        return result


def table_rows(bench: Bench, backends: list[str], shapes: list[tuple], bandwidth: float | None) -> list[dict]:
    elem = torch.finfo(bench.dtype).bits // 8
    has_mamba = "mamba_ssm" in available_backends(bench.device)
    rows = []
    for batch, dim, length in shapes:
        times = {b: bench.time(b, batch, dim, length) for b in backends}
        mamba_ms = bench.time("mamba_ssm_raw", batch, dim, length) if has_mamba else None
        measured = [t for t in times.values() if isinstance(t, float)]
        fastest = min(measured) if measured else None
        nbytes = scan_bytes(batch, dim, DSTATE, length, elem)
        for backend, ms in times.items():
            row = dict(backend=backend, batch=batch, dim=dim, dstate=DSTATE, length=length)
            if isinstance(ms, float):
                gbps = nbytes / ms / 1e6
                row.update(ms=ms, gbps=gbps, vs_fastest=ms / fastest)
                if bandwidth is not None:
                    row["pct_bandwidth"] = 100 * gbps / bandwidth
                if isinstance(mamba_ms, float):
                    row["vs_mamba_ssm"] = ms / mamba_ms
            else:
                row["note"] = ms
            rows.append(row)
    return rows


def acceptance(bench: Bench) -> dict:
    """Chunked vs reference at one long stream, and how chunked's cost per sample scales with L."""
    ref = bench.time("reference", 1, ACCEPT_DIM, ACCEPT_LEN, force=True)
    chunked = bench.time("chunked", 1, ACCEPT_DIM, ACCEPT_LEN)
    short, long = ACCEPT_LENS_PER_SAMPLE
    t_short, t_long = (bench.time("chunked", 1, ACCEPT_DIM, n) for n in ACCEPT_LENS_PER_SAMPLE)
    return dict(
        reference_over_chunked=ref / chunked,
        reference_ms=ref,
        chunked_ms=chunked,
        per_sample_us={short: 1e3 * t_short / short, long: 1e3 * t_long / long},
        per_sample_ratio=(t_long / long) / (t_short / short),
    )


def multistep_vs_block(dtype: torch.dtype) -> list[dict]:
    """CUDA: the short-block kernel against the block scan on the lengths it is meant for."""
    from .triton_scan import block_scan, multistep_update

    rows = []
    for batch, dim in MULTISTEP_SHAPES:
        for length in MULTISTEP_LENS:
            log(f"  multistep vs block: batch {batch} dim {dim} L {length} ...")
            x = make_inputs(batch, dim, length, dtype, "cuda")
            multi = median_ms(lambda x=x: multistep_update(**x), "cuda")
            block = median_ms(lambda x=x: block_scan(**x), "cuda")
            rows.append(dict(batch=batch, dim=dim, length=length, multistep_ms=multi, block_ms=block))
    return rows


def _fmt(value: object, spec: str) -> str:
    return format(value, spec) if isinstance(value, float) else "-"


def print_report(
    rows: list[dict], accept: dict, multi: list[dict], bandwidth: float | None, head: str
) -> None:
    print(head)
    cols = f"{'backend':<10} {'batch':>5} {'dim':>5} {'N':>3} {'L':>5} {'median ms':>10} {'GB/s':>8} {'x fastest':>9}"
    if bandwidth is not None:
        cols += f" {'% BW':>6} {'x mamba':>8}"
    print(cols)
    for r in rows:
        line = f"{r['backend']:<10} {r['batch']:>5} {r['dim']:>5} {r['dstate']:>3} {r['length']:>5} "
        if "note" in r:
            print(line + f"{r['note']:>10}")
            continue
        line += f"{r['ms']:>10.3f} {r['gbps']:>8.2f} {r['vs_fastest']:>9.2f}"
        if bandwidth is not None:
            line += f" {_fmt(r.get('pct_bandwidth'), '6.2f'):>6} {_fmt(r.get('vs_mamba_ssm'), '8.2f'):>8}"
        print(line)
    short, long = ACCEPT_LENS_PER_SAMPLE
    us = accept["per_sample_us"]
    print(f"\nacceptance (dim {ACCEPT_DIM}, N {DSTATE}, batch 1):")
    print(
        f"  chunked vs reference, L {ACCEPT_LEN}: reference {accept['reference_ms']:.1f} ms, chunked "
        f"{accept['chunked_ms']:.1f} ms -> chunked {accept['reference_over_chunked']:.2f}x faster"
    )
    print(
        f"  chunked cost per sample: L {short} {us[short]:.2f} us, L {long} {us[long]:.2f} us -> "
        f"ratio (L {long} / L {short}) {accept['per_sample_ratio']:.2f}"
    )
    if multi:
        print("\nmulti-step update vs block scan (triton, CUDA):")
        print(f"{'batch':>5} {'dim':>5} {'L':>3} {'multistep ms':>12} {'block ms':>9} {'block/multi':>11}")
        for r in multi:
            print(
                f"{r['batch']:>5} {r['dim']:>5} {r['length']:>3} {r['multistep_ms']:>12.4f} "
                f"{r['block_ms']:>9.4f} {r['block_ms'] / r['multistep_ms']:>11.2f}"
            )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kernels.bench",
        description=(
            "Time the selective-scan backends on realistic Mamba shapes (N = 16) and print a table: "
            "median time, effective GB/s over the minimal bytes a scan moves, and the ratio to the fastest "
            "backend at that shape. On CUDA also % of measured copy bandwidth, the ratio to mamba-ssm's "
            "selective_scan_fn when installed, and the multi-step kernel against the block scan for short "
            "blocks. Two acceptance rows compare chunked with the reference. Progress goes to stderr."
        ),
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--backends", help="comma-separated subset of the available backends (default: all)")
    parser.add_argument("--quick", action="store_true", help=f"only {len(QUICK_SHAPES)} small shapes")
    parser.add_argument("--all", action="store_true", help="also run the slow reference on large shapes")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32", help="u, delta, z, B, C dtype")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    available = available_backends(args.device)
    args.backends = args.backends.split(",") if args.backends else available
    unknown = [b for b in args.backends if b not in available]
    if unknown:
        parser.error(
            f"--backends: {', '.join(unknown)} not available on {args.device} (have {', '.join(available)})"
        )
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else cpu_name()
    bandwidth = None
    if args.device == "cuda":
        log("measuring device copy bandwidth ...")
        bandwidth = device_bandwidth_gbps()
    head = (
        f"device {args.device} ({device_name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"dtype {args.dtype}" + (f", copy bandwidth {bandwidth:.0f} GB/s" if bandwidth else "")
    )
    bench = Bench(args.device, dtype, args.all)
    shapes = QUICK_SHAPES if args.quick else SHAPES[args.device]
    log(f"{len(shapes)} shapes x {len(args.backends)} backends")
    rows = table_rows(bench, args.backends, shapes, bandwidth)
    log("acceptance rows ...")
    accept = acceptance(bench)
    multi = multistep_vs_block(dtype) if args.device == "cuda" and "triton" in args.backends else []
    print_report(rows, accept, multi, bandwidth, head)
    result = dict(
        device=args.device, device_name=device_name, torch=torch.__version__, threads=torch.get_num_threads(),
        dtype=args.dtype, copy_bandwidth_gbps=bandwidth, rows=rows, acceptance=accept, multistep_vs_block=multi,
    )  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
