"""`livesr serve-bench`: how many live streams one `livesr serve` holds in real time.

For each stream count N it opens N paced clients over loopback (each sends one 10 ms frame every
10 ms, starts staggered over one period), to a server it starts in a separate process (or to --url),
and reports per stream-frame round trip (from sending a frame to receiving all the output owed for
it) p50 / p99 / max, frames whose round trip exceeded one frame period, lost samples (output owed
but never received: must be 0), and the server's CPU use. N holds real time when its p99 round trip
is under one frame period and nothing is lost. For the batching gain it also runs the same N streams
as independent unbatched processors in this process and compares CPU seconds per stream-second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FRAME_SECONDS = 0.01


@dataclass
class BenchRow:
    streams: int
    rtt_p50_ms: float
    rtt_p99_ms: float
    rtt_max_ms: float
    late_frames: int
    frames: int
    lost_samples: int
    server_cpu: float  # server CPU seconds per wall second (1.0 = one core busy)
    batched_cpu_ms: float  # server CPU ms per stream-second
    unbatched_cpu_ms: float  # independent processors: CPU ms per stream-second
    holds: bool

    @property
    def gain(self) -> float:
        return self.unbatched_cpu_ms / self.batched_cpu_ms if self.batched_cpu_ms else float("nan")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _client(url: str, x: np.ndarray, rate: int, delay: float, rtts: list[float]) -> int:
    """One paced stream; appends its frames' round trips, returns the samples it never received."""
    from websockets.asyncio.client import connect

    frame = round(rate * FRAME_SECONDS)
    async with connect(url, max_size=2**22) as ws:
        header = json.loads(await ws.recv())
        if "error" in header:
            raise RuntimeError(f"server refused the stream: {header['error']}")
        ratio = header["output_rate"] / rate
        sent_at: list[tuple[int, float]] = []  # (output owed once this frame is processed, send time)
        received = 0

        async def send() -> None:
            await asyncio.sleep(delay)
            start = time.monotonic()
            for k, i in enumerate(range(0, x.size, frame)):
                await asyncio.sleep(max(0.0, start + k * FRAME_SECONDS - time.monotonic()))
                sent_at.append((int((i + frame) * ratio), time.monotonic()))
                await ws.send(x[i : i + frame].astype("<f4").tobytes())
            await ws.send(json.dumps({"event": "end"}))

        sender = asyncio.create_task(send())
        done = 0
        async for message in ws:
            received += len(message) // 4
            now = time.monotonic()
            while done < len(sent_at) and received >= sent_at[done][0]:
                rtts.append(now - sent_at[done][1])
                done += 1
        await sender
        owed = header["latency_samples"] + round(x.size * ratio)
        return max(0, owed - received)


async def _run_clients(url: str, n: int, seconds: float, rate: int) -> tuple[list[float], int]:
    rng = np.random.default_rng(0)
    rtts: list[float] = []
    xs = [(0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32) for _ in range(n)]
    lost = await asyncio.gather(
        *(_client(url, x, rate, FRAME_SECONDS * i / n, rtts) for i, x in enumerate(xs))
    )
    return rtts, int(sum(lost))


def unbatched_cpu_ms(model: str, rate: int, n: int, seconds: float) -> float:
    """CPU ms per stream-second of N independent processors stepping 10 ms host blocks in turn."""
    from .generators import load_generator
    from .processor import Processor

    procs = [Processor(load_generator(model), rate) for _ in range(n)]
    frame = round(rate * FRAME_SECONDS)
    block = (0.1 * np.random.default_rng(1).standard_normal(frame)).astype(np.float32)
    frames = max(1, round(min(seconds, 2.0) / FRAME_SECONDS))  # a couple of seconds gives a stable mean
    t0 = time.process_time()
    for _ in range(frames):
        for p in procs:
            p.process(block)
    return (time.process_time() - t0) * 1e3 / (n * frames * FRAME_SECONDS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(model: str, max_batch: int, threads: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "realtime", "serve", "--port", str(port), "--models", model]
    options = ["--max-batch", str(max_batch), "--threads", str(threads)]
    server = subprocess.Popen([*cmd, *options], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    server.stdout.readline()  # the banner: the server is listening
    return server, f"ws://127.0.0.1:{port}"


def bench(
    counts: Sequence[int],
    seconds: float,
    rate: int,
    model: str,
    url: str | None = None,
    max_batch: int = 64,
    threads: int = 1,
) -> list[BenchRow]:
    server, base = _start_server(model, max_batch, threads) if url is None else (None, url.rstrip("/"))
    rows = []
    try:
        for n in counts:
            stream_url = f"{base}/v1/stream?model={model}&rate={rate}"
            cpu0, t0 = (_cpu_seconds(server.pid), time.monotonic()) if server else (0.0, time.monotonic())
            rtts, lost = asyncio.run(_run_clients(stream_url, n, seconds, rate))
            wall = time.monotonic() - t0
            cpu = _cpu_seconds(server.pid) - cpu0 if server else float("nan")
            ms = np.array(rtts) * 1e3
            p99 = float(np.percentile(ms, 99))
            row = BenchRow(
                streams=n,
                rtt_p50_ms=float(np.percentile(ms, 50)),
                rtt_p99_ms=p99,
                rtt_max_ms=float(ms.max()),
                late_frames=int((ms > FRAME_SECONDS * 1e3).sum()),
                frames=ms.size,
                lost_samples=lost,
                server_cpu=cpu / wall,
                batched_cpu_ms=cpu * 1e3 / (n * seconds),
                unbatched_cpu_ms=unbatched_cpu_ms(model, rate, n, seconds),
                holds=p99 < FRAME_SECONDS * 1e3 and lost == 0,
            )
            rows.append(row)
            print(format_row(row), flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait()
    return rows


HEADER = "streams  rtt p50 / p99 / max ms  late frames  lost  server CPU  batched / unbatched CPU ms per stream-s  gain  real time"


def format_row(r: BenchRow) -> str:
    return (
        f"{r.streams:7d}  {r.rtt_p50_ms:6.1f} / {r.rtt_p99_ms:6.1f} / {r.rtt_max_ms:6.1f}  "
        f"{r.late_frames:5d} / {r.frames:<6d} {r.lost_samples:5d}  {r.server_cpu:9.2f}  "
        f"{r.batched_cpu_ms:14.1f} / {r.unbatched_cpu_ms:6.1f}              {r.gain:5.2f}  {'yes' if r.holds else 'no'}"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="livesr serve-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--streams", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64], help="stream counts to try"
    )
    p.add_argument("--seconds", type=float, default=10.0, help="length of every stream")
    p.add_argument("--rate", type=int, default=16000, help="input rate of every stream")
    p.add_argument("--model", default="speech")
    p.add_argument("--url", help="a running server (ws://HOST:PORT); default: start one")
    p.add_argument("--max-batch", type=int, default=64, help="streams per model call of the started server")
    p.add_argument(
        "--threads", type=int, default=1, help="onnxruntime threads per model call of the started server"
    )
    p.add_argument("--json", type=Path, help="also write the rows here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if any(n < 1 for n in args.streams) or args.seconds <= 0:
        print("error: --streams must be >= 1 and --seconds > 0", file=sys.stderr)
        return 2
    print(HEADER, flush=True)
    rows = bench(args.streams, args.seconds, args.rate, args.model, args.url, args.max_batch, args.threads)
    held = [r.streams for r in rows if r.holds]
    print(f"largest stream count in real time: {max(held) if held else 'none'}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {"gain": r.gain} for r in rows], indent=2) + "\n")
    return 0
