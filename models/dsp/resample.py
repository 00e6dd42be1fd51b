"""Causal, stateful polyphase resampling by a rational factor L/M (numpy only, no torch).

The filter is a linear-phase Kaiser-windowed sinc designed at the upsampled rate `in_rate * L`:
passband flat to `passband` x the lower Nyquist, stopband (>= `attenuation_db`) from the lower
Nyquist up, so images (upsampling) and aliases (downsampling) of every in-band sine are suppressed.
Conceptually the input is zero-stuffed by L, filtered and decimated by M; the polyphase form only
computes the kept outputs: output k reads the filter phase `(k*M + phi) mod L` against the input
samples ending at `(k*M + phi) // L` (RAVE's "one output channel per phase" idea, for rational
ratios).

Streaming follows the livesr step contract on numpy arrays (blocks are (batch, samples)):

    state = r.init_state(batch)
    y, state = r.step(x, state)        # pure: `state` is not mutated

After n input samples in total exactly floor(n * L / M) outputs have been emitted, whatever the
block lengths (0 and 1 included). Every output is computed by the same fixed-order float64
expression, so any partition of the input gives bit-identical output to one pass.

Delay: `phi` (a whole number of upsampled-grid steps, <= 0) moves the output grid so that the
total delay lands on a whole output sample: an impulse at input sample `input_delay` peaks exactly
at output sample `latency` (more generally, input sample `input_delay + j` maps to output position
`latency + j * out_rate / in_rate`). `input_delay` lets a stage that follows other delays (a model's
latency, another resampler) absorb their sum and still report a whole-sample total.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from math import gcd

import numpy as np
from numpy.lib.stride_tricks import as_strided
from scipy.signal import firwin, kaiserord

SUPPORTED_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

ResamplerState = dict[str, np.ndarray]

# kaiserord's length estimate is empirical; a little extra keeps the measured stopband above target.
_DESIGN_MARGIN_DB = 5.0
_MAX_TAPS = 1 << 21
# Size of the reused (outputs x taps) product buffer; chunking never changes the result.
_CHUNK_ELEMENTS = 1 << 16
# Default passband edge, as a fraction of the lower Nyquist: above it an upsampled input rolls off.
PASSBAND = 0.9


@dataclass(frozen=True)
class _Design:
    up: int  # L
    down: int  # M
    half: int  # G: the prototype filter has 2G+1 taps, its delay is G upsampled-grid steps
    phases: np.ndarray  # (L, T) float64; phases[p, j] = L * h[p + (T-1-j) L] (time-reversed per phase)


@lru_cache(maxsize=64)
def _design(in_rate: int, out_rate: int, passband: float, attenuation_db: float) -> _Design:
    g = gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    fs_up = in_rate * up
    nyquist = min(in_rate, out_rate) / 2
    width = (1.0 - passband) * nyquist
    numtaps, beta = kaiserord(attenuation_db + _DESIGN_MARGIN_DB, width / (fs_up / 2))
    half = (numtaps + 1) // 2  # odd length 2G+1 >= numtaps: linear phase with an integer delay
    ntaps = 2 * half + 1
    if ntaps > _MAX_TAPS:
        raise ValueError(
            f"resampling {in_rate} -> {out_rate} Hz needs a {ntaps}-tap filter (ratio {up}/{down}); "
            f"use rates from {SUPPORTED_RATES}"
        )
    cutoff = (1.0 + passband) / 2 * nyquist
    h = firwin(ntaps, cutoff, window=("kaiser", beta), fs=fs_up) * up
    per_phase = -(-ntaps // up)
    padded = np.zeros(per_phase * up)
    padded[:ntaps] = h
    phases = np.ascontiguousarray(padded.reshape(per_phase, up).T[:, ::-1])
    phases.setflags(write=False)
    return _Design(up=up, down=down, half=half, phases=phases)


class Resampler:
    """Causal polyphase resampler `in_rate -> out_rate` with an exact whole-sample delay.

    Same rate is the identity (latency == input_delay). Attributes: `in_rate`, `out_rate`,
    `ratio` (Fraction out/in), `up`/`down` (L/M), `latency` (output samples, see the module doc),
    `block_multiple` (1: any block length). The state is {"history": (batch, H) float64 past input,
    "phase": () int64 = input samples seen mod M}.
    """

    block_multiple = 1

    def __init__(
        self,
        in_rate: int,
        out_rate: int,
        *,
        input_delay: int = 0,
        passband: float = PASSBAND,
        attenuation_db: float = 80.0,
    ) -> None:
        for name, rate in (("in_rate", in_rate), ("out_rate", out_rate)):
            if not isinstance(rate, (int, np.integer)) or rate <= 0:
                raise ValueError(f"{name} must be a positive integer sample rate in Hz, got {rate!r}")
        if not isinstance(input_delay, (int, np.integer)) or input_delay < 0:
            raise ValueError(f"input_delay must be a non-negative integer (samples), got {input_delay!r}")
        if not 0.0 < passband < 1.0:
            raise ValueError(f"passband must be a fraction of the lower Nyquist in (0, 1), got {passband}")
        if attenuation_db < 20.0:
            raise ValueError(f"attenuation_db must be >= 20, got {attenuation_db}")
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        self.ratio = Fraction(self.out_rate, self.in_rate)
        self.up, self.down = self.ratio.numerator, self.ratio.denominator
        self.input_delay = int(input_delay)
        self.identity = self.up == self.down
        if self.identity:
            self.latency = self.input_delay
            self._history = 0
            return
        d = _design(self.in_rate, self.out_rate, float(passband), float(attenuation_db))
        self._phases = d.phases
        self._taps = d.phases.shape[1]
        self._scratch: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        # Smallest whole-sample total delay, and the (non-positive, hence causal) grid offset giving it.
        self.latency = -(-(self.input_delay * d.up + d.half) // d.down)
        self._phi = self.input_delay * d.up + d.half - self.latency * d.down
        # History must reach the oldest input any first-of-a-call output reads, for every phase.
        r = np.arange(d.down)
        k = r * d.up // d.down
        oldest = (k * d.down + self._phi) // d.up - (self._taps - 1) - r
        self._history = int(max(0, -oldest.min()))

    def output_length(self, n_in_total: int) -> int:
        """Outputs emitted after `n_in_total` input samples: floor(n * L / M)."""
        return n_in_total * self.up // self.down

    def init_state(self, batch: int = 1) -> ResamplerState:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        return {"history": np.zeros((batch, self._history)), "phase": np.zeros((), dtype=np.int64)}

    def step(self, x: np.ndarray, state: ResamplerState) -> tuple[np.ndarray, ResamplerState]:
        """Resample one block `x` (batch, n), float32 or float64; returns (y, new_state), y of x's dtype."""
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.dtype not in (np.float32, np.float64):
            raise ValueError(
                f"x must be a float32/float64 array of shape (batch, samples), got "
                f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}"
            )
        history, phase = state["history"], int(state["phase"])
        if x.shape[0] != history.shape[0]:
            raise ValueError(f"x has batch {x.shape[0]}, the state was made for batch {history.shape[0]}")
        n = x.shape[1]
        new_phase = np.asarray((phase + n) % self.down, dtype=np.int64)
        if self.identity:
            return x.copy(), {"history": history, "phase": new_phase}
        buf = np.concatenate([history, x.astype(np.float64)], axis=1)
        y = self._filter(buf, phase, n).astype(x.dtype)
        new_history = buf[:, buf.shape[1] - self._history :].copy()
        return y, {"history": new_history, "phase": new_phase}

    def _filter(self, buf: np.ndarray, phase: int, n: int) -> np.ndarray:
        # Output indices are counted from the start of the current M-periodic cycle (`phase` inputs ago).
        k = np.arange(phase * self.up // self.down, (phase + n) * self.up // self.down)
        y = np.empty((buf.shape[0], k.size))
        if k.size == 0:
            return y
        grid = k * self.down + self._phi
        start = grid // self.up - phase + self._history - (self._taps - 1)
        which = grid % self.up
        # windows[:, i] = buf[:, i : i + taps], as a read-only view (buf is freshly concatenated).
        shape = (buf.shape[0], buf.shape[1] - self._taps + 1, self._taps)
        strides = (buf.strides[0], buf.strides[1], buf.strides[1])
        windows = as_strided(buf, shape, strides, writeable=False)
        work, coeffs = self._workspace(buf.shape[0])
        rows = coeffs.shape[0]
        for a in range(0, k.size, rows):
            b = min(a + rows, k.size)
            w, c = work[:, : b - a], coeffs[: b - a]
            # mode="clip" (indices are in range by construction) lets `take` write straight into `out`.
            np.take(self._phases, which[a:b], axis=0, out=c, mode="clip")
            np.take(windows, start[a:b], axis=1, out=w, mode="clip")
            np.multiply(w, c, out=w)
            # Elementwise product then a last-axis sum: each output's arithmetic is independent of
            # how many outputs share the call, which keeps streaming bit-identical to one pass.
            np.sum(w, axis=-1, out=y[:, a:b])
        return y

    def _workspace(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Scratch buffers reused across steps: fresh large temporaries cost page faults on every block.
        They hold no state between calls, but make one Resampler object unsafe to share across threads."""
        if batch not in self._scratch:
            rows = max(1, _CHUNK_ELEMENTS // (self._taps * batch))
            self._scratch[batch] = (np.empty((batch, rows, self._taps)), np.empty((rows, self._taps)))
        return self._scratch[batch]


def check_rate(name: str, rate: int, allowed: tuple[int, ...] = SUPPORTED_RATES) -> int:
    """`rate` as an int, or a ValueError naming `name` and the allowed rates."""
    if not isinstance(rate, (int, np.integer)) or int(rate) not in allowed:
        raise ValueError(f"{name}={rate!r} Hz is not supported; use one of {', '.join(map(str, allowed))}")
    return int(rate)
