"""Randomised colouring of the full-band training target, before the low-resolution input is made.

Why (DATA.md, "Generalising from few voices"): the speech set has about one reader per language,
so a model trained on it as is learns how bright *those* readers are — the level and slope of their
high band — and paints that band onto every new voice, too loud or too quiet. Randomising what it
must not memorise, per example and on the full-band target before degrading (a spectral tilt above a
random pivot, random peaking EQ, a mild synthetic room, microphone low-cut and top-octave colouring,
low-level noise), breaks the link between "this is speech" and "the new band sits at this level":
the augmented band is the target, and the input is simulated from the augmented signal, so the only
way to get the band's level right is to infer it from the given band, which is what a new voice needs.

Every random choice comes from the `rng` passed in, so an example stays a pure function of the
sampler's (seed, example index). The spectral parts (tilt, EQ, microphone) are one zero-phase gain
on a zero-padded FFT: training crops are offline, and zero phase keeps the target aligned with the
input. The sampler renormalises the peak afterwards, so no stage has to keep the level exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy.signal import fftconvolve

TILT_TOP_HZ = 20000.0  # the tilt's gain is clamped at and held above this frequency
TILT_KNEE_OCT = 0.5  # width of the soft knee at the pivot: the tilt has no kink
SHELF_Q = 1 / math.sqrt(2)


@dataclass(frozen=True)
class AugmentConfig:
    """What `augment` may do; each stage runs with its own probability. `enabled=False`: nothing."""

    enabled: bool = True
    # spectral tilt: dB per octave above a pivot (log-uniform), |gain at 20 kHz| <= tilt_max_db
    tilt_prob: float = 0.8
    tilt_db_per_octave: tuple[float, float] = (-6.0, 6.0)
    tilt_pivot_hz: tuple[float, float] = (1000.0, 4000.0)
    tilt_max_db: float = 18.0
    # peaking EQ: a number of bands in eq_bands, centre log-uniform, gain uniform in +-eq_db, Q log-uniform
    eq_prob: float = 0.5
    eq_bands: tuple[int, int] = (1, 3)
    eq_hz: tuple[float, float] = (200.0, 16000.0)
    eq_db: float = 9.0
    eq_q: tuple[float, float] = (0.5, 4.0)
    # synthetic room: decaying-noise impulse response, mixed (1 - wet) dry + wet reverberant
    room_prob: float = 0.25
    room_rt60_s: tuple[float, float] = (0.05, 0.4)
    room_wet: tuple[float, float] = (0.05, 0.3)
    # microphone: second-order low-cut, second-order high shelf
    mic_prob: float = 0.5
    mic_lowcut_hz: tuple[float, float] = (50.0, 200.0)
    mic_shelf_hz: tuple[float, float] = (6000.0, 12000.0)
    mic_shelf_db: tuple[float, float] = (-6.0, 4.0)
    # additive noise (white or pink) this many dB below the signal's RMS
    noise_prob: float = 0.3
    noise_below_db: tuple[float, float] = (45.0, 70.0)
    pink_prob: float = 0.5

    def __post_init__(self) -> None:
        for name in ("tilt_prob", "eq_prob", "room_prob", "mic_prob", "noise_prob", "pink_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        for name, positive in (
            ("tilt_db_per_octave", False),
            ("tilt_pivot_hz", True),
            ("eq_bands", False),
            ("eq_hz", True),
            ("eq_q", True),
            ("room_rt60_s", True),
            ("room_wet", False),
            ("mic_lowcut_hz", True),
            ("mic_shelf_hz", True),
            ("mic_shelf_db", False),
            ("noise_below_db", False),
        ):
            value = getattr(self, name)
            if len(value) != 2 or not value[0] <= value[1] or (positive and value[0] <= 0):
                kind = "positive " if positive else ""
                raise ValueError(f"{name} must be a {kind}(low, high) pair with low <= high, got {value}")
        if self.eq_bands[0] < 0:
            raise ValueError(f"eq_bands must not be negative, got {self.eq_bands}")
        if not (0.0 <= self.room_wet[0] and self.room_wet[1] <= 1.0):
            raise ValueError(f"room_wet must lie in [0, 1], got {self.room_wet}")
        if self.tilt_max_db < 0 or self.eq_db < 0:
            raise ValueError(f"tilt_max_db and eq_db must be >= 0, got {self.tilt_max_db}, {self.eq_db}")


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]))))


def tilt_db(f: np.ndarray, slope: float, pivot: float, max_db: float = 18.0) -> np.ndarray:
    """Gain in dB of a tilt of `slope` dB/octave above `pivot` Hz: a soft knee, no kink, ~0 dB well
    below the pivot; the slope is reduced so |gain| at 20 kHz is at most `max_db`, and held above 20 kHz."""

    def octaves(freq: np.ndarray | float) -> np.ndarray:
        above = np.log2(np.maximum(freq, 1.0) / pivot)
        return 0.5 * (above + np.sqrt(above * above + TILT_KNEE_OCT**2))

    top = float(octaves(TILT_TOP_HZ))
    limit = max_db / top if top > 0 else 0.0
    slope = float(np.clip(slope, -limit, limit))
    return slope * octaves(np.minimum(f, TILT_TOP_HZ))


def peaking_gain(f: np.ndarray, centre: float, gain_db: float, q: float) -> np.ndarray:
    """Magnitude of an analog peaking EQ (RBJ prototype): `gain_db` at `centre`, unity far from it."""
    a = 10 ** (gain_db / 40)
    s = 1j * f / centre
    return np.abs((s * s + s * (a / q) + 1) / (s * s + s / (a * q) + 1))


def high_shelf_gain(f: np.ndarray, corner: float, gain_db: float) -> np.ndarray:
    """Magnitude of an analog second-order high shelf (RBJ prototype): unity low, `gain_db` high."""
    a = 10 ** (gain_db / 40)
    s = 1j * f / corner
    k = math.sqrt(a) / SHELF_Q
    return np.abs(a * (a * s * s + k * s + 1) / (s * s + k * s + a))


def low_cut_gain(f: np.ndarray, corner: float) -> np.ndarray:
    """Magnitude of a second-order Butterworth high-pass at `corner` Hz."""
    r = (f / corner) ** 2
    return r / np.sqrt(1 + r * r)


def room_impulse(rng: np.random.Generator, sample_rate: int, rt60: float) -> np.ndarray:
    """Exponentially decaying noise, 60 dB down after `rt60` seconds, unit energy."""
    n = max(1, int(rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    h = rng.standard_normal(n) * 10 ** (-3 * t / rt60)
    return h / math.sqrt(float(np.sum(h * h)))


def _noise(rng: np.random.Generator, n: int, pink: bool) -> np.ndarray:
    """Unit-RMS white or pink (1/f power) noise of `n` samples."""
    w = rng.standard_normal(n)
    if pink and n > 2:
        spec = np.fft.rfft(w)
        k = np.arange(spec.size, dtype=np.float64)
        spec[0] = 0.0
        spec[1:] /= np.sqrt(k[1:])
        w = np.fft.irfft(spec, n)
    rms = math.sqrt(float(np.mean(w * w)))
    return w / rms if rms > 0 else w


def _rms(x: np.ndarray) -> float:
    return math.sqrt(float(np.mean(x * x))) if x.size else 0.0


def augment(
    x: np.ndarray, sample_rate: int, rng: np.random.Generator, cfg: AugmentConfig | None = None
) -> np.ndarray:
    """A randomly coloured copy of the mono signal `x` (float64, same length); see the module docstring.

    Stages, each with its own probability: tilt, peaking EQ, room, microphone, noise. Deterministic
    for a given `rng` state; never returns NaN/Inf (a non-finite result falls back to `x`)."""
    cfg = cfg if cfg is not None else AugmentConfig()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"x must be a 1-D signal, got shape {x.shape}")
    if not cfg.enabled or x.size == 0:
        return x.copy()
    n = x.size
    # Zero padding to twice the length: the zero-phase response wraps into the padding, not the signal.
    nfft = sfft.next_fast_len(2 * n, real=True)
    f = np.fft.rfftfreq(nfft, 1.0 / sample_rate)
    gain = np.ones(f.size)
    coloured = False
    # The draw order is fixed (tilt, EQ, room, microphone, noise) so a given rng state is one result.
    if rng.random() < cfg.tilt_prob:
        slope = float(rng.uniform(*cfg.tilt_db_per_octave))
        pivot = _log_uniform(rng, cfg.tilt_pivot_hz)
        gain *= 10 ** (tilt_db(f, slope, pivot, cfg.tilt_max_db) / 20)
        coloured = True
    if rng.random() < cfg.eq_prob:
        for _ in range(int(rng.integers(cfg.eq_bands[0], cfg.eq_bands[1] + 1))):
            centre = _log_uniform(rng, cfg.eq_hz)
            db = float(rng.uniform(-cfg.eq_db, cfg.eq_db))
            gain *= peaking_gain(f, centre, db, _log_uniform(rng, cfg.eq_q))
            coloured = True
    room = None
    if rng.random() < cfg.room_prob:
        rt60 = float(rng.uniform(*cfg.room_rt60_s))
        wet = float(rng.uniform(*cfg.room_wet))
        room = (room_impulse(rng, sample_rate, rt60), wet)
    if rng.random() < cfg.mic_prob:
        gain *= low_cut_gain(f, _log_uniform(rng, cfg.mic_lowcut_hz))
        gain *= high_shelf_gain(f, _log_uniform(rng, cfg.mic_shelf_hz), float(rng.uniform(*cfg.mic_shelf_db)))
        coloured = True
    noise = None
    if rng.random() < cfg.noise_prob:
        below = float(rng.uniform(*cfg.noise_below_db))
        noise = (below, _noise(rng, n, rng.random() < cfg.pink_prob))

    y = x
    if coloured:  # tilt, EQ and microphone are linear and zero phase: one multiply does them all
        y = np.fft.irfft(np.fft.rfft(x, nfft) * gain, nfft)[:n]
    if room is not None:
        h, wet = room
        level = _rms(y)
        y = (1 - wet) * y + wet * fftconvolve(y, h)[:n]
        now = _rms(y)
        if now > 0:
            y = y * (level / now)  # keep the level: the room colours, it does not attenuate
    if noise is not None:
        below, unit = noise
        y = y + unit * (_rms(y) * 10 ** (-below / 20))
    if y is x or not np.all(np.isfinite(y)):
        return x.copy()  # never the caller's array: it may be written in place
    return y
