"""Bandwidth-extension metrics, defined once (see the project's DATA notes); numpy/scipy only.

- LSD: STFT n_fft 2048, hop 512, periodic Hann, centred frames (reflect padding), power spectra,
  `log10(max(P, 1e-8))`; per frame `sqrt(mean over bins of (log10 P_ref - log10 P_est)^2)`; mean over
  frames. Frames whose energy (summed over the scored bins) is more than 60 dB below the reference's
  loudest frame are dropped; the same frames are used for every system. Bins from 0 to 19.5 kHz.
- LSD-HF: the same over the missing band only, the bins from the input's Nyquist to 19.5 kHz.
- SNR-LB: the SNR of the given band: both signals brick-wall low-passed (FFT, zero phase) at 0.9 x the
  input's Nyquist, then 10 log10(sum ref^2 / sum (ref - est)^2) in dB. Judges "do not damage the band
  you were given".
- Level bias: over the LSD frames and the LSD-HF bins, mean of 10 log10(max(P_est, 1e-8) /
  max(P_ref, 1e-8)) in dB; negative: the new band is too quiet. Also per third-octave band.
- SNR: full band, informational only (any new band whose phase differs from the original costs it).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import get_window

N_FFT = 2048
HOP = 512
FLOOR = 1e-8  # power floor before log10
MAX_HZ = 19500.0  # lossy sources carry nothing reliable above this
FRAME_RANGE_DB = 60.0  # frames further below the loudest reference frame are not scored
SNR_LB_SHARE = 0.9  # SNR-LB keeps this share of the input's Nyquist: the anti-alias roll-off is not scored
BANDS_PER_OCTAVE = 3


# ---- spectra ----------------------------------------------------------------------------------------
def _as_signal(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1 or x.size == 0 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be a non-empty 1-D float array, got {x.dtype} {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or Inf")
    return x.astype(np.float64, copy=False)


def stft(x: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Complex STFT (frames, n_fft//2 + 1): periodic Hann, centred frames with reflect padding.

    Frame j is centred on sample j*hop; there are 1 + len(x)//hop frames (torch.stft(center=True)).
    """
    x = _as_signal("x", x)
    padded = np.pad(x, n_fft // 2, mode="reflect" if x.size > n_fft // 2 else "constant")
    frames = sliding_window_view(padded, n_fft)[::hop]
    return np.fft.rfft(frames * get_window("hann", n_fft), axis=-1)


def istft(spec: np.ndarray, length: int, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Weighted overlap-add inverse of `stft` (Hann synthesis window), `length` samples."""
    window = get_window("hann", n_fft)
    frames = np.fft.irfft(spec, n=n_fft, axis=-1) * window
    total = (spec.shape[0] - 1) * hop + n_fft
    out, norm = np.zeros(total), np.zeros(total)
    for j, frame in enumerate(frames):
        out[j * hop : j * hop + n_fft] += frame
        norm[j * hop : j * hop + n_fft] += window**2
    out = out[n_fft // 2 : n_fft // 2 + length]
    norm = norm[n_fft // 2 : n_fft // 2 + length]
    return out / np.maximum(norm, 1e-8)


def power_spectrogram(x: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """|STFT|^2, (frames, n_fft//2 + 1); unnormalised, as torch.stft(normalized=False) gives it."""
    return np.abs(stft(x, n_fft, hop)) ** 2


def bin_frequencies(sample_rate: int, n_fft: int = N_FFT) -> np.ndarray:
    return np.arange(n_fft // 2 + 1) * sample_rate / n_fft


def band_mask(sample_rate: int, low_hz: float, high_hz: float, n_fft: int = N_FFT) -> np.ndarray:
    """Bins with low_hz <= f <= high_hz (high_hz capped at Nyquist)."""
    if not 0 <= low_hz < high_hz:
        raise ValueError(f"the band must satisfy 0 <= low_hz < high_hz, got [{low_hz}, {high_hz}] Hz")
    f = bin_frequencies(sample_rate, n_fft)
    mask = (f >= low_hz) & (f <= min(high_hz, sample_rate / 2))
    if not mask.any():
        raise ValueError(f"no STFT bin falls in [{low_hz}, {high_hz}] Hz at {sample_rate} Hz")
    return mask


def active_frames(ref_power: np.ndarray, sample_rate: int, n_fft: int = N_FFT) -> np.ndarray:
    """Frames of the reference within FRAME_RANGE_DB of its loudest frame (energy over 0..MAX_HZ)."""
    energy = ref_power[:, band_mask(sample_rate, 0.0, MAX_HZ, n_fft)].sum(axis=1)
    if energy.max() <= 0:
        raise ValueError("the reference is silent: no frame can be scored")
    return energy >= energy.max() * 10 ** (-FRAME_RANGE_DB / 10)


def lowpass(x: np.ndarray, sample_rate: int, cutoff_hz: float) -> np.ndarray:
    """Brick-wall, zero-phase low-pass over the whole signal: FFT bins above `cutoff_hz` set to 0."""
    x = _as_signal("x", x)
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(x.size, 1 / sample_rate) > cutoff_hz] = 0
    return np.fft.irfft(spec, n=x.size)


def band_index(sample_rate: int, input_rate: int, bands_per_octave: int = BANDS_PER_OCTAVE) -> np.ndarray:
    """Fractional-octave band index of each LSD-HF bin (-1 outside the missing band).

    Band k holds the bins whose f rounds to 1 kHz * 2^(k / bands_per_octave) on a log scale (the
    ISO-style grid), so every missing-band bin belongs to exactly one band."""
    f = bin_frequencies(sample_rate)
    index = np.full(f.size, -1)
    hf = _hf_bins(sample_rate, input_rate)
    index[hf] = np.round(bands_per_octave * np.log2(f[hf] / 1000.0)).astype(int)
    return index


# ---- metrics ----------------------------------------------------------------------------------------
def _check_pair(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref, est = _as_signal("reference", reference), _as_signal("estimate", estimate)
    if ref.shape != est.shape:
        raise ValueError(f"reference and estimate must have the same length, got {ref.size} and {est.size}")
    return ref, est


def _check_rates(sample_rate: int, input_rate: int) -> None:
    if not 0 < input_rate / 2 < min(MAX_HZ, sample_rate / 2):
        raise ValueError(
            f"input_rate={input_rate} leaves no missing band below {MAX_HZ} Hz at {sample_rate} Hz"
        )


def _hf_bins(sample_rate: int, input_rate: int) -> np.ndarray:
    _check_rates(sample_rate, input_rate)
    return band_mask(sample_rate, input_rate / 2, MAX_HZ)


def _log_diff(p_ref: np.ndarray, p_est: np.ndarray, frames: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """log10 P_est - log10 P_ref (floored) on the scored frames x bins."""
    return np.log10(np.maximum(p_est[frames][:, bins], FLOOR)) - np.log10(
        np.maximum(p_ref[frames][:, bins], FLOOR)
    )


def _lsd(diff: np.ndarray) -> float:
    return float(np.mean(np.sqrt(np.mean(diff**2, axis=1))))


def _band_bias(
    diff_hf: np.ndarray, sample_rate: int, input_rate: int, bands_per_octave: int
) -> tuple[np.ndarray, np.ndarray]:
    index = band_index(sample_rate, input_rate, bands_per_octave)
    hf_index = index[index >= 0]  # the band of each column of diff_hf, in bin order
    bias = np.array([10 * np.mean(diff_hf[:, hf_index == k]) for k in np.unique(hf_index)])
    return band_centres(sample_rate, input_rate, bands_per_octave), bias


def band_centres(sample_rate: int, input_rate: int, bands_per_octave: int = BANDS_PER_OCTAVE) -> np.ndarray:
    """Centre (Hz) of each band `level_bias_per_band` reports, in ascending order.

    The centre is the geometric middle of the bins actually scored: the edge bands are cut by the
    input's Nyquist and by MAX_HZ, so their nominal centre may lie outside the missing band."""
    index, f = band_index(sample_rate, input_rate, bands_per_octave), bin_frequencies(sample_rate)
    return np.array(
        [math.sqrt(f[index == k].min() * f[index == k].max()) for k in np.unique(index[index >= 0])]
    )


def lsd(
    reference: np.ndarray,
    estimate: np.ndarray,
    sample_rate: int,
    low_hz: float = 0.0,
    high_hz: float = MAX_HZ,
) -> float:
    """Log-spectral distance (log10 units) over the bins in [low_hz, high_hz] and the active frames."""
    ref, est = _check_pair(reference, estimate)
    p_ref, p_est = power_spectrogram(ref), power_spectrogram(est)
    frames = active_frames(p_ref, sample_rate)
    return _lsd(_log_diff(p_ref, p_est, frames, band_mask(sample_rate, low_hz, high_hz)))


def lsd_hf(reference: np.ndarray, estimate: np.ndarray, sample_rate: int, input_rate: int) -> float:
    """LSD over the missing band: from the input's Nyquist to MAX_HZ."""
    _check_rates(sample_rate, input_rate)
    return lsd(reference, estimate, sample_rate, input_rate / 2, MAX_HZ)


def snr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Full-band signal-to-noise ratio in dB (inf when the estimate is exact); informational only."""
    ref, est = _check_pair(reference, estimate)
    noise = float(np.sum((ref - est) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0:
        return math.inf
    return 10 * math.log10(max(signal, 1e-300) / noise)


def snr_lb(reference: np.ndarray, estimate: np.ndarray, sample_rate: int, input_rate: int) -> float:
    """SNR (dB) of the given band: both signals brick-wall low-passed at SNR_LB_SHARE x input Nyquist."""
    ref, est = _check_pair(reference, estimate)
    if not 0 < input_rate <= sample_rate:
        raise ValueError(f"input_rate={input_rate} must be in (0, sample_rate={sample_rate}]")
    cutoff = SNR_LB_SHARE * input_rate / 2
    return snr(lowpass(ref, sample_rate, cutoff), lowpass(est, sample_rate, cutoff))


def level_bias(reference: np.ndarray, estimate: np.ndarray, sample_rate: int, input_rate: int) -> float:
    """Mean level error (dB) of the new band over the LSD-HF frames and bins; negative: too quiet."""
    return spectral_scores(reference, estimate, sample_rate, input_rate)[0]["level_bias"]


def level_bias_per_band(
    reference: np.ndarray,
    estimate: np.ndarray,
    sample_rate: int,
    input_rate: int,
    bands_per_octave: int = BANDS_PER_OCTAVE,
) -> tuple[np.ndarray, np.ndarray]:
    """(band centres Hz, level bias dB per band): `level_bias` per fractional-octave band of the new band."""
    return spectral_scores(reference, estimate, sample_rate, input_rate, bands_per_octave)[1]


def spectral_scores(
    reference: np.ndarray,
    estimate: np.ndarray,
    sample_rate: int,
    input_rate: int,
    bands_per_octave: int = BANDS_PER_OCTAVE,
) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray]]:
    """({lsd, lsd_hf, level_bias}, (band centres Hz, bias dB per band)) from one pair of spectrograms:
    the same values `lsd`, `lsd_hf`, `level_bias` and `level_bias_per_band` give, at a third of the cost."""
    ref, est = _check_pair(reference, estimate)
    hf = _hf_bins(sample_rate, input_rate)
    p_ref, p_est = power_spectrogram(ref), power_spectrogram(est)
    frames = active_frames(p_ref, sample_rate)
    diff_hf = _log_diff(p_ref, p_est, frames, hf)
    scores = {
        "lsd": _lsd(_log_diff(p_ref, p_est, frames, band_mask(sample_rate, 0.0, MAX_HZ))),
        "lsd_hf": _lsd(diff_hf),
        "level_bias": float(10 * np.mean(diff_hf)),  # 10 log10(P_est / P_ref) = 10 (log P_est - log P_ref)
    }
    return scores, _band_bias(diff_hf, sample_rate, input_rate, bands_per_octave)


def fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """`x` cut or zero-padded at the end to `length` samples."""
    return x[:length] if x.size >= length else np.pad(x, (0, length - x.size))
