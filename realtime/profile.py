"""`python -m realtime profile`: how long each host block takes, against its deadline.

Runs a Processor block by block on a synthetic speech-like signal (band-limited noise bursts with a
pitch-like sweep) and reports the algorithmic latency, per-block compute time percentiles, the mean
real-time factor and deadline misses at 100 % and 70 % of the block period. The first blocks (warm-up:
allocation, kernel selection, caches) are reported separately and kept out of the steady-state figures.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

WARMUP_BLOCKS = 20


def speech_like(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A band-limited test signal (nothing above 3.8 kHz at rates >= 8 kHz): noise bursts over a sweep.

    Syllable-length bursts (80-300 ms) of noise shaped to a speech band, separated by short pauses,
    over a harmonic tone sweeping 100 -> 300 Hz (a voice's pitch range), float32 in [-1, 1].
    """
    if seconds <= 0 or rate <= 0:
        raise ValueError(f"seconds and rate must be positive, got {seconds}, {rate}")
    from scipy.signal import butter, cheby2, sosfilt

    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    f0 = 100.0 + 200.0 * t / max(seconds, 1e-9)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.zeros(n)
    pos = 0
    while pos < n:
        length = int(rng.uniform(0.08, 0.3) * rate)
        envelope[pos : pos + length] = np.hanning(length)[: n - pos] if length > 1 else 0.0
        pos += length + int(rng.uniform(0.02, 0.12) * rate)
    noise = rng.standard_normal(n)
    x = envelope * (0.5 * voiced + noise)
    x = sosfilt(butter(2, 80.0, btype="highpass", fs=rate, output="sos"), x)
    x = sosfilt(cheby2(12, 90, min(3800.0, 0.475 * rate), fs=rate, output="sos"), x)  # >= 90 dB stopband
    return (0.5 * x / (np.abs(x).max() + 1e-12)).astype(np.float32)


@dataclass
class ProfileResult:
    backend: str
    model: str
    sample_rate: int  # host (input) rate
    output_rate: int
    block_size: int  # host block, input samples
    block_ms: float
    latency_ms: float  # algorithmic latency of the processor
    blocks: int  # steady-state blocks (after warm-up)
    warmup_blocks: int
    warmup_max_ms: float
    warmup_mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    rtf_mean: float
    misses_100: int
    misses_70: int
    seconds: float
    machine: dict
    nonfinite_out: int  # NaN/Inf output samples (must be 0)
    state_floats: int  # recurrent state per stream, in fp32 scalars
    minutes: list  # per whole minute of audio: mean/p99 ms and RSS (the soak view)


