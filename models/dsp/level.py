"""The new band's level: what the input implies, per excitation band and frame.

This module is the one owner of the new band's level. A host that knows the input's band edge (its
Nyquist frequency, or a same-rate effect's cutoff) knows where the given band ends; the level of
everything above it starts from the input's own top half-octave continued above the edge:

    power density at f  =  D_top * 10 ** ((S(f) - S_top + offset) / 10)      (f above the top band)

where D_top is the input's power density in its top half-octave [cut / sqrt 2, crossover] (the
crossover is where the host starts taking the model's output), S(f) the config's level shape in dB
(a typical long-term spectrum, piecewise linear in log frequency) and S_top its power mean over the
top band: the top band continued with a typical spectrum's shape. With S = -10 slope log10 f this is
the evaluator's noisefill rule (slope 2), made causal and streaming; `python -m models.train
fit-level` fits S and the offset on a validation split. `models.band_level.BandLevel` measures the top
band's short-term power with a fixed bank of complex band-pass filters, one frame per `hop`
samples, and returns the amplitude that rule gives each excitation band. The generator multiplies
it by a bounded correction (`correction_gain`: at most +-CORRECTION_DB) that it predicts from the
signal, so an untrained generator (zero correction) plays noisefill's level, and training can only
move it from there. A listener's trim (`new_band_db`, at most +-NEW_BAND_MAX_DB) adds to the fitted
offset: voices differ by several dB above the band edge in ways the given band does not reveal
(docs/TRAINING.md), so the host lets the listener move the band by ear.

Which analysis bands form the top band, and how much power each excitation band gets per unit of
top-band power, depend on the band edge only: the host computes them once (`level_state`, numpy) and
puts them into the model's state ("level.top", "level.rule"), as the trainer does per example.
Excitation bands wholly below the crossover get no power (the host keeps the input's band there).
With no band edge given (the initial state) the rule is silent: only the generator's deterministic
branch sounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.signal import firwin


def band_edges(bands: int, low_hz: float, sample_rate: int) -> np.ndarray:
    """`bands` + 1 log-spaced edges from `low_hz` to the Nyquist frequency: the excitation's bands."""
    nyquist = sample_rate / 2
    if bands < 1 or not 0 < low_hz < nyquist:
        raise ValueError(f"need bands >= 1 and 0 < low_hz < {nyquist}, got bands={bands}, low_hz={low_hz}")
    return np.geomspace(low_hz, nyquist, bands + 1)


ANALYSIS_LOW_HZ = 2000.0  # lowest top band: an 8 kHz input's [2.83, 3.6] kHz
ANALYSIS_HIGH_HZ = 20000.0  # highest: a 44.1 kHz input to a 48 kHz model, [15.6, 19.8] kHz
ANALYSIS_BANDS_PER_OCTAVE = 4
STATE_PREFIX = "level"  # both generators keep their BandLevel under this name
SHAPE_POINTS_PER_BAND = 64  # quadrature points per band when integrating the shape
NEW_BAND_MAX_DB = 24.0  # a listener's trim of the new band's level: within this of the fitted rule


def power_law_shape(slope: float) -> tuple[tuple[float, float], ...]:
    """A level shape falling as f ** -slope: (Hz, dB) at 1 and 24 kHz (log-linear, extrapolated)."""
    return ((1000.0, 0.0), (24000.0, round(-10.0 * slope * math.log10(24.0), 6)))


def check_level_shape(shape: Any) -> tuple[tuple[float, float], ...]:
    """`shape` as a tuple of (Hz, dB) pairs, or ValueError: >= 2 points, frequencies increasing."""
    points = tuple((float(f), float(db)) for f, db in shape)
    hz = [f for f, _ in points]
    if len(points) < 2 or hz[0] <= 0 or any(b <= a for a, b in zip(hz[:-1], hz[1:])):
        raise ValueError(f"level_shape needs >= 2 (Hz, dB) points with increasing Hz > 0, got {shape}")
    if not all(math.isfinite(db) for _, db in points):
        raise ValueError(f"level_shape levels must be finite, got {shape}")
    return points


def upgrade_level_fields(data: dict[str, Any]) -> dict[str, Any]:
    """A config dict from before level shapes (one `level_slope`) as the same rule's shape."""
    if "level_slope" not in data:
        return data
    data = dict(data)
    data["level_shape"] = power_law_shape(float(data.pop("level_slope")))
    return data


def shape_db(shape: Any, hz: np.ndarray) -> np.ndarray:
    """The shape's level (dB) at `hz`: linear in log frequency, extended beyond its ends by the
    first / last segment's slope."""
    points = np.asarray(shape, dtype=np.float64)
    x, y = np.log(points[:, 0]), points[:, 1]
    t = np.log(np.asarray(hz, dtype=np.float64))
    inner = np.interp(t, x, y)
    below = y[0] + (t - x[0]) * (y[1] - y[0]) / (x[1] - x[0])
    above = y[-1] + (t - x[-1]) * (y[-1] - y[-2]) / (x[-1] - x[-2])
    return np.where(t < x[0], below, np.where(t > x[-1], above, inner))


