"""The new band's level: what the input implies, per excitation band and frame.

This module is the one owner of the new band's level. A host that knows the input's band edge (its
Nyquist frequency, or a same-rate effect's cutoff) knows where the given band ends; the level of
everything above it starts from the input's own top half-octave continued above the edge:

    power density at f  =  D_top * (f_top / f) ** slope          (f above the top band)

where D_top is the input's power density in its top half-octave [cut / sqrt 2, crossover] (the
crossover is where the host starts taking the model's output) and f_top that band's geometric
centre: the evaluator's noisefill rule, made causal and streaming. `BandLevel` measures the top
band's short-term power with a fixed bank of complex band-pass filters, one frame per `hop`
samples, and returns the amplitude that rule gives each excitation band. The generator multiplies
it by a bounded correction (`correction_gain`: at most +-CORRECTION_DB) that it predicts from the
signal, so an untrained generator (zero correction) plays noisefill's level, and training can only
move it from there.

Which analysis bands form the top band, and how much power each excitation band gets per unit of
top-band power, depend on the band edge only: the host computes them once (`level_state`, numpy) and
puts them into the model's state ("level.top", "level.rule"), as the trainer does per example.
Excitation bands wholly below the crossover get no power (the host keeps the input's band there).
With no band edge given (the initial state) the rule is silent: only the generator's deterministic
branch sounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import firwin
from torch import Tensor

from .excitation import band_edges
from .streaming import State, StreamingModule, with_context

CORRECTION_DB = 18.0  # the generator may move each band's level at most this far from the rule
ANALYSIS_LOW_HZ = 2000.0  # lowest top band: an 8 kHz input's [2.83, 3.6] kHz
ANALYSIS_HIGH_HZ = 20000.0  # highest: a 44.1 kHz input to a 48 kHz model, [15.6, 19.8] kHz
ANALYSIS_BANDS_PER_OCTAVE = 4
STATE_PREFIX = "level"  # both generators keep their BandLevel under this name


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


def level_state(config: Any, cut_hz: float, crossover_hz: float) -> dict[str, np.ndarray]:
    """State values of a generator's BandLevel for an input whose band ends at `cut_hz` (its Nyquist
    frequency, or a same-rate cutoff) with the host taking the model's output above `crossover_hz`.

    `config`: the generator's config (dataclass or dict with noise_bands, noise_low_hz, sample_rate,
    level_slope, level_window). Returns {"level.top": (K,), "level.rule": (bands,)} float32; empty for
    a generator without excitation.
    """
    get = config.get if isinstance(config, Mapping) else lambda k, d=None: getattr(config, k, d)
    bands = int(get("noise_bands", 0) or 0)
    if not bands:
        return {}
    rate = int(get("sample_rate"))
    if not 0 < crossover_hz <= cut_hz < rate / 2:
        raise ValueError(f"need 0 < crossover_hz <= cut_hz < {rate / 2}, got {crossover_hz}, {cut_hz}")
    slope, window = float(get("level_slope")), int(get("level_window"))
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
    # Excitation band b's power per unit of top-band power: the rule's density integrated over b.
    noise = band_edges(bands, float(get("noise_low_hz")), rate)
    f_top = math.sqrt(lo * hi)

    def integral(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # of (f_top / f) ** slope
        if abs(slope - 1.0) < 1e-9:
            return f_top * np.log(b / a)
        return f_top**slope * (b ** (1 - slope) - a ** (1 - slope)) / (1 - slope)

    rule = integral(noise[:-1], noise[1:]) / (hi - lo)
    rule[noise[1:] <= crossover_hz] = 0.0  # the host keeps the input's band there
    return {f"{STATE_PREFIX}.top": top.astype(np.float32), f"{STATE_PREFIX}.rule": rule.astype(np.float32)}


def batch_level_state(
    config: Any,
    band_edges_hz: Sequence[float],
    crossover_ratio: float,
    device: torch.device | str | None = None,
) -> State:
    """`level_state` for a batch of streams, one band edge each (crossover at `crossover_ratio` times
    it), stacked on the batch axis as tensors."""
    rows = [level_state(config, float(e), crossover_ratio * float(e)) for e in band_edges_hz]
    if not rows or not rows[0]:
        return {}
    return {k: torch.tensor(np.stack([r[k] for r in rows]), device=device) for k in rows[0]}


def correction_gain(logits: Tensor) -> Tensor:
    """Amplitude factor of a bounded level correction: 10^(CORRECTION_DB * tanh(logits) / 20)."""
    return torch.exp(torch.tanh(logits) * (CORRECTION_DB * math.log(10.0) / 20.0))


class BandLevel(StreamingModule):
    """(batch, samples) input -> (batch, bands, samples // hop): each excitation band's amplitude
    under the rule, one frame per `hop` samples (frame m ends at sample (m + 1) * hop - 1).

    State: "ctx", the last `window - hop` input samples; "top" (batch, K) and "rule" (batch, bands),
    the host's values from `level_state` (zero: silent)."""

    def __init__(self, bands: int, sample_rate: int, hop: int, window: int) -> None:
        super().__init__()
        if hop < 1 or window < hop:
            raise ValueError(f"need 1 <= hop <= window, got hop={hop}, window={window}")
        self.bands, self.hop, self.window = bands, hop, window
        self.block_multiple = hop
        filters = torch.from_numpy(analysis_filters(sample_rate, window))
        self.register_buffer("filters", filters, persistent=False)
        self.analysis = filters.shape[0] // 2

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        device = device if device is not None else self.filters.device
        return {
            "ctx": torch.zeros(batch, 1, self.window - self.hop, device=device),
            "top": torch.zeros(batch, self.analysis, device=device),
            "rule": torch.zeros(batch, self.bands, device=device),
        }

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        full, ctx = with_context(x.unsqueeze(1), state["ctx"])
        z = F.conv1d(full, self.filters, stride=self.hop)  # (batch, 2 K, frames)
        re, im = z[:, : self.analysis], z[:, self.analysis :]
        top = torch.einsum("bk,bkf->bf", state["top"], re * re + im * im)  # (batch, frames)
        power = state["rule"][:, :, None] * top[:, None, :]
        return torch.sqrt(power + 1e-20), {"ctx": ctx, "top": state["top"], "rule": state["rule"]}