def machine_info(threads: int | None = None) -> dict:
    """Where the figures were taken: CPU model, cores, threads, library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "threads": threads,
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        if threads is None:
            info["threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    ort = sys.modules.get("onnxruntime")
    if ort is not None:
        info["onnxruntime"] = ort.__version__
    return info


@dataclass
class RunTrace:
    """What one timed run saw besides the clock: for the per-minute soak report."""

    times: np.ndarray  # seconds per block
    rss_mb: list[float]  # resident memory after each minute of audio
    nonfinite: int  # output samples that were NaN or Inf


def _rss_mb() -> float:
    """Current resident memory of this process (Linux /proc; 0 where unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def time_blocks(processor, signal: np.ndarray, block: int, rate: int | None = None) -> RunTrace:
    """Time each `process` call on whole blocks of `signal`; memory is sampled every minute of audio.

    Garbage collection is paused while timing, as the live engine pauses it while streaming.
    """
    from .engine import paused_gc

    count = len(signal) // block
    times = np.empty(count)
    per_minute = max(1, round(60 * rate / block)) if rate else count + 1
    rss, nonfinite = [], 0
    clock = time.perf_counter
    with paused_gc():
        for i in range(count):
            chunk = signal[i * block : (i + 1) * block]
            start = clock()
            out = processor.process(chunk)
            times[i] = clock() - start
            nonfinite += int(out.size - np.count_nonzero(np.isfinite(out)))
            if (i + 1) % per_minute == 0:
                rss.append(_rss_mb())
    return RunTrace(times, rss, nonfinite)


def per_minute(trace: RunTrace, block: int, rate: int) -> list[dict[str, float]]:
    """Mean and p99 block time and resident memory for each whole minute of audio."""
    n = max(1, round(60 * rate / block))
    rows = []
    for m in range(len(trace.times) // n):
        ms = trace.times[m * n : (m + 1) * n] * 1e3
        rows.append(
            {
                "minute": m + 1,
                "mean_ms": float(ms.mean()),
                "p99_ms": float(np.percentile(ms, 99)),
                "rss_mb": trace.rss_mb[m] if m < len(trace.rss_mb) else float("nan"),
            }
        )
    return rows


def format_minutes(rows: list[dict[str, float]]) -> str:
    head = f"{'minute':>6}  {'mean ms':>8}  {'p99 ms':>8}  {'vs 1st':>7}  {'RSS MB':>8}"
    first = rows[0]["mean_ms"]
    lines = [head] + [
        f"{r['minute']:>6}  {r['mean_ms']:>8.3f}  {r['p99_ms']:>8.3f}  {r['mean_ms'] / first:>7.3f}  {r['rss_mb']:>8.1f}"
        for r in rows
    ]
    return "\n".join(lines)


def summarize(
    times: np.ndarray, block: int, rate: int, warmup: int = WARMUP_BLOCKS
) -> tuple[dict[str, float], dict[str, float]]:
    """(steady-state figures, warm-up figures) in ms from per-block seconds."""
    if len(times) <= warmup:
        raise ValueError(f"need more than {warmup} blocks to profile, got {len(times)}; raise --seconds")
    period = block / rate
    head, steady = times[:warmup] * 1e3, times[warmup:]
    ms = steady * 1e3
    stats = {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "p999_ms": float(np.percentile(ms, 99.9)),
        "max_ms": float(ms.max()),
        "mean_ms": float(ms.mean()),
        "rtf_mean": float(steady.sum() / (len(steady) * period)),
        "misses_100": int((steady > period).sum()),
        "misses_70": int((steady > 0.7 * period).sum()),
        "blocks": len(steady),
    }
    return stats, {
        "warmup_blocks": warmup,
        "warmup_max_ms": float(head.max()),
        "warmup_mean_ms": float(head.mean()),
    }


def format_result(r: ProfileResult) -> str:
    rows = [
        ("model / backend", f"{r.model} / {r.backend}"),
        ("rates", f"{r.sample_rate} -> {r.output_rate} Hz"),
        ("host block", f"{r.block_size} samples = {r.block_ms:.2f} ms"),
        ("algorithmic latency", f"{r.latency_ms:.2f} ms"),
        ("blocks (steady)", f"{r.blocks} ({r.seconds:.1f} s of audio)"),
        (
            "warm-up",
            f"{r.warmup_blocks} blocks, mean {r.warmup_mean_ms:.2f} ms, max {r.warmup_max_ms:.2f} ms",
        ),
        ("per block p50/p95/p99", f"{r.p50_ms:.2f} / {r.p95_ms:.2f} / {r.p99_ms:.2f} ms"),
        ("per block p99.9 / max", f"{r.p999_ms:.2f} / {r.max_ms:.2f} ms"),
        ("mean RTF", f"{r.rtf_mean:.3f}"),
        ("misses > 100 % period", f"{r.misses_100} ({100 * r.misses_100 / r.blocks:.1f} %)"),
        ("misses > 70 % period", f"{r.misses_70} ({100 * r.misses_70 / r.blocks:.1f} %)"),
        ("state per stream", f"{r.state_floats} floats ({4 * r.state_floats / 1024:.1f} KiB)"),
        ("non-finite output", f"{r.nonfinite_out} samples"),
        ("machine", f"{r.machine.get('cpu')}, {r.machine.get('threads', '?')} thread(s)"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("--plot needs matplotlib (pip install matplotlib, or the 'plot' extra)") from None
    return plt


def plot(times: np.ndarray, r: ProfileResult, path: str | os.PathLike) -> None:
    """Per-block time over the run and its histogram, with the 100 % and 70 % deadlines."""
    plt = _pyplot()
    ms = times * 1e3
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    ax1.plot(np.arange(len(ms)), ms, lw=0.6, color="tab:blue")
    ax1.axvspan(0, r.warmup_blocks, color="0.9", label="warm-up")
    ax1.axhline(r.block_ms, color="tab:red", lw=1, label="deadline (100 %)")
    ax1.axhline(0.7 * r.block_ms, color="tab:orange", lw=1, ls="--", label="70 %")
    ax1.set(
        xlabel="block",
        ylabel="compute time (ms)",
        title=f"{r.model} / {r.backend}, {r.block_ms:.1f} ms blocks",
    )
    ax1.legend(loc="upper right", fontsize=8)
    steady = ms[r.warmup_blocks :]
    ax2.hist(steady, bins=60, color="tab:blue")
    ax2.axvline(r.block_ms, color="tab:red", lw=1)
    ax2.axvline(0.7 * r.block_ms, color="tab:orange", lw=1, ls="--")
    ax2.set(xlabel="compute time (ms)", ylabel="blocks", yscale="log", title=f"p99 {r.p99_ms:.2f} ms")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def profile(
    processor,
    model_name: str,
    seconds: float,
    block: int,
    warmup: int = WARMUP_BLOCKS,
    threads: int | None = None,
) -> tuple[ProfileResult, np.ndarray]:
    """Time `processor` on `seconds` of speech-like signal in host blocks of `block` input samples."""
    rate = processor.input_rate
    signal = speech_like(seconds + warmup * block / rate, rate)
    if processor.channels > 1:
        signal = np.repeat(signal[:, None], processor.channels, axis=1)
    processor.reset()
    trace = time_blocks(processor, signal, block, rate)
    stats, head = summarize(trace.times, block, rate, warmup)
    result = ProfileResult(
        backend=processor.backend,
        model=model_name,
        sample_rate=rate,
        output_rate=processor.output_rate,
        block_size=block,
        block_ms=1e3 * block / rate,
        latency_ms=1e3 * processor.latency / processor.output_rate,
        seconds=stats["blocks"] * block / rate,
        machine=machine_info(threads),
        nonfinite_out=trace.nonfinite,
        state_floats=_state_floats(processor),
        minutes=per_minute(trace, block, rate),
        **stats,
        **head,
    )
    return result, trace.times


def _state_floats(processor) -> int:
    """Scalars in one stream's model state (the Processor runs `channels` streams)."""
    state = processor.stepper.init_state(1)
    return int(sum(np.prod(getattr(v, "shape", ())) for v in state.values()))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m realtime profile`; returns the exit code."""
    from .cli import MODEL_HELP, PROG, CliError, OneLineParser, build_processor, load_generator, positive
    from .processor import BACKENDS

    p = OneLineParser(
        prog=f"{PROG} profile",
        description=(
            "Time the processor block by block on a synthetic speech-like signal (no audio device): "
            "algorithmic latency, per-block compute p50/p95/p99/p99.9/max, mean real-time factor, and "
            "deadline misses at 100 % and 70 % of the block period. The first --warmup blocks are "
            "reported separately. A preset without trained weights is timed with random weights "
            "(the cost does not depend on weight values)."
        ),
    )
    p.add_argument("--model", default="speech", metavar="PRESET|PATH", help=MODEL_HELP)
    p.add_argument(
        "--backend", default="auto", choices=BACKENDS, help="torch, onnx, triton or auto (default)"
    )
    p.add_argument("--samplerate", type=positive(int), metavar="HZ", help="input rate (default: the model's)")
    p.add_argument(
        "--output-samplerate", type=positive(int), metavar="HZ", help="output rate (default: the model's)"
    )
    p.add_argument(
        "--blocksize", type=positive(int), metavar="N", help="host block, input samples (default 10 ms)"
    )
    p.add_argument("--model-block", type=positive(int), metavar="N", help="model block, model-rate samples")
    p.add_argument(
        "--seconds", type=positive(float), default=10.0, help="audio timed after warm-up (default 10)"
    )
    p.add_argument(
        "--warmup", type=positive(int), default=WARMUP_BLOCKS, metavar="N", help="warm-up blocks (default 20)"
    )
    p.add_argument(
        "--threads",
        type=positive(int),
        default=1,
        metavar="N",
        help="model threads, torch or onnxruntime (default 1, as live)",
    )
    p.add_argument("--json", metavar="PATH", help="write the figures and machine info as JSON")
    p.add_argument("--plot", metavar="PNG", help="per-block times and their histogram (needs matplotlib)")
    args = p.parse_args(argv)
    try:
        if args.plot:
            try:
                _pyplot()  # fail before timing, not after
            except ImportError as err:
                raise CliError(str(err)) from None
        model, _ = load_generator(
            args.model,
            random_init=False,
            fallback_random=True,
            backend=args.backend,
            threads=args.threads,
            block_size=args.model_block,
        )
        rate = args.samplerate or int(model.sample_rate)
        proc = build_processor(model, rate, args.output_samplerate, args.backend, block_size=args.model_block)
        block = args.blocksize or round(0.01 * rate)
        result, times = profile(proc, args.model, args.seconds, block, args.warmup, args.threads)
        print(format_result(result))
        if len(result.minutes) > 1:
            print("\nper minute of audio (constant cost and flat memory over a long stream):")
            print(format_minutes(result.minutes))
        if args.json:
            Path(args.json).write_text(json.dumps(asdict(result), indent=2) + "\n")
        if args.plot:
            plot(times, result, args.plot)
    except CliError as err:
        print(f"{PROG} profile: error: {err}", file=sys.stderr)
        return 2
    return 0
