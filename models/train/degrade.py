"""Low-resolution input simulation: train on many anti-alias filters, test on one.

Per example (`draw`): an input rate from the preset's list, or with probability `same_rate_prob` a
cutoff in `same_rate_cutoff` without a rate change; a filter family (Butterworth, Chebyshev I,
elliptic, Bessel, Kaiser FIR, `resample_poly`, soxr at a random quality) of random order; optionally
an MP3 round trip first (libsndfile's encoder at a random compression level, when available).

`apply` then low-passes, decimates to the input rate and brings the signal back to the model rate
with the live path's causal polyphase resampler (`realtime.resample.Resampler`), so training sees
the band edge and ripple streaming sees. Filters are zero-phase and the resampler's whole-sample
delay is removed: the result is time-aligned with the original, the same length, at the model rate.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np
import soundfile as sf
import soxr
from scipy import signal

from ..dsp.resample import Resampler
from ..metrics import fit_length

IIR_FAMILIES = ("butterworth", "chebyshev1", "elliptic", "bessel")
FAMILIES = IIR_FAMILIES + ("fir", "resample_poly", "soxr")
SOXR_QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")
# Anti-alias filters put their edge a little below the new Nyquist, or at it (and let some alias through).
EDGE_RANGE = (0.85, 1.0)
MP3_LEVELS = (0.3, 0.9)  # libsndfile's compression level: 0.3 cuts near 19 kHz, 0.9 near 8 kHz at 48 kHz


@dataclass(frozen=True)
class DegradeConfig:
    """What `draw` may pick."""

    sample_rate: int
    input_rates: tuple[int, ...]
    same_rate_prob: float = 0.0
    same_rate_cutoff: tuple[float, float] = (4000.0, 16000.0)
    families: tuple[str, ...] = FAMILIES
    order_range: tuple[int, int] = (2, 10)
    mp3_prob: float = 0.0

    def __post_init__(self) -> None:
        for rate in self.input_rates:
            if not 0 < rate < self.sample_rate:
                raise ValueError(f"input_rates must lie below sample_rate={self.sample_rate}, got {rate}")
        if not self.input_rates and self.same_rate_prob < 1:
            raise ValueError("input_rates is empty: set same_rate_prob=1 or name at least one rate")
        unknown = sorted(set(self.families) - set(FAMILIES))
        if unknown or not self.families:
            raise ValueError(f"families must be a non-empty subset of {FAMILIES}, got unknown {unknown}")
        lo, hi = self.order_range
        if not 1 <= lo <= hi:
            raise ValueError(f"order_range must be (low, high) with 1 <= low <= high, got {self.order_range}")
        lo, hi = self.same_rate_cutoff
        if not 0 < lo <= hi < self.sample_rate / 2:
            raise ValueError(
                f"same_rate_cutoff must lie in (0, {self.sample_rate / 2}) Hz, got {self.same_rate_cutoff}"
            )
        for name in ("same_rate_prob", "mp3_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class Degradation:
    """One drawn degradation (all that `apply` needs; `asdict` it to log)."""

    input_rate: int  # == the model rate in the same-rate mode
    cutoff_hz: float
    family: str
    order: int
    ripple_db: float = 0.5  # Chebyshev I / elliptic passband ripple
    stop_db: float = 60.0  # elliptic stopband attenuation
    kaiser_beta: float = 8.0  # FIR / resample_poly window
    soxr_quality: str = "HQ"
    mp3_level: float | None = None


@lru_cache(maxsize=1)
def mp3_available() -> bool:
    """Whether libsndfile here encodes MP3."""
    return "MP3" in sf.available_formats()


def draw(cfg: DegradeConfig, rng: np.random.Generator) -> Degradation:
    """A random degradation for one example."""
    family = str(rng.choice(cfg.families))
    order = int(rng.integers(cfg.order_range[0], cfg.order_range[1] + 1))
    same_rate = rng.random() < cfg.same_rate_prob
    if same_rate:
        rate, cutoff = cfg.sample_rate, float(rng.uniform(*cfg.same_rate_cutoff))
    else:
        rate = int(rng.choice(cfg.input_rates))
        cutoff = float(rng.uniform(*EDGE_RANGE) * rate / 2)
    extra = {
        "ripple_db": float(rng.uniform(0.05, 1.0)),
        "stop_db": float(rng.uniform(40.0, 90.0)),
        "kaiser_beta": float(rng.uniform(4.0, 12.0)),
        "soxr_quality": str(rng.choice(SOXR_QUALITIES)),
    }
    mp3 = rng.random() < cfg.mp3_prob and mp3_available()
    level = float(rng.uniform(*MP3_LEVELS)) if mp3 else None
    return Degradation(rate, cutoff, family, order, mp3_level=level, **extra)


def _iir(d: Degradation, sample_rate: int) -> np.ndarray:
    wn = d.cutoff_hz / (sample_rate / 2)
    if d.family == "butterworth":
        return signal.butter(d.order, wn, output="sos")
    if d.family == "chebyshev1":
        return signal.cheby1(d.order, d.ripple_db, wn, output="sos")
    if d.family == "elliptic":
        return signal.ellip(d.order, d.ripple_db, d.stop_db, wn, output="sos")
    return signal.bessel(d.order, wn, output="sos", norm="mag")


def lowpass(x: np.ndarray, d: Degradation, sample_rate: int) -> np.ndarray:
    """Zero-phase low-pass of `x` at `d.cutoff_hz` with `d`'s filter family (same rate, same length)."""
    if d.family in IIR_FAMILIES:
        return signal.sosfiltfilt(_iir(d, sample_rate), x)
    if d.family == "fir":
        taps = signal.firwin(32 * d.order + 1, d.cutoff_hz, window=("kaiser", d.kaiser_beta), fs=sample_rate)
        return np.convolve(x, taps, mode="same")  # odd symmetric FIR centred: zero phase
    # resample_poly and soxr filter while they change rate: go to about twice the cutoff and back,
    # on a 1/100 grid of the rate so the polyphase ratio (and its filter) stays small.
    step = sample_rate / 100
    mid = int(round(max(1, round(2 * d.cutoff_hz / step)) * step))
    return _resample(_resample(x, sample_rate, mid, d), mid, sample_rate, d)[: x.size]


