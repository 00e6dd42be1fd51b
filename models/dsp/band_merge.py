"""Band merge: keep the band the input gave, take only the new band from the model.

When the host knows the input's rate it knows which band is real. The merged output is

    dry (delayed by `delay` more) + highpass(wet - dry)

where `dry` is the resampled input lined up with the model's output `wet`, and the highpass is a
linear-phase FIR (Kaiser window), `delay` samples long in group delay: the complementary crossover
lowpass(dry) + highpass(wet). Its stop band ends at `cutoff_hz` (the host puts it at its
resampler's passband edge, 0.9 x the input's Nyquist frequency) and its transition lies above it,
where the upsampled input is already rolling off: below the cut the output is the input itself
(the model's part is 80 dB down there), so a generator cannot damage the band it was given. The
level of the new band is the generator's own (models/band_level.py owns it); the merge never
rescales it.

The idea is known as low-frequency replacement (AudioSR's post-processing); here it is causal and
streaming, at a fixed cost of `delay` samples of latency.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import firwin

HALF_TAPS = 192  # 4 ms at 48 kHz; Kaiser beta 8: a transition about 0.63 kHz wide, 80 dB stop band
KAISER_BETA = 8.0
STOP_DB = 80.0  # the stop band Kaiser beta 8 gives


def transition_hz(sample_rate: int, half_taps: int) -> float:
    """Width of a Kaiser (beta 8) FIR's transition band (Kaiser's design formula)."""
    return (STOP_DB - 8.0) / (2.285 * 2 * half_taps) * sample_rate / (2 * np.pi)


class BandMerge:
    """The merge of (channels, samples) blocks at `sample_rate`, on the step contract (numpy).

    The state is the last `2 * delay` samples of `wet - dry` (the FIR's context), (channels, 2 * delay).
    """

    def __init__(self, sample_rate: int, cutoff_hz: float, half_taps: int = HALF_TAPS) -> None:
        if not 0 < cutoff_hz < sample_rate / 2:
            raise ValueError(f"cutoff_hz must lie in (0, {sample_rate / 2}), got {cutoff_hz}")
        edge = min(cutoff_hz + transition_hz(sample_rate, half_taps) / 2, 0.99 * sample_rate / 2)
        lowpass = firwin(2 * half_taps + 1, edge, window=("kaiser", KAISER_BETA), fs=sample_rate)
        highpass = -lowpass
        highpass[half_taps] += 1.0
        self.taps = highpass.astype(np.float32)
        self.delay = half_taps

    def init_state(self, channels: int) -> np.ndarray:
        return np.zeros((channels, 2 * self.delay), np.float32)

    def step(
        self, wet: np.ndarray, dry: np.ndarray, dry_delayed: np.ndarray, state: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """`wet`: the model's output; `dry`: its input lined up with `wet`; `dry_delayed`: the same
        input `delay` samples later (the host's one dry delay line, read at two taps)."""
        full = np.concatenate([state, wet - dry], axis=1)
        new_band = np.stack([np.convolve(row, self.taps, mode="valid") for row in full])
        return (dry_delayed + new_band).astype(np.float32), full[:, full.shape[1] - 2 * self.delay :]
