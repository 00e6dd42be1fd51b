"""Live duplex host: the audio callback only moves samples; worker threads run the model.

    device input --callback--> input ring --worker--> Processor.process --> wet ring --callback--> device output
                                         \\--dry worker--> dry path (same delay) --> dry ring --/

Every ring is addressed by absolute sample index, so "where the output is" is one integer and lateness
never shifts the timeline: output sample n is processor output n - handoff, whatever happened before.
The hand-off is one host block (the worker has one block period to produce it) plus the cross-fade
length (a wet-to-dry fade needs wet samples past the point where the worker fell behind).

If the wet samples for a callback are not there in time, the callback plays the dry resampled input
(time-aligned with the wet output) for that stretch, cross-fading out of and back into the wet signal,
and counts a deadline miss. Wet samples that arrive late are dropped, so the latency never drifts.
"""

from __future__ import annotations

import contextlib
import gc
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

# Status flag names of sounddevice.CallbackFlags counted as xruns.
XRUN_FLAGS = ("input_underflow", "input_overflow", "output_underflow", "output_overflow", "priming_output")


class BlockProcessor(Protocol):
    """What the engine needs from a processor (realtime.processor.Processor satisfies it)."""

    input_rate: int
    output_rate: int
    channels: int
    latency: int

    def process(self, block: np.ndarray) -> np.ndarray: ...

    def reset(self) -> None: ...


class SampleRing:
    """Ring of float32 frames addressed by absolute sample index; one writer, lock-free readers.

    `span = (start, end)`: the absolute indices [start, end) that hold valid samples. The writer copies
    samples first and publishes the new span afterwards as one tuple (an atomic assignment under the
    GIL), so a reader never sees a sample that is not written yet. Readers own their read positions;
    the writer of an output ring consults `reader_pos` so it never overwrites what is still to be played.
    """

    def __init__(self, capacity: int, channels: int) -> None:
        if capacity <= 0 or channels <= 0:
            raise ValueError(
                f"SampleRing: capacity and channels must be positive, got {capacity}, {channels}"
            )
        self.capacity = capacity
        self.buf = np.zeros((capacity, channels), np.float32)
        self.span: tuple[int, int] = (0, 0)
        self.reader_pos = 0

    def holds(self, begin: int, end: int) -> bool:
        """Whether every sample in [begin, end) is valid now."""
        start, stop = self.span
        return start <= begin and end <= stop and stop - begin <= self.capacity

    def fill_zeros(self, length: int) -> None:
        """Start the timeline with `length` samples of silence (the part before the stream began)."""
        if length > self.capacity:
            raise ValueError(f"SampleRing: {length} leading zeros do not fit in capacity {self.capacity}")
        self.buf[:length] = 0.0
        self.span = (0, length)

    def write(self, data: np.ndarray, guard_reader: bool = False) -> bool:
        """Append `data` (frames, channels) at the end of the valid range.

        With `guard_reader` (output rings) samples already behind `reader_pos` are skipped, and data
        that would overwrite unread samples is refused: everything is invalidated and False returned.
        Without it (the input ring) the oldest samples are overwritten; readers check `intact`.
        """
        start, end = self.span
        n = data.shape[0]
        new_end = end + n
        skip = 0
        if guard_reader:
            if new_end - self.reader_pos > self.capacity:
                self.span = (new_end, new_end)
                return False
            skip = min(max(self.reader_pos - end, 0), n)  # late samples nobody will read
        self._copy_in(data[skip:], end + skip)
        self.span = (end + skip if skip else max(start, new_end - self.capacity), new_end)
        return True

    def intact(self, begin: int, margin: int) -> bool:
        """Whether samples from `begin` on survived (and will survive a write of `margin` in progress)."""
        start, stop = self.span
        return begin >= start and stop + margin - begin <= self.capacity

    def skip_to(self, pos: int) -> None:
        """Restart the valid range at absolute index `pos` (after a resynchronisation)."""
        self.span = (pos, pos)

    def read_into(self, out: np.ndarray, begin: int) -> None:
        """Copy samples [begin, begin + len(out)) into `out` (the caller checked `holds`)."""
        n = out.shape[0]
        i = begin % self.capacity
        first = min(n, self.capacity - i)
        out[:first] = self.buf[i : i + first]
        if first < n:
            out[first:] = self.buf[: n - first]

    def _copy_in(self, data: np.ndarray, begin: int) -> None:
        n = data.shape[0]
        if n == 0:
            return
        i = begin % self.capacity
        first = min(n, self.capacity - i)
        self.buf[i : i + first] = data[:first]
        if first < n:
            self.buf[: n - first] = data[first:]


