"""Many live streams, one batched model call per tick: the transport-free core of `livesr serve`.

Streams that share a model, both rates and the new band's trim form a group with one `StreamChain`.
Each stream keeps its own chain state (batch 1) and an input buffer. A tick takes one
`aligned_chunk` of input from every stream of a group that has one ready, stacks their states
(`StreamChain.stack`), runs the whole chain once for all of them (resampler, model, band merge,
output FIFO: one call each), and hands each stream its rows back. Because every stream is stepped
in whole aligned chunks, a stream gets exactly the samples file mode would give it, whoever it was
batched with.

Isolation: non-finite input samples are replaced by 0 and samples beyond +-`CLAMP` are clipped
before anything sees them (so one stream cannot poison the batch's model call); a stream that stalls
simply is not ready; a stream that ends or disconnects leaves its group at the next tick.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.dsp.chain import ChainState, StreamChain
from models.dsp.level import has_band_level
from models.dsp.offline import flush_lengths
from models.dsp.resample import check_rate

CLAMP = 8.0  # |sample| above this is clipped: 18 dB over full scale, never reached by real audio
STEP_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)  # seconds, model-call histogram
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class RequestError(ValueError):
    """A stream request the hub refuses (unknown model, unsupported rate or format, hub full)."""

    def __init__(self, message: str, busy: bool = False) -> None:
        super().__init__(message)
        self.busy = busy  # True: try again later (the hub is full), not a malformed request


@dataclass(eq=False)  # streams compare by identity
class Stream:
    """One client stream: its chain state, the input not yet stepped and the output counts."""

    key: tuple[str, int, int, float]  # (model, input rate, output rate, new_band_db): its batch group
    chain: StreamChain
    state: ChainState
    chunk: int
    inbox: deque[np.ndarray] = field(default_factory=deque)
    buffered: int = 0  # input samples waiting in `inbox`
    received: int = 0  # input samples received (before the end's flush)
    replaced: int = 0  # non-finite samples replaced by 0
    clipped: int = 0  # samples clipped to +-CLAMP
    ended: bool = False
    owed: int | None = None  # output samples to send in all, known once the stream ends
    made: int = 0  # output samples produced so far
    stepped: int = 0  # input samples stepped so far (the end's flush included)
    closed: bool = False
    arrivals: deque[tuple[int, float]] = field(default_factory=deque)  # (input end, time) per frame

    @property
    def finished(self) -> bool:
        return self.owed is not None and self.made >= self.owed

    @property
    def ready(self) -> bool:
        """Whether a chunk of input waits to be stepped."""
        return not self.closed and not self.finished and self.buffered >= self.chunk


@dataclass
class HubMetrics:
    streams_opened: int = 0
    streams_rejected: int = 0
    blocks: int = 0  # stream chunks stepped
    late_blocks: int = 0  # chunks stepped more than one chunk period after their input arrived
    model_calls: int = 0
    nonfinite_samples: int = 0
    clipped_samples: int = 0
    batch_counts: list[int] = field(default_factory=lambda: [0] * (len(BATCH_BUCKETS) + 1))
    step_counts: list[int] = field(default_factory=lambda: [0] * (len(STEP_BUCKETS) + 1))
    step_seconds: float = 0.0


def _observe(counts: list[int], buckets: tuple, value: float) -> None:
    counts[int(np.searchsorted(buckets, value))] += 1


class StreamHub:
    """Every live stream of a server, grouped by (model, input rate, output rate).

    Args:
        load: model name -> stepper (the numpy step contract with `stack_states`/`split_state`, e.g.
            `realtime.generators.load_generator`). Each model is loaded once, at its first stream.
        models: the model names clients may ask for.
        max_streams: streams open at once; more are refused (busy).
        max_buffer_seconds: input a stream may hold unprocessed; a transport stops reading from a
            stream while `wants_input` is False (backpressure).
        max_batch: rows per model call; a larger group is stepped in several calls.
    """

    def __init__(
        self,
        load: Any,
        models: tuple[str, ...],
        max_streams: int = 256,
        max_buffer_seconds: float = 2.0,
        max_batch: int = 64,
    ) -> None:
        self._load, self.models = load, tuple(models)
        self.max_streams, self.max_buffer_seconds, self.max_batch = max_streams, max_buffer_seconds, max_batch
        self._steppers: dict[str, Any] = {}
        self._chains: dict[tuple[str, int, int, float], StreamChain] = {}
        self.streams: list[Stream] = []
        self.metrics = HubMetrics()
        self._lock = threading.Lock()  # guards stream lists and inboxes between transport and ticks

    def preload(self) -> None:
        """Load every model now rather than at its first stream."""
        for name in self.models:
            if name not in self._steppers:
                self._steppers[name] = self._load(name)

    # ---- opening and feeding streams (transport side) ------------------------------------------------
    def open(self, model: str, rate: int, output_rate: int | None = None, new_band_db: float = 0.0) -> Stream:
        """A new stream, or RequestError naming what is wrong with the request. `new_band_db`: the
        listener's trim of the new band's level (streams with different trims batch apart)."""
        if model not in self.models:
            raise RequestError(f"unknown model {model!r}; choose one of {', '.join(self.models)}")
        try:
            check_rate("rate", rate)
            if output_rate is not None:
                check_rate("output_rate", output_rate)
        except ValueError as err:
            raise RequestError(str(err)) from None
        with self._lock:
            if len(self.streams) >= self.max_streams:
                self.metrics.streams_rejected += 1
                raise RequestError(f"the server holds its maximum of {self.max_streams} streams", busy=True)
        if model not in self._steppers:
            self._steppers[model] = self._load(model)
        stepper = self._steppers[model]
        out = int(stepper.sample_rate) if output_rate is None else int(output_rate)
        band_edge = rate / 2 if rate < stepper.sample_rate else None
        if new_band_db and (band_edge is None or not has_band_level(getattr(stepper, "config", None))):
            raise RequestError(f"new_band_db needs an input below {model}'s rate, {stepper.sample_rate} Hz")
        key = (model, int(rate), out, float(new_band_db))
        if key not in self._chains:
            self._chains[key] = StreamChain(
                stepper, rate, out, 1, int(stepper.block_size), band_edge, new_band_db
            )
        chain = self._chains[key]
        stream = Stream(key, chain, chain.init_state(1), chain.aligned_chunk())
        with self._lock:
            self.streams.append(stream)
            self.metrics.streams_opened += 1
        return stream

    def feed(self, stream: Stream, samples: np.ndarray) -> None:
        """Queue mono input samples (any length); non-finite ones become 0, loud ones are clipped."""
        if stream.ended or stream.closed:
            return
        x = np.asarray(samples, np.float32).reshape(-1)
        bad = ~np.isfinite(x)
        if bad.any():
            x = np.where(bad, np.float32(0), x)
            stream.replaced += int(bad.sum())
            self.metrics.nonfinite_samples += int(bad.sum())
        loud = np.abs(x) > CLAMP
        if loud.any():
            x = np.clip(x, -CLAMP, CLAMP)
            stream.clipped += int(loud.sum())
            self.metrics.clipped_samples += int(loud.sum())
        with self._lock:
            stream.inbox.append(x)
            stream.buffered += x.size
            stream.received += x.size
            stream.arrivals.append((stream.received, time.monotonic()))

    def wants_input(self, stream: Stream) -> bool:
        """False while the stream holds more than `max_buffer_seconds` of unprocessed input."""
        return stream.buffered < self.max_buffer_seconds * stream.key[1]

    def end(self, stream: Stream) -> None:
        """No more input: flush the stream's latency out with silence, then it is finished."""
        with self._lock:
            if stream.ended:
                return
            stream.ended = True
            chain = stream.chain
            n_out, need_in = flush_lengths(
                stream.received, chain.latency, chain.input_rate, chain.output_rate
            )
            stream.owed = chain.latency + n_out  # file mode's output, after the latency it drops
            pad = -(-need_in // stream.chunk) * stream.chunk - stream.received
            if pad > 0:
                stream.inbox.append(np.zeros(pad, np.float32))
                stream.buffered += pad

    def close(self, stream: Stream) -> None:
        """Forget the stream (ended, or its client went away)."""
        with self._lock:
            stream.closed = True
            if stream in self.streams:
                self.streams.remove(stream)

    # ---- ticks (compute side) ---------------------------------------------------------------------------
    def _take(self, stream: Stream) -> np.ndarray:
        """The next aligned chunk of the stream's input (the caller holds the lock)."""
        parts, need = [], stream.chunk
        while need:
            head = stream.inbox[0]
            if head.size <= need:
                parts.append(stream.inbox.popleft())
                need -= head.size
            else:
                parts.append(head[:need])
                stream.inbox[0] = head[need:]
                need = 0
        stream.buffered -= stream.chunk
        return np.concatenate(parts)

    def tick(self) -> list[tuple[Stream, np.ndarray]]:
        """One batched step for every stream with a chunk ready; returns each stepped stream's output
        (trimmed to what it is owed). Call from one thread at a time."""
        with self._lock:
            ready = [s for s in self.streams if s.ready]
            groups: dict[tuple[str, int, int], list[tuple[Stream, np.ndarray, float]]] = {}
            for s in ready:
                x = self._take(s)
                s.stepped += s.chunk
                while s.arrivals and s.arrivals[0][0] < s.stepped:  # frames wholly before this chunk's end
                    s.arrivals.popleft()
                arrived = s.arrivals[0][1] if s.arrivals else time.monotonic()  # the end's flush: now
                groups.setdefault(s.key, []).append((s, x, arrived))
        results = []
        for key, members in groups.items():
            chain = self._chains[key]
            for i in range(0, len(members), self.max_batch):
                part = members[i : i + self.max_batch]
                results.extend(self._step(chain, part))
        return results

    def _step(
        self, chain: StreamChain, part: list[tuple[Stream, np.ndarray, float]]
    ) -> list[tuple[Stream, np.ndarray]]:
        t0 = time.perf_counter()
        state = chain.stack([s.state for s, _, _ in part])
        y, state = chain.step(np.stack([x for _, x, _ in part]), state)
        states = chain.unstack(state, [1] * len(part))
        seconds = time.perf_counter() - t0
        m = self.metrics
        m.model_calls += 1
        m.blocks += len(part)
        m.step_seconds += seconds
        _observe(m.batch_counts, BATCH_BUCKETS, len(part))
        _observe(m.step_counts, STEP_BUCKETS, seconds)
        now, period = time.monotonic(), part[0][0].chunk / chain.input_rate
        out = []
        for (s, _, arrived), st, row in zip(part, states, y):
            s.state = st
            if now - arrived > period:
                m.late_blocks += 1
            if s.owed is not None:
                row = row[: max(0, s.owed - s.made)]
            s.made += row.size
            out.append((s, row))
        return out

    def has_work(self) -> bool:
        with self._lock:
            return any(s.ready for s in self.streams)

    # ---- metrics ----------------------------------------------------------------------------------------
    def prometheus(self) -> str:
        """The metrics in Prometheus text format."""
        m = self.metrics
        with self._lock:
            by_model: dict[str, int] = {}
            for s in self.streams:
                by_model[s.key[0]] = by_model.get(s.key[0], 0) + 1
        lines = [
            "# HELP livesr_streams Streams open now.",
            "# TYPE livesr_streams gauge",
            *(f'livesr_streams{{model="{k}"}} {by_model.get(k, 0)}' for k in self.models),
        ]

        def counter(name: str, text: str, value: float) -> None:
            lines.extend([f"# HELP {name} {text}", f"# TYPE {name} counter", f"{name} {value}"])

        counter("livesr_streams_opened_total", "Streams accepted.", m.streams_opened)
        counter(
            "livesr_streams_rejected_total",
            "Streams refused because the server was full.",
            m.streams_rejected,
        )
        counter("livesr_blocks_total", "Stream chunks stepped.", m.blocks)
        counter(
            "livesr_late_blocks_total",
            "Chunks stepped more than one chunk period after they arrived.",
            m.late_blocks,
        )
        counter(
            "livesr_nonfinite_samples_total",
            "Input samples that were NaN/Inf, replaced by 0.",
            m.nonfinite_samples,
        )
        counter(
            "livesr_clipped_samples_total", f"Input samples beyond +-{CLAMP}, clipped.", m.clipped_samples
        )

        def histogram(name: str, text: str, buckets: tuple, counts: list[int], total: float, n: int) -> None:
            lines.extend([f"# HELP {name} {text}", f"# TYPE {name} histogram"])
            running = 0
            for edge, c in zip(buckets, counts):
                running += c
                lines.append(f'{name}_bucket{{le="{edge}"}} {running}')
            lines.append(f'{name}_bucket{{le="+Inf"}} {n}')
            lines.extend([f"{name}_sum {total}", f"{name}_count {n}"])

        histogram(
            "livesr_batch_size",
            "Streams per model call.",
            BATCH_BUCKETS,
            m.batch_counts,
            m.blocks,
            m.model_calls,
        )
        histogram(
            "livesr_step_seconds",
            "Time of one batched chain step.",
            STEP_BUCKETS,
            m.step_counts,
            m.step_seconds,
            m.model_calls,
        )
        return "\n".join(lines) + "\n"