def _resample(x: np.ndarray, rate: int, new_rate: int, d: Degradation) -> np.ndarray:
    if d.family == "soxr":
        return soxr.resample(x, rate, new_rate, quality=d.soxr_quality)
    ratio = Fraction(new_rate, rate)
    return signal.resample_poly(x, ratio.numerator, ratio.denominator, window=("kaiser", d.kaiser_beta))


def decimate(x: np.ndarray, d: Degradation, sample_rate: int) -> np.ndarray:
    """`x` at `sample_rate` -> the low-resolution signal at `d.input_rate` (anti-alias filter included)."""
    if d.family in ("resample_poly", "soxr"):
        return _resample(x, sample_rate, d.input_rate, d)
    y = lowpass(x, d, sample_rate)
    ratio = Fraction(d.input_rate, sample_rate)
    if ratio.numerator == 1:
        return y[:: ratio.denominator]
    # A rational ratio: the polyphase filter (edge at the new Nyquist) follows the drawn one.
    return signal.resample_poly(y, ratio.numerator, ratio.denominator)


def mp3_roundtrip(x: np.ndarray, sample_rate: int, level: float) -> np.ndarray:
    """Encode to MP3 at `level` and decode (libsndfile keeps the length and removes the codec delay)."""
    buf = io.BytesIO()
    peak = max(1.0, float(np.max(np.abs(x))))  # the codec works on [-1, 1]
    sf.write(buf, x / peak, sample_rate, format="MP3", subtype="MPEG_LAYER_III", compression_level=level)
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float64")
    return fit_length(y * peak, x.size)


def to_model_rate(lowres: np.ndarray, input_rate: int, sample_rate: int, length: int) -> np.ndarray:
    """`lowres` brought to `sample_rate` by the live resampler, its delay removed, `length` samples."""
    if input_rate == sample_rate:
        return fit_length(lowres, length)
    res = Resampler(input_rate, sample_rate)
    # Enough trailing zeros that `latency + length` outputs come out.
    need = res.latency + length
    n_in = -(-need * res.down // res.up)
    padded = fit_length(np.asarray(lowres, dtype=np.float64), max(n_in, lowres.size))[None, :]
    y, _ = res.step(padded, res.init_state(1))
    return y[0, res.latency : res.latency + length]


def apply(x: np.ndarray, d: Degradation, sample_rate: int) -> np.ndarray:
    """The low-resolution version of `x` (1-D, at `sample_rate`) at `sample_rate`, aligned, same length."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"x must be a 1-D signal, got shape {x.shape}")
    if d.mp3_level is not None:
        x = mp3_roundtrip(x, sample_rate, d.mp3_level)
    if d.input_rate == sample_rate:
        return lowpass(x, d, sample_rate)
    return to_model_rate(decimate(x, d, sample_rate), d.input_rate, sample_rate, x.size)