def _shape_power(shape: Any, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Integral of 10 ** (S(f) / 10) df over each [lo, hi] (log-spaced trapezoids)."""
    f = np.geomspace(lo, hi, SHAPE_POINTS_PER_BAND, axis=-1)
    density = 10.0 ** (shape_db(shape, f) / 10.0)
    return ((density[..., 1:] + density[..., :-1]) / 2 * np.diff(f, axis=-1)).sum(axis=-1)


def analysis_edges() -> np.ndarray:
    """Edges of the analysis bands that measure the input's top band (quarter octaves)."""
    octaves = math.log2(ANALYSIS_HIGH_HZ / ANALYSIS_LOW_HZ)
    count = round(ANALYSIS_BANDS_PER_OCTAVE * octaves)
    return np.geomspace(ANALYSIS_LOW_HZ, ANALYSIS_HIGH_HZ, count + 1)


def analysis_filters(sample_rate: int, window: int) -> np.ndarray:
    """(2 K, 1, window) float32 conv weights: the real then the imaginary parts of K complex band-pass
    filters (a Hann low-pass prototype as wide as the band, shifted to its centre). The power of a
    band is re^2 + im^2 of its output, scaled per band by `level_state`."""
    edges = analysis_edges()
    if edges[-1] >= sample_rate / 2:
        raise ValueError(f"sample_rate {sample_rate} is too low for analysis bands up to {edges[-1]} Hz")
    n = np.arange(window) - (window - 1) / 2
    filters = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        proto = firwin(window, (hi - lo) / 2, window="hann", fs=sample_rate)
        filters.append(proto * np.exp(2j * np.pi * (lo + hi) / 2 * n / sample_rate))
    h = np.array(filters)
    return np.concatenate([h.real, h.imag])[:, None, ::-1].astype(np.float32).copy()  # conv1d correlates


@lru_cache(maxsize=8)
def _effective_bandwidth(sample_rate: int, window: int) -> np.ndarray:
    """Per analysis band, the white-noise power density that reads as power 1 (Hz): sum |h|^2 * rate / 2
    (a real signal's one-sided density spreads over both the band and its mirror). Cached: the trainer
    asks for it for every example of every step. Read-only."""
    h = analysis_filters(sample_rate, window)[:, 0].astype(np.float64)
    k = h.shape[0] // 2
    width = (h[:k] ** 2 + h[k:] ** 2).sum(axis=1) * sample_rate / 2
    width.flags.writeable = False
    return width


def check_new_band_db(value: Any) -> float:
    """`value` as a trim of the new band's level in dB, or ValueError: a finite number within
    +-NEW_BAND_MAX_DB."""
    if not isinstance(value, (int, float, np.floating, np.integer)) or isinstance(value, bool):
        raise ValueError(f"new_band_db must be a number of dB, got {value!r}")
    if not math.isfinite(value) or abs(value) > NEW_BAND_MAX_DB:
        raise ValueError(f"new_band_db must lie within +-{NEW_BAND_MAX_DB:g} dB, got {value}")
    return float(value)


def _config_getter(config: Any) -> Any:
    if isinstance(config, Mapping):
        config = upgrade_level_fields(dict(config))
        return config.get
    return lambda key, default=None: getattr(config, key, default)


def has_band_level(config: Any) -> bool:
    """Whether a generator with `config` (dataclass, dict or None) has a band level to set."""
    return config is not None and int(_config_getter(config)("noise_bands", 0) or 0) > 0


def level_state(
    config: Any, cut_hz: float, crossover_hz: float, new_band_db: float = 0.0
) -> dict[str, np.ndarray]:
    """State values of a generator's BandLevel for an input whose band ends at `cut_hz` (its Nyquist
    frequency, or a same-rate cutoff) with the host taking the model's output above `crossover_hz`;
    `new_band_db` moves the rule's level from the fitted one (a listener's trim, `check_new_band_db`).

    `config`: the generator's config (dataclass or dict with noise_bands, noise_low_hz, sample_rate,
    level_shape, level_offset_db, level_window; a dict may still hold a `level_slope`). Returns {"level.top": (K,), "level.rule": (bands,)} float32; empty for
    a generator without excitation.
    """
    if not has_band_level(config):
        return {}
    get = _config_getter(config)
    bands = int(get("noise_bands"))
    rate = int(get("sample_rate"))
    if not 0 < crossover_hz <= cut_hz < rate / 2:
        raise ValueError(f"need 0 < crossover_hz <= cut_hz < {rate / 2}, got {crossover_hz}, {cut_hz}")
    shape, window = check_level_shape(get("level_shape")), int(get("level_window"))
    offset_db = float(get("level_offset_db", 0.0) or 0.0) + check_new_band_db(new_band_db)
    lo, hi = cut_hz / math.sqrt(2), crossover_hz
    if hi <= lo:  # a crossover far below the cut: measure the half-octave below it instead
        lo = hi / math.sqrt(2)
    edges = analysis_edges()
    if lo < edges[0] or hi > edges[-1]:
        raise ValueError(
            f"a band edge of {cut_hz:.0f} Hz puts the top band at [{lo:.0f}, {hi:.0f}] Hz, outside the "
            f"measured range [{edges[0]:.0f}, {edges[-1]:.0f}] Hz"
        )
    # Top-band power = sum_k top_k * |z_k|^2: each analysis band's share inside [lo, hi], read as power.
    overlap = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0.0, None)
    top = overlap / _effective_bandwidth(rate, window)  # |z|^2 / width = density; * overlap = power
    # Excitation band b's power per unit of top-band power: the shape's power over b relative to its
    # power over the top band, times the offset.
    noise = band_edges(bands, float(get("noise_low_hz")), rate)
    top_power = _shape_power(shape, np.array(lo), np.array(hi))
    rule = _shape_power(shape, noise[:-1], noise[1:]) / top_power * 10.0 ** (offset_db / 10.0)
    rule[noise[1:] <= crossover_hz] = 0.0  # the host keeps the input's band there
    return {f"{STATE_PREFIX}.top": top.astype(np.float32), f"{STATE_PREFIX}.rule": rule.astype(np.float32)}
