"""Noise excitation: band-split, deterministic white noise scaled per band and frame.

A network trained without a discriminator cannot invent the noise-like part of a missing band: the
phase of fricatives and cymbals is not predictable from the band it was given, so a deterministic
waveform settles for a quiet, smeared guess. Classic bandwidth extension splits the job into a
source (noise) and a filter (the spectral envelope); `NoiseBands` supplies the source, and the
envelope comes from `models.band_level` (the input's rule times the generator's bounded correction).

The noise is a fixed table (a counter-based integer hash, so it is the same on every machine and
numpy version), split into log-spaced bands by masking its spectrum: the table is periodic, so the
split is exact and the bands add up to white noise above `low_hz`. Given the level rule's shape, each
band's spectrum also follows the shape inside the band (its power kept at 1), so the excitation's
power density is the rule's at every frequency rather than a step per band: the shipped shapes fall
2-14 dB across one of their bands. The only state is the read position, so streaming equals offline
and the module exports to ONNX (Gather on int64 indices).
In training mode every stream starts at a random position, so a fixed noise sample is never learnt.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .dsp.level import band_edges, shape_db
from .streaming import State, StreamingModule, with_context

PERIOD = 1 << 17  # table length: 2.7 s at 48 kHz, far longer than any pattern an ear locks on to


def hash_noise(n: int, seed: int = 0) -> np.ndarray:
    """`n` samples of zero-mean, unit-variance Gaussian noise from an integer hash of the index.

    lowbias32 (C. Wellons) on (2i + 1, 2i + 2) gives two uniforms per sample, Box-Muller makes them
    Gaussian. Only integer arithmetic decides the values, so they never change between platforms.
    """
    # From 1: the hash maps 0 to 0, which would make the first sample an extreme outlier.
    idx = np.arange(1, 2 * n + 1, dtype=np.uint64) + np.uint64(seed) * np.uint64(2 * n)
    x = (idx & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint32(16)
        x *= np.uint32(0x7FEB352D)
        x ^= x >> np.uint32(15)
        x *= np.uint32(0x846CA68B)
        x ^= x >> np.uint32(16)
    u = (x.astype(np.float64) + 0.5) / 2.0**32
    u1, u2 = u[0::2], u[1::2]
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def band_noise(
    bands: int,
    low_hz: float,
    sample_rate: int,
    shape: Any = None,
    period: int = PERIOD,
    seed: int = 0,
) -> np.ndarray:
    """(bands, period) float32 tables: band k holds the noise between edges k and k + 1, unit RMS,
    its spectrum following the level shape `shape` ((Hz, dB) points; None: flat)."""
    spectrum = np.fft.rfft(hash_noise(period, seed))
    freqs = np.fft.rfftfreq(period, 1.0 / sample_rate)
    edges = band_edges(bands, low_hz, sample_rate)
    if shape is not None:
        above = freqs >= edges[0]
        spectrum[above] *= 10.0 ** (shape_db(shape, freqs[above]) / 20.0)
    tables = np.empty((bands, period), dtype=np.float32)
    for k in range(bands):
        upper = freqs <= edges[k + 1] if k == bands - 1 else freqs < edges[k + 1]
        x = np.fft.irfft(spectrum * ((freqs >= edges[k]) & upper), n=period)
        tables[k] = x / np.sqrt(np.mean(x**2))
    return tables


def moving_average(x: Tensor, window: int) -> Tensor:
    """Mean of every run of `window` consecutive samples along the last axis (length - window + 1).

    A difference of float64 running sums: O(1) per sample where avg_pool1d is O(window); float64 keeps
    the cancellation error far below float32 resolution for blocks up to minutes long.
    """
    if window == 1:
        return x
    sums = F.pad(x.double().cumsum(-1), (1, 0))
    return ((sums[..., window:] - sums[..., :-window]) / window).to(x.dtype)


class NoiseBands(StreamingModule):
    """(batch, bands, samples) gains -> (batch, samples): sum over k of smoothed gain_k * noise_k.

    `smooth`: length of the causal moving average applied to the gains, so that a gain changing from
    one sample to the next does not splatter its band's noise into the band below.
    `hop` > 1: the gains come one per frame of `hop` samples, (batch, bands, frames), and are
    interpolated linearly from the previous frame's over each frame (the moving average of length
    `hop` of the held gains, at O(1) per sample).
    `shape`: the level rule's shape, followed within each band (`band_noise`).
    State: "pos", the read position in the table per stream (an integer < PERIOD, exact in fp32), and
    "gains", the last `smooth - 1` gains (or the last frame's).
    """

    def __init__(
        self,
        bands: int,
        low_hz: float,
        sample_rate: int,
        smooth: int = 1,
        hop: int = 1,
        shape: Any = None,
    ) -> None:
        super().__init__()
        if smooth < 1 or hop < 1 or (smooth > 1 and hop > 1):
            raise ValueError(f"need smooth >= 1 and hop >= 1, not both > 1; got smooth={smooth}, hop={hop}")
        self.bands, self.smooth, self.hop = bands, smooth, hop
        self.register_buffer("ramp", torch.arange(1, hop + 1, dtype=torch.float32) / hop, persistent=False)
        self.edges = band_edges(bands, low_hz, sample_rate)
        # Rebuilt from the hash at construction, never stored with the weights.
        self.register_buffer(
            "table", torch.from_numpy(band_noise(bands, low_hz, sample_rate, shape)), persistent=False
        )

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        device = device if device is not None else self.table.device
        if self.training:  # a random start per stream: training never sees one fixed noise sample
            pos = torch.randint(0, PERIOD, (batch, 1), device=device).float()
        else:
            pos = torch.zeros(batch, 1, device=device)
        return {
            "pos": pos,
            "gains": torch.zeros(batch, self.bands, 1 if self.hop > 1 else self.smooth - 1, device=device),
        }

    def step(self, gains: Tensor, state: State) -> tuple[Tensor, State]:
        y, _, new_state = self.render(gains, state, envelope=False)
        return y, new_state

    def render(
        self, gains: Tensor, state: State, envelope: bool = True
    ) -> tuple[Tensor, Tensor | None, State]:
        """`step` that also returns the noise's RMS envelope, sqrt(sum over k of smoothed gain_k^2)
        (batch, samples): the bands are disjoint and unit-RMS, so that is the amplitude the sum has
        on average at each sample (None when `envelope` is False)."""
        if gains.dim() != 3 or gains.shape[1] != self.bands:
            raise ValueError(
                f"NoiseBands: gains must be (batch, {self.bands}, samples), got {tuple(gains.shape)}"
            )
        full, context = with_context(gains, state["gains"])
        if self.hop > 1:  # previous frame -> this frame over each hop: (batch, bands, frames * hop)
            before, after = full[..., :-1, None], full[..., 1:, None]
            smoothed = (before + (after - before) * self.ramp).flatten(2)
        else:
            smoothed = moving_average(full, self.smooth)
        length = smoothed.shape[-1]
        start = state["pos"].long()  # (batch, 1)
        index = torch.remainder(start + torch.arange(length, device=gains.device), PERIOD)  # (batch, L)
        noise = self.table[:, index].transpose(0, 1)  # (batch, bands, L)
        y = (smoothed * noise).sum(dim=1)
        env = smoothed.square().sum(dim=1).sqrt() if envelope else None
        pos = torch.remainder(start + length, PERIOD).to(state["pos"].dtype)
        return y, env, {"pos": pos, "gains": context}
