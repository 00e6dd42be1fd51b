"""`python -m models.evaluate`: bandwidth-extension metrics, the two references, and the model beside them.

The metrics are defined here once (see the project's DATA notes) and imported by training:

- LSD: STFT n_fft 2048, hop 512, periodic Hann, centred frames (reflect padding), power spectra,
  `log10(max(P, 1e-8))`; per frame `sqrt(mean over bins of (log10 P_ref - log10 P_est)^2)`; mean over
  frames. Frames whose energy (summed over the scored bins) is more than 60 dB below the reference's
  loudest frame are dropped; the same frames are used for every system. Bins from 0 to 19.5 kHz.
- LSD-HF: the same over the missing band only, the bins from the input's Nyquist to 19.5 kHz.
- SNR: 10 log10(sum ref^2 / sum (ref - est)^2) in dB.
- ViSQOL (audio mode, 48 kHz) when the optional `visqol` package (visqol-python) is installed.

References scored beside the model: the **baseline** (the low-resolution input resampled to the target
rate with soxr: no new band) and **noisefill** (random-phase noise in the missing band at a level that
continues the input's top half-octave with a 1/f^2 slope, see `noisefill`).

The model runs through the live streaming path in file mode (`realtime.processor.process_offline`,
the code behind `python -m realtime --input/--output`): the low-resolution input at its own rate goes
in, the output at the model's rate comes out, latency compensated. The evaluator checks that claim by
cross-correlating the low band of the output with the reference and reports any lag.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import get_window

N_FFT = 2048
HOP = 512
FLOOR = 1e-8  # power floor before log10
MAX_HZ = 19500.0  # lossy sources carry nothing reliable above this
FRAME_RANGE_DB = 60.0  # frames further below the loudest reference frame are not scored
NOISEFILL_LEVEL_TOP = (
    0.95  # the fit band stops short of the input's Nyquist, where its anti-alias filter rolls off
)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
DEFAULT_RATES = {"wave-u-mamba": (8000, 12000, 16000, 24000), "aeromamba": (11025, 22050)}
SYSTEMS = ("baseline", "noisefill", "model")
METRICS = ("lsd", "lsd_hf", "snr", "visqol")


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


# ---- metrics ----------------------------------------------------------------------------------------
def _check_pair(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref, est = _as_signal("reference", reference), _as_signal("estimate", estimate)
    if ref.shape != est.shape:
        raise ValueError(f"reference and estimate must have the same length, got {ref.size} and {est.size}")
    return ref, est


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
    bins = band_mask(sample_rate, low_hz, high_hz)
    diff = np.log10(np.maximum(p_ref[frames][:, bins], FLOOR)) - np.log10(
        np.maximum(p_est[frames][:, bins], FLOOR)
    )
    return float(np.mean(np.sqrt(np.mean(diff**2, axis=1))))


def lsd_hf(reference: np.ndarray, estimate: np.ndarray, sample_rate: int, input_rate: int) -> float:
    """LSD over the missing band: from the input's Nyquist to MAX_HZ."""
    if not 0 < input_rate / 2 < min(MAX_HZ, sample_rate / 2):
        raise ValueError(
            f"input_rate={input_rate} leaves no missing band below {MAX_HZ} Hz at {sample_rate} Hz"
        )
    return lsd(reference, estimate, sample_rate, input_rate / 2, MAX_HZ)


def snr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Signal-to-noise ratio in dB (inf when the estimate is exact)."""
    ref, est = _check_pair(reference, estimate)
    noise = float(np.sum((ref - est) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0:
        return math.inf
    return 10 * math.log10(max(signal, 1e-300) / noise)


# ---- references -------------------------------------------------------------------------------------
def fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """`x` cut or zero-padded at the end to `length` samples."""
    return x[:length] if x.size >= length else np.pad(x, (0, length - x.size))


def downsample(reference: np.ndarray, sample_rate: int, input_rate: int) -> np.ndarray:
    """The evaluation's low-resolution input: one fixed, high-quality anti-alias filter (soxr VHQ)."""
    return soxr.resample(reference, sample_rate, input_rate, quality="VHQ")


