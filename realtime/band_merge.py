"""Band merge: keep the band the input gave, take only the new band from the model.

When the host knows the input's rate it knows which band is real. The merged output is

    dry (delayed by `delay` more) + gain * follow * highpass(wet - dry)

where `dry` is the resampled input lined up with the model's output `wet`, and the highpass is a
linear-phase FIR (Kaiser window) cut just below the input's Nyquist frequency (the host puts it at
its resampler's passband edge), `delay` samples long in group delay. At gain 1 this is the
complementary crossover lowpass(dry) + highpass(wet). Below the cut the output is the input itself
(the model's part is 80 dB down there): a generator cannot damage the band it was given. Above it,
`gain` sets the level of the invented band: its phase cannot match the original, so its error
energy grows with its level (SNR), while too little of it sounds dull. The gain is a property of a
trained model (`band_gain_db` in its config).

`follow` (0 <= `level_follow` <= 1, `band_level_follow` in the config; 0: off, follow = 1) moves the
new band's short-term level toward the one the input itself implies: the power of the input's top
half-octave below the cut, continued above it with a 1/f^2 slope (as the evaluator's noisefill does).
In dB the merged band's level is (1 - level_follow) * model's + level_follow * rule's + gain. A
model's level estimate can be off for a voice it never heard; the input's own top band is the
best evidence of how bright that voice is. Both levels are one-pole power envelopes
(`FOLLOW_MS`), so the gain moves smoothly, and it never lifts the model's band by more than
`FOLLOW_MAX_DB` (where the model is silent it stays silent).

The idea is known as low-frequency replacement (AudioSR's post-processing); here it is causal and
streaming, at a fixed cost of `delay` samples of latency.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import butter, firwin, lfilter, sosfilt

HALF_TAPS = 96  # 2 ms at 48 kHz; Kaiser beta 8: a transition about 1.1 kHz wide, 80 dB stop band
KAISER_BETA = 8.0
FOLLOW_MS = 5.0  # time constant of the level envelopes: fast enough for a sibilant's onset
FOLLOW_MAX_DB = 12.0
TOP_BAND_ORDER = 4  # Butterworth band-pass picking the input's top half-octave


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
        level_follow: float = 0.0,
    ) -> None:
        if not 0 < cutoff_hz < sample_rate / 2:
            raise ValueError(f"cutoff_hz must lie in (0, {sample_rate / 2}), got {cutoff_hz}")
        if not 0.0 <= level_follow <= 1.0:
            raise ValueError(f"level_follow must lie in [0, 1], got {level_follow}")
        lowpass = firwin(2 * half_taps + 1, cutoff_hz, window=("kaiser", KAISER_BETA), fs=sample_rate)
        highpass = -lowpass
        highpass[half_taps] += 1.0
        self.taps = (10.0 ** (gain_db / 20.0) * highpass).astype(np.float32)
        self.delay = half_taps
        self.channels, self.model_latency = channels, model_latency
        self.level_follow = float(level_follow)
        # The rule's power above the cut per unit of top-band power: a band flat at the top
        # [cut / sqrt 2, cut] (centre f_top) continued as (f_top / f)^2 from the cut to Nyquist.
        low = cutoff_hz / math.sqrt(2)
        f_top = math.sqrt(low * cutoff_hz)
        rule_ratio = f_top**2 * (1 / cutoff_hz - 2 / sample_rate) / (cutoff_hz - low)
        self._rule_ratio = rule_ratio * 10.0 ** (gain_db / 10.0)  # the new band's envelope includes the gain
        self._top_band = butter(
            TOP_BAND_ORDER, [low, cutoff_hz], btype="bandpass", fs=sample_rate, output="sos"
        )
        self._decay = math.exp(-1000.0 / (FOLLOW_MS * sample_rate))
        self.reset()

    def reset(self) -> None:
        self._context = np.zeros((self.channels, 2 * self.delay), np.float32)
        self._dry_line = np.zeros((self.channels, self.model_latency), np.float32)
        self._top_state = np.zeros((self._top_band.shape[0], self.channels, 2))
        self._envelopes = np.zeros((2, self.channels, 1))  # power of (new band, input top band)

    def process(self, block: np.ndarray, dry_delayed: np.ndarray, wet: np.ndarray) -> np.ndarray:
        """`block`: the model's input; `wet`: its output, `model_latency` samples behind it;
        `dry_delayed`: `block` delayed by `model_latency + delay` (the host's dry path)."""
        dry = np.concatenate([self._dry_line, block], axis=1)  # the input, lined up with wet
        self._dry_line = dry[:, block.shape[1] :]
        full = np.concatenate([self._context, wet - dry[:, : block.shape[1]]], axis=1)
        self._context = full[:, full.shape[1] - 2 * self.delay :]
        new_band = np.stack([np.convolve(row, self.taps, mode="valid") for row in full])
        if self.level_follow > 0 and block.shape[1] > 0:
            new_band = new_band * self._follow_gain(new_band, dry_delayed)
        return (dry_delayed + new_band).astype(np.float32)

    def _follow_gain(self, new_band: np.ndarray, dry_delayed: np.ndarray) -> np.ndarray:
        """Per-sample gain taking `level_follow` of the new band's level (dB) from the input's rule."""
        top, self._top_state = sosfilt(self._top_band, dry_delayed.astype(np.float64), zi=self._top_state)
        a = self._decay
        powers = np.stack([new_band.astype(np.float64) ** 2, top**2])
        envelopes, self._envelopes = lfilter([1 - a], [1, -a], powers, axis=-1, zi=self._envelopes)
        ratio = self._rule_ratio * envelopes[1] / np.maximum(envelopes[0], 1e-30)
        return np.minimum(ratio ** (self.level_follow / 2), 10 ** (FOLLOW_MAX_DB / 20))