class _Lane:
    """One reader of the input ring: feeds a processor block by block into its own output ring."""

    def __init__(
        self,
        proc: BlockProcessor,
        source: SampleRing,
        sink: SampleRing,
        chunk: int,
        handoff: int,
        margin: int,
        max_backlog: int,
    ) -> None:
        self.proc, self.source, self.sink = proc, source, sink
        self.chunk, self.handoff, self.margin, self.max_backlog = chunk, handoff, margin, max_backlog
        step = math.gcd(proc.input_rate, proc.output_rate)
        self.up, self.down = proc.output_rate // step, proc.input_rate // step
        self.pos = 0  # next input sample to read (absolute)
        self.block = np.zeros((chunk, source.buf.shape[1]), np.float32)
        self.discard = 0  # output samples still to drop after a resync
        self.resyncs = 0
        self.overflows = 0

    def pump(self) -> bool:
        """Process one host block of input if one has arrived; returns whether it did."""
        stop = self.source.span[1]
        if stop - self.pos < self.chunk:
            return False
        if stop - self.pos > self.max_backlog:  # its output would be played dry anyway: skip ahead
            self.resync(stop)
            return True
        if self.source.intact(self.pos, self.margin):
            self.source.read_into(self.block, self.pos)
        if not self.source.intact(self.pos, self.margin):  # overwritten while it was behind: skip ahead
            self.resync(self.source.span[1])
            return True
        self.pos += self.chunk
        out = np.asarray(self.proc.process(self.block), np.float32).reshape(-1, self.block.shape[1])
        if self.discard:
            cut = min(self.discard, out.shape[0])
            out, self.discard = out[cut:], self.discard - cut
        if not self.sink.write(out, guard_reader=True):
            self.overflows += 1
        return True

    def resync(self, stop: int) -> None:
        """Restart the processor at input index `stop` (rounded to where output indices are whole).

        Its first `latency` output samples after a reset are start-up (pre-fill, filter warm-up), not
        signal: they are discarded and the output ring resumes where the restarted signal begins.
        """
        self.pos = stop - stop % self.down
        self.proc.reset()
        self.discard = self.proc.latency
        self.sink.skip_to(self.handoff + self.pos * self.up // self.down + self.discard)
        self.resyncs += 1


@dataclass
class EngineStats:
    callbacks: int = 0
    misses: int = 0  # callbacks that played (some) dry signal because the wet one was late
    missed_samples: int = 0
    dry_gaps: int = 0  # callbacks where even the dry signal was late (silence faded in its place)
    xruns: int = 0  # callbacks carrying any xrun status flag
    flags: dict[str, int] = field(default_factory=lambda: dict.fromkeys(XRUN_FLAGS, 0))


class Engine:
    """Ring buffers, the audio callbacks and the worker threads for one processor.

    `processor` makes the wet signal, `dry` (same rates, same `latency`) the plain resampled input
    played when the wet one is late. `blocksize` is the host block in input samples. Drive it with
    real streams (`run_live`) or call `callback`/`pump` directly.
    """

    def __init__(
        self,
        processor: BlockProcessor,
        dry: BlockProcessor,
        blocksize: int,
        crossfade_ms: float = 2.0,
        separate_streams: bool = False,
        ring_seconds: float = 4.0,
        max_backlog_s: float = 0.5,
    ) -> None:
        if blocksize <= 0:
            raise ValueError(f"Engine: blocksize must be a positive number of samples, got {blocksize}")
        if max_backlog_s <= 0:
            raise ValueError(f"Engine: max_backlog_s must be positive seconds, got {max_backlog_s}")
        if crossfade_ms < 0:
            raise ValueError(f"Engine: crossfade_ms must be >= 0, got {crossfade_ms}")
        for name in ("input_rate", "output_rate", "channels", "latency"):
            if getattr(dry, name) != getattr(processor, name):
                raise ValueError(
                    f"Engine: the dry path's {name} ({getattr(dry, name)}) differs from the processor's "
                    f"({getattr(processor, name)}); the dry signal must be time-aligned with the wet one"
                )
        if not separate_streams and processor.input_rate != processor.output_rate:
            raise ValueError(
                f"Engine: one duplex stream runs at one rate; input {processor.input_rate} Hz and output "
                f"{processor.output_rate} Hz need separate_streams=True"
            )
        self.processor, self.dry = processor, dry
        self.separate_streams = separate_streams
        self.input_rate, self.output_rate = processor.input_rate, processor.output_rate
        self.channels = processor.channels
        self.blocksize = blocksize
        self.out_blocksize = math.ceil(blocksize * self.output_rate / self.input_rate)
        self.fade = min(round(crossfade_ms * 1e-3 * self.output_rate), self.out_blocksize)
        # One output block for the worker to produce it, the fade for a wet-to-dry cross-fade, and with
        # two unsynchronised streams one more block for the phase between their callbacks.
        self.handoff = self.out_blocksize + self.fade + (self.out_blocksize if separate_streams else 0)

        max_out = 4 * self.out_blocksize  # callbacks larger than this are refused (fixed blocksize expected)
        in_cap = max(int(ring_seconds * self.input_rate), 8 * blocksize)
        out_cap = max(int(ring_seconds * self.output_rate), 8 * max_out) + self.handoff
        self.in_ring = SampleRing(in_cap, self.channels)
        self.wet_ring = SampleRing(out_cap, self.channels)
        self.dry_ring = SampleRing(out_cap, self.channels)
        self.wet_ring.fill_zeros(self.handoff)  # the stretch before the first processed block
        self.dry_ring.fill_zeros(self.handoff)
        backlog = max(int(max_backlog_s * self.input_rate), 2 * blocksize)
        self.wet_lane = _Lane(
            processor, self.in_ring, self.wet_ring, blocksize, self.handoff, 4 * blocksize, backlog
        )
        self.dry_lane = _Lane(
            dry, self.in_ring, self.dry_ring, blocksize, self.handoff, 4 * blocksize, backlog
        )

        self.out_pos = 0
        self.playing_wet = True
        self.stats = EngineStats()
        self._scratch = np.zeros((max_out, self.channels), np.float32)
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(self.fade) + 0.5) / max(self.fade, 1))
        self._fade_in = ramp.astype(np.float32)[:, None]
        self._fade_out = (1.0 - ramp).astype(np.float32)[:, None]
        self._running = False
        self._threads: list[threading.Thread] = []
        self.error: BaseException | None = None

    # ---- audio thread -------------------------------------------------------------------------------
    def callback(
        self, indata: np.ndarray, outdata: np.ndarray, frames: int, time_info: Any, status: Any
    ) -> None:
        """sounddevice duplex callback."""
        self.note_status(status)
        self.on_input(indata)
        self.on_output(outdata)

    def input_callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """sounddevice input-only callback (separate streams)."""
        self.note_status(status)
        self.on_input(indata)

    def output_callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """sounddevice output-only callback (separate streams)."""
        self.note_status(status)
        self.on_output(outdata)

    def note_status(self, status: Any) -> None:
        if status:
            self.stats.xruns += 1
            for name in XRUN_FLAGS:
                if getattr(status, name, False):
                    self.stats.flags[name] += 1

    def on_input(self, indata: np.ndarray) -> None:
        self.in_ring.write(indata)

    def on_output(self, out: np.ndarray) -> None:
        """Fill `out` with wet samples, or the dry ones cross-faded in where the wet ones are late."""
        n = out.shape[0]
        if self.in_ring.span[1] == 0:
            out.fill(0.0)  # separate streams: the input has not started yet
            return
        if n > self._scratch.shape[0]:  # an unexpectedly long callback: serve it in pieces
            for i in range(0, n, self._scratch.shape[0]):
                self.on_output(out[i : i + self._scratch.shape[0]])
            return
        self.stats.callbacks += 1
        p, x = self.out_pos, min(self.fade, n)
        wet, dry = self.wet_ring, self.dry_ring
        if wet.holds(p, p + n + self.fade):
            if self.playing_wet:
                wet.read_into(out, p)
            else:  # back from dry: fade the wet signal in
                wet.read_into(out, p)
                tmp = self._dry_into(n, p)
                self._mix(out, tmp, x, self._fade_in, self._fade_out)
                self.playing_wet = True
        else:
            self.stats.misses += 1
            self.stats.missed_samples += n
            tmp = self._dry_into(n, p)
            if self.playing_wet and wet.holds(p, p + x):  # fade the wet signal out while it lasts
                wet.read_into(out[:x], p)
                self._mix(out, tmp, x, self._fade_out, self._fade_in)
                out[x:] = tmp[x:n]
            else:
                out[:] = tmp[:n]
            self.playing_wet = False
        self.out_pos = p + n
        wet.reader_pos = dry.reader_pos = p + n

    def _dry_into(self, n: int, p: int) -> np.ndarray:
        tmp = self._scratch
        if self.dry_ring.holds(p, p + n):
            self.dry_ring.read_into(tmp[:n], p)
            return tmp
        self.stats.dry_gaps += 1
        tmp[:n] = 0.0
        return tmp

    @staticmethod
    def _mix(
        out: np.ndarray, other: np.ndarray, x: int, gain_out: np.ndarray, gain_other: np.ndarray
    ) -> None:
        """out[:x] = out[:x] * gain_out + other[:x] * gain_other, in place."""
        out[:x] *= gain_out[:x]
        other[:x] *= gain_other[:x]
        out[:x] += other[:x]

    # ---- worker threads -----------------------------------------------------------------------------
    def warm_up(self, seconds: float = 0.5) -> None:
        """Run the processor on silence, then reset it: first calls allocate and pick kernels (slow)."""
        if self._running or self.in_ring.span[1]:
            raise RuntimeError("Engine.warm_up: only before streaming starts")
        block = np.zeros((self.blocksize, self.channels), np.float32)
        for _ in range(max(1, round(seconds * self.input_rate / self.blocksize))):
            self.processor.process(block)
            self.dry.process(block)
        self.processor.reset()
        self.dry.reset()

    def pump(self) -> bool:
        """Run the wet processor on one arrived host block (what the worker thread loops on)."""
        return self.wet_lane.pump()

    def pump_dry(self) -> bool:
        """Run the dry path on one arrived host block (what the dry thread loops on)."""
        return self.dry_lane.pump()

    def start_workers(self) -> None:
        self._running = True
        poll = min(max(self.blocksize / self.input_rate / 8, 0.0005), 0.002)
        for lane, name in ((self.wet_lane, "livesr-worker"), (self.dry_lane, "livesr-dry")):
            thread = threading.Thread(target=self._loop, args=(lane, poll), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop_workers(self) -> None:
        self._running = False
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def _loop(self, lane: _Lane, poll: float) -> None:
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_flush_denormal(True)  # per thread: silence must not slow the model down
        try:
            while self._running:
                if not lane.pump():
                    time.sleep(poll)  # polling, not an Event: the callback never touches a lock
        except BaseException as exc:  # surfaced by run_live; the callback keeps playing the dry signal
            self.error = exc
            self._running = False

    # ---- accounting ---------------------------------------------------------------------------------
    def summary(
        self, device_latency: tuple[float, float] = (0.0, 0.0), measured_ms: float | None = None
    ) -> dict:
        """Counters and the latency budget (ms) as a JSON-ready dict."""
        rate = self.output_rate
        algorithmic = 1e3 * self.processor.latency / rate
        handoff = 1e3 * self.handoff / rate
        dev_in, dev_out = (1e3 * d for d in device_latency)
        proc_stats = getattr(self.processor, "stats", None)
        return {
            "input_rate": self.input_rate,
            "output_rate": rate,
            "blocksize": self.blocksize,
            "channels": self.channels,
            "blocks": self.stats.callbacks,
            "misses": self.stats.misses,
            "missed_samples": self.stats.missed_samples,
            "dry_gaps": self.stats.dry_gaps,
            "xruns": self.stats.xruns,
            "xrun_flags": dict(self.stats.flags),
            "resyncs": self.wet_lane.resyncs + self.dry_lane.resyncs,
            "ring_overflows": self.wet_lane.overflows + self.dry_lane.overflows,
            "processor_stats": _as_dict(proc_stats),
            "latency_samples": self.processor.latency + self.handoff,
            "algorithmic_ms": algorithmic,
            "handoff_ms": handoff,
            "device_input_ms": dev_in,
            "device_output_ms": dev_out,
            "reported_latency_ms": algorithmic + handoff + dev_in + dev_out,
            "measured_latency_ms": measured_ms,
        }


def _as_dict(stats: Any) -> dict | None:
    if stats is None:
        return None
    if isinstance(stats, dict):
        return dict(stats)
    if hasattr(stats, "__dataclass_fields__"):
        return {k: getattr(stats, k) for k in stats.__dataclass_fields__}
    return {k: v for k, v in vars(stats).items() if not k.startswith("_")}


def format_summary(summary: dict) -> str:
    """The summary as a small two-column table."""

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f} ms"

    rows = [
        ("blocks", str(summary["blocks"])),
        ("deadline misses", f"{summary['misses']} ({summary['missed_samples']} samples played dry)"),
        ("dry-path gaps", str(summary["dry_gaps"])),
        ("xruns", f"{summary['xruns']} " + str({k: v for k, v in summary["xrun_flags"].items() if v})),
        ("resyncs", str(summary["resyncs"])),
        ("latency: algorithmic", ms(summary["algorithmic_ms"])),
        ("latency: hand-off", ms(summary["handoff_ms"])),
        ("latency: device in+out", ms(summary["device_input_ms"] + summary["device_output_ms"])),
        ("latency: reported total", ms(summary["reported_latency_ms"])),
        ("latency: measured", ms(summary["measured_latency_ms"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside: one collection pass can stall a block for milliseconds.

    Objects alive on entry are frozen out of later passes; collection resumes on exit.
    """
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def run_live(
    engine: Engine,
    input_device: int | None,
    output_device: int | None,
    duration: float | None = None,
    latency: str | float = "low",
    on_started: Callable[[dict], None] | None = None,
) -> dict:
    """Stream through real devices until `duration` seconds pass or Ctrl-C; returns the summary.

    One duplex stream when `engine` runs one rate on one host API, else an input and an output stream.
    The garbage collector is frozen and disabled while streaming (a collection pause is an xrun), and
    the interpreter switches threads more often so the callback gets the GIL promptly.
    """
    import sounddevice as sd

    if duration is not None and duration <= 0:
        raise ValueError(f"duration must be positive seconds, got {duration}")
    common = {"dtype": "float32", "latency": latency, "channels": engine.channels}
    if engine.separate_streams:
        streams = [
            sd.InputStream(
                samplerate=engine.input_rate,
                blocksize=engine.blocksize,
                device=input_device,
                callback=engine.input_callback,
                **common,
            ),
            sd.OutputStream(
                samplerate=engine.output_rate,
                blocksize=engine.out_blocksize,
                device=output_device,
                callback=engine.output_callback,
                **common,
            ),
        ]
        device_latency = (float(streams[0].latency), float(streams[1].latency))
    else:
        streams = [
            sd.Stream(
                samplerate=engine.input_rate,
                blocksize=engine.blocksize,
                device=(input_device, output_device),
                callback=engine.callback,
                **common,
            )
        ]
        device_latency = tuple(float(v) for v in streams[0].latency)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    interrupted = False
    with paused_gc():
        try:
            engine.start_workers()
            for stream in reversed(streams):  # output first: it idles until the input has started
                stream.start()
            if on_started is not None:
                on_started(engine.summary(device_latency))
            start = time.monotonic()
            while engine.error is None and (duration is None or time.monotonic() - start < duration):
                time.sleep(0.02)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            for stream in streams:
                stream.stop()
                stream.close()
            engine.stop_workers()
            sys.setswitchinterval(switch)
    if engine.error is not None:
        raise engine.error
    summary = engine.summary(device_latency)
    summary["interrupted"] = interrupted
    return summary