def baseline(lowres: np.ndarray, input_rate: int, sample_rate: int, length: int) -> np.ndarray:
    """The low-resolution input resampled to `sample_rate` with soxr: no new band."""
    return fit_length(soxr.resample(lowres, input_rate, sample_rate, quality="VHQ"), length)


def noisefill(upsampled: np.ndarray, sample_rate: int, input_rate: int, seed: int = 0) -> np.ndarray:
    """`upsampled` (the baseline) plus random-phase noise in the missing band, f >= input_rate / 2.

    Per STFT frame the noise power per bin is P_top * (f_top / f)^2, where P_top is the mean power
    of the input's top half-octave [nyq / sqrt 2, 0.95 nyq] and f_top its geometric centre: the
    level continues the input band with a 1/f^2 slope. The noise is made by weighted overlap-add and
    then cut by a brick-wall over the whole signal, so nothing below the input's Nyquist changes.
    """
    x = _as_signal("upsampled", upsampled)
    nyq = input_rate / 2
    if not 0 < nyq < sample_rate / 2:
        raise ValueError(f"input_rate={input_rate} must be below sample_rate={sample_rate}")
    f = bin_frequencies(sample_rate)
    spec = stft(x)
    fit = band_mask(sample_rate, nyq / math.sqrt(2), NOISEFILL_LEVEL_TOP * nyq)
    f_top = math.sqrt(nyq / math.sqrt(2) * NOISEFILL_LEVEL_TOP * nyq)
    p_top = np.mean(np.abs(spec[:, fit]) ** 2, axis=1, keepdims=True)
    missing = f >= nyq
    shape = np.zeros_like(f)
    shape[missing] = (f_top / f[missing]) ** 2
    # Hann analysis keeps 3/8 of a steady signal's power per bin, and overlap-adding independent
    # frames at hop n_fft/4 under a window-square normalisation of 1.5 keeps 1/1.5 of it: x4 in all.
    power = 4.0 * p_top * shape[None, :]
    rng = np.random.default_rng(seed)
    phase = np.exp(2j * np.pi * rng.random(power.shape))
    noise = istft(np.sqrt(power) * phase, x.size)
    full = np.fft.rfft(noise)
    full[np.fft.rfftfreq(x.size, 1 / sample_rate) < nyq] = 0
    return x + np.fft.irfft(full, n=x.size)


def alignment_lag(
    reference: np.ndarray, estimate: np.ndarray, sample_rate: int, band_hz: float, max_lag: int
) -> int:
    """Lag (samples; > 0: the estimate is late) maximising the cross-correlation of the two signals'
    content below `band_hz`."""
    ref, est = _check_pair(reference, estimate)
    n = 1 << math.ceil(math.log2(2 * ref.size))
    keep = np.fft.rfftfreq(n, 1 / sample_rate) < band_hz
    cross = np.fft.irfft(np.fft.rfft(est, n) * np.conj(np.fft.rfft(ref, n)) * keep, n)
    lags = np.r_[0 : max_lag + 1, -max_lag:0]
    return int(lags[np.argmax(cross[lags])])


# ---- ViSQOL -----------------------------------------------------------------------------------------
VISQOL_RATE = 48000


def visqol_scorer() -> tuple[Callable[[np.ndarray, np.ndarray, int], float] | None, str]:
    """(score(ref, est, rate) -> MOS-LQO, note); score is None when visqol-python is not installed."""
    try:
        from visqol import VisqolApi
    except ImportError:
        return None, "ViSQOL skipped: the optional package visqol-python is not installed"
    api = VisqolApi()
    api.create(mode="audio")

    def score(ref: np.ndarray, est: np.ndarray, rate: int) -> float:
        if rate != VISQOL_RATE:  # audio mode is defined at 48 kHz
            ref, est = (soxr.resample(s, rate, VISQOL_RATE, quality="VHQ") for s in (ref, est))
        return float(api.measure_from_arrays(ref, est, sample_rate=VISQOL_RATE).moslqo)

    return score, "ViSQOL audio mode (48 kHz)"


