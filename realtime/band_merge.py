"""Band merge: keep the band the input gave, take only the new band from the model.

When the host knows the input's rate it knows which band is real. The merged output is

    dry (delayed by `delay` more) + gain * highpass(wet - dry)

where `dry` is the resampled input lined up with the model's output `wet`, and the highpass is a
linear-phase FIR (Kaiser window) cut just below the input's Nyquist frequency (the host puts it at
its resampler's passband edge), `delay` samples long in group delay. At gain 1 this is the
complementary crossover lowpass(dry) + highpass(wet). Below the cut the output is the input itself
(the model's part is 80 dB down there): a generator cannot damage the band it was given. Above it,
`gain` sets the level of the invented band: its phase cannot match the original, so its error
energy grows with its level (SNR), while too little of it sounds dull. The gain is a property of a
trained model (`band_gain_db` in its config), calibrated on training data.

The idea is known as low-frequency replacement (AudioSR's post-processing); here it is causal and
streaming, at a fixed cost of `delay` samples of latency.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import firwin

HALF_TAPS = 96  # 2 ms at 48 kHz; Kaiser beta 8: a transition about 1.1 kHz wide, 80 dB stop band
KAISER_BETA = 8.0


class BandMerge:
    """Streaming merge of (channels, samples) blocks at `sample_rate`."""

    def __init__(
        self,
        sample_rate: int,
        cutoff_hz: float,
        gain_db: float,
        channels: int,
        model_latency: int,
        half_taps: int = HALF_TAPS,
    ) -> None:
        if not 0 < cutoff_hz < sample_rate / 2:
            raise ValueError(f"cutoff_hz must lie in (0, {sample_rate / 2}), got {cutoff_hz}")
        lowpass = firwin(2 * half_taps + 1, cutoff_hz, window=("kaiser", KAISER_BETA), fs=sample_rate)
        highpass = -lowpass
        highpass[half_taps] += 1.0
        self.taps = (10.0 ** (gain_db / 20.0) * highpass).astype(np.float32)
        self.delay = half_taps
        self.channels, self.model_latency = channels, model_latency
        self.reset()

    def reset(self) -> None:
        self._context = np.zeros((self.channels, 2 * self.delay), np.float32)
        self._dry_line = np.zeros((self.channels, self.model_latency), np.float32)

    def process(self, block: np.ndarray, dry_delayed: np.ndarray, wet: np.ndarray) -> np.ndarray:
        """`block`: the model's input; `wet`: its output, `model_latency` samples behind it;
        `dry_delayed`: `block` delayed by `model_latency + delay` (the host's dry path)."""
        dry = np.concatenate([self._dry_line, block], axis=1)  # the input, lined up with wet
        self._dry_line = dry[:, block.shape[1] :]
        full = np.concatenate([self._context, wet - dry[:, : block.shape[1]]], axis=1)
        self._context = full[:, full.shape[1] - 2 * self.delay :]
        new_band = np.stack([np.convolve(row, self.taps, mode="valid") for row in full])
        return (dry_delayed + new_band).astype(np.float32)