# ---- evaluation -------------------------------------------------------------------------------------
@dataclass
class ClipResult:
    file: str
    rate: int
    metrics: dict[str, dict[str, float]]  # system -> metric -> value
    lag: int | None = None  # model output vs reference, samples


@dataclass
class Report:
    sample_rate: int
    rates: list[int]
    clips: list[ClipResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self) -> dict[int, dict[str, dict[str, float]]]:
        """rate -> system -> metric -> mean over clips (per-clip values first, as the references do)."""
        out: dict[int, dict[str, dict[str, float]]] = {}
        for rate in self.rates:
            clips = [c for c in self.clips if c.rate == rate]
            if not clips:
                continue
            systems = {s for c in clips for s in c.metrics}
            out[rate] = {
                s: {
                    m: float(np.mean([c.metrics[s][m] for c in clips if m in c.metrics[s]]))
                    for m in METRICS
                    if any(m in c.metrics[s] for c in clips)
                }
                for s in SYSTEMS
                if s in systems
            }
        return out

    def lags(self) -> dict[int, list[int]]:
        return {
            rate: sorted({c.lag for c in self.clips if c.rate == rate and c.lag is not None})
            for rate in self.rates
        }

    def to_json(self) -> dict:
        return {
            "sample_rate": self.sample_rate,
            "rates": self.rates,
            "table": {str(r): v for r, v in self.table().items()},
            "lags": {str(r): v for r, v in self.lags().items()},
            "clips": [c.__dict__ for c in self.clips],
            "notes": self.notes,
        }

    def format(self) -> str:
        metrics = {"lsd": "LSD", "lsd_hf": "LSD-HF", "snr": "SNR dB", "visqol": "ViSQOL"}
        head = f"{'rate':>6}  {'system':<10}" + "".join(f"{m:>9}" for m in metrics.values())
        lines = [head, "-" * len(head)]
        for rate, systems in self.table().items():
            for i, (name, vals) in enumerate(systems.items()):
                cells = "".join(f"{vals[m]:9.3f}" if m in vals else f"{'-':>9}" for m in metrics)
                lines.append(f"{rate if i == 0 else '':>6}  {name:<10}{cells}")
        for rate, lags in self.lags().items():
            if any(lags):
                lines.append(f"WARNING: model output misaligned at {rate} Hz: lags {lags} samples")
        return "\n".join(lines + self.notes)


def score(
    reference: np.ndarray,
    estimate: np.ndarray,
    sample_rate: int,
    input_rate: int,
    visqol: Callable[[np.ndarray, np.ndarray, int], float] | None = None,
) -> dict[str, float]:
    """All metrics of one system on one clip."""
    out = {
        "lsd": lsd(reference, estimate, sample_rate),
        "lsd_hf": lsd_hf(reference, estimate, sample_rate, input_rate),
        "snr": snr(reference, estimate),
    }
    if visqol is not None:
        try:
            out["visqol"] = visqol(reference, estimate, sample_rate)
        except ValueError:  # a clip shorter than ViSQOL's patches: scored without it
            pass
    return out


ModelRunner = Callable[[np.ndarray, int], np.ndarray]


def model_runner(model: object, backend: str = "torch", block_seconds: float | None = 1.0) -> ModelRunner:
    """(lowres, input_rate) -> output at the model's rate, through the live path in file mode.

    `block_seconds` sets the model block (rounded to its block_multiple; None: the live default of
    about 10 ms). Streaming equals offline for any block length, so long blocks only save time.
    """
    from realtime.processor import process_offline  # the host path; models never import it at load time

    block = None
    if block_seconds is not None:
        multiple = int(model.block_multiple)
        block = max(1, round(block_seconds * int(model.sample_rate) / multiple)) * multiple

    def run(lowres: np.ndarray, input_rate: int) -> np.ndarray:
        y = process_offline(model, lowres.astype(np.float32), input_rate, backend=backend, block_size=block)
        return y.astype(np.float64)

    return run


def evaluate_clip(
    reference: np.ndarray,
    sample_rate: int,
    input_rate: int,
    run_model: ModelRunner | None = None,
    visqol: Callable[[np.ndarray, np.ndarray, int], float] | None = None,
    seed: int = 0,
    name: str = "",
) -> tuple[ClipResult, dict[str, np.ndarray]]:
    """Metrics of baseline, noisefill (and the model) on one reference clip; also the signals."""
    ref = _as_signal("reference", reference)
    lowres = downsample(ref, sample_rate, input_rate)
    signals = {"reference": ref, "baseline": baseline(lowres, input_rate, sample_rate, ref.size)}
    signals["noisefill"] = noisefill(signals["baseline"], sample_rate, input_rate, seed)
    lag = None
    if run_model is not None:
        signals["model"] = fit_length(run_model(lowres, input_rate), ref.size)
        lag = alignment_lag(ref, signals["model"], sample_rate, 0.8 * input_rate / 2, max_lag=N_FFT)
    metrics = {s: score(ref, signals[s], sample_rate, input_rate, visqol) for s in SYSTEMS if s in signals}
    return ClipResult(name, input_rate, metrics, lag), signals


def load_reference(path: Path, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """A file as a mono float64 signal at `sample_rate` (soxr VHQ), cut to `max_seconds`."""
    x, rate = sf.read(str(path), dtype="float64", always_2d=True)
    x = x.mean(axis=1)
    if rate != sample_rate:
        x = soxr.resample(x, rate, sample_rate, quality="VHQ")
    if max_seconds is not None:
        x = x[: int(max_seconds * sample_rate)]
    return x


def list_files(data: Path, split: str = "test") -> list[Path]:
    """Evaluation files: the `split` of a prepared folder's manifest.json, else every audio file below `data`."""
    manifest = data / "manifest.json"
    if manifest.exists():
        meta = json.loads(manifest.read_text())
        if split not in meta.get("splits", {}):
            raise ValueError(f"{manifest} has no split {split!r}; it has {sorted(meta.get('splits', {}))}")
        return [data / e["path"] for e in meta["splits"][split]]
    if not data.is_dir():
        raise ValueError(f"--data must be a folder of audio files, got {data}")
    return sorted(p for p in data.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())


def save_spectrograms(signals: dict[str, np.ndarray], sample_rate: int, path: Path, title: str) -> None:
    """One PNG: log-power spectrograms of the reference, the input (baseline), noisefill and the model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ("reference", "baseline", "noisefill", "model") if n in signals]
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.4 * len(names)), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        db = 10 * np.log10(np.maximum(power_spectrogram(signals[name]), FLOOR)).T
        extent = (0, signals[name].size / sample_rate, 0, sample_rate / 2000)
        ax.imshow(
            db, origin="lower", aspect="auto", extent=extent, vmin=db.max() - 100, vmax=db.max(), cmap="magma"
        )
        ax.set_ylabel("kHz")
        ax.set_title("input (soxr baseline)" if name == "baseline" else name, fontsize=9)
    axes[-1, 0].set_xlabel("s")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def evaluate(
    files: Sequence[Path],
    sample_rate: int,
    rates: Sequence[int],
    run_model: ModelRunner | None = None,
    use_visqol: bool = True,
    max_seconds: float | None = None,
    plots: Path | None = None,
    progress: bool = True,
) -> Report:
    """Score every file at every input rate; unreadable or silent files are skipped with a note."""
    from tqdm import tqdm

    for rate in rates:
        if not 0 < rate / 2 < min(MAX_HZ, sample_rate / 2):
            raise ValueError(
                f"--rates: {rate} Hz leaves no missing band below {MAX_HZ} Hz at {sample_rate} Hz"
            )
    if not files:
        raise ValueError("no audio files to evaluate")
    visqol, note = visqol_scorer() if use_visqol else (None, "ViSQOL skipped (disabled)")
    report = Report(sample_rate, list(rates), notes=[note])
    skipped, plotted = 0, set()
    for i, path in enumerate(tqdm(files, desc="evaluate", disable=not progress)):
        try:
            ref = load_reference(path, sample_rate, max_seconds)
        except (sf.LibsndfileError, RuntimeError, ValueError):
            skipped += 1
            continue
        for rate in rates:
            try:
                clip, signals = evaluate_clip(
                    ref, sample_rate, rate, run_model, visqol, seed=i, name=str(path)
                )
            except ValueError:  # silent or too short to score
                skipped += 1
                break
            report.clips.append(clip)
            if plots is not None and rate not in plotted:  # the first scored file at each rate
                plotted.add(rate)
                save_spectrograms(
                    signals, sample_rate, plots / f"{rate}_{path.stem}.png", f"{path.name}, {rate} Hz"
                )
    if skipped:
        report.notes.append(f"{skipped} file(s) skipped: unreadable, silent or too short")
    if visqol is not None:
        with_visqol = sum("visqol" in c.metrics["baseline"] for c in report.clips)
        report.notes.append(
            f"ViSQOL on {with_visqol} of {len(report.clips)} clip-rate pairs (the rest are too short for it)"
        )
    if not report.clips:
        raise ValueError("no file could be scored")
    return report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m models.evaluate",
        description="LSD, LSD-HF, SNR (and ViSQOL) of a generator beside the soxr baseline and noisefill. "
        "Each reference is cut to an input rate with soxr (VHQ), the model runs through the live "
        "streaming path in file mode, and every system is scored against the reference.",
    )
    p.add_argument("--model", help="preset name or .safetensors path; leave out to score only the references")
    p.add_argument(
        "--untrained", action="store_true", help="use the randomly initialised preset (smoke tests)"
    )
    p.add_argument(
        "--data", required=True, type=Path, help="prepared folder (manifest.json) or any audio folder"
    )
    p.add_argument("--split", default="test", help="manifest split to score (default: test)")
    p.add_argument("--rates", type=int, nargs="+", help="input rates (default: the model family's list)")
    p.add_argument("--sample-rate", type=int, help="target rate without a model (default 48000)")
    p.add_argument("--max-files", type=int, help="score only the first N files (after --every)")
    p.add_argument(
        "--every",
        type=int,
        default=1,
        metavar="N",
        help="score every Nth file of the split in name order (quick calibration sweeps over a large set)",
    )
    p.add_argument("--max-seconds", type=float, help="cut every file to this length")
    p.add_argument("--backend", default="torch", help="processor backend: torch, onnx, triton, auto")
    p.add_argument(
        "--block-seconds",
        type=float,
        default=1.0,
        help="model block length (streaming == offline, so this only changes speed; 0: the live ~10 ms)",
    )
    p.add_argument(
        "--band-gain-db",
        type=float,
        help="score the model with this level of the new band (dB) instead of its config's (calibration)",
    )
    p.add_argument(
        "--band-level-follow",
        type=float,
        help="score the model with this share (0-1) of the new band's level taken from the input's top band "
        "instead of its config's (calibration; see realtime/band_merge.py)",
    )
    p.add_argument("--no-visqol", action="store_true", help="skip ViSQOL even when installed")
    p.add_argument("--json", type=Path, help="write the per-rate table and per-clip values here")
    p.add_argument("--plots", type=Path, help="write spectrogram PNGs (first scored file, every rate) here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.every < 1:
            raise ValueError(f"--every must be >= 1, got {args.every}")
        run_model, sample_rate, family = None, args.sample_rate or 48000, None
        if args.model:
            from .registry import family_of, load_model, with_band_level

            model = with_band_level(
                load_model(args.model, pretrained=not args.untrained),
                args.band_gain_db,
                args.band_level_follow,
            )
            sample_rate = int(model.sample_rate)
            family = family_of(model)
            run_model = model_runner(model, args.backend, args.block_seconds or None)
        rates = args.rates or DEFAULT_RATES.get(family or "", ())
        if not rates:
            raise ValueError("--rates is required when no model family gives a default list")
        files = list_files(args.data, args.split)[:: args.every][: args.max_files]
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            report = evaluate(
                files, sample_rate, rates, run_model, not args.no_visqol, args.max_seconds, args.plots
            )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.format())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "model": args.model,
            "untrained": args.untrained,
            "data": str(args.data),
            **report.to_json(),
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
