"""`python -m models.evaluate`: bandwidth-extension metrics, the two references, and the model beside them.

The metrics are defined once in `models.metrics` (see the project's DATA notes) and re-exported here,
where training and the tests import them from: LSD, LSD-HF, SNR-LB (the given band), level bias of the
new band (overall and per third-octave band), full-band SNR (informational) and ViSQOL (audio mode,
48 kHz) when the optional `visqol` package (visqol-python) is installed.

References scored beside the model: the **baseline** (the low-resolution input resampled to the target
rate with soxr: no new band) and **noisefill** (random-phase noise in the missing band at a level that
continues the input's top half-octave with a 1/f^2 slope, see `noisefill`). A model is judged against
noisefill, so each model row also shows its LSD-HF as a share of noisefill's.

Results are reported per source as well as overall (a reader/language, a soundtrack package: see
`entry_source`), since a mean over a few sources can hide one that fails. Settings are chosen on
`--split valid`, never on the reported split.

The model runs through the live streaming path in file mode (`models.dsp.block_processor` driven by
`models.dsp.offline`, the code behind `python -m realtime --input/--output`): the low-resolution input
at its own rate goes
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
from typing import NamedTuple

import numpy as np
import soundfile as sf
import soxr

from .dsp.block_processor import BlockProcessor
from .dsp.blocking import default_block_size
from .metrics import (  # noqa: F401  (re-exported: training and tests import the metrics from here)
    BANDS_PER_OCTAVE,
    FLOOR,
    FRAME_RANGE_DB,
    HOP,
    MAX_HZ,
    N_FFT,
    SNR_LB_SHARE,
    _as_signal,
    _check_pair,
    active_frames,
    band_centres,
    band_mask,
    bin_frequencies,
    fit_length,
    istft,
    level_bias,
    level_bias_per_band,
    lowpass,
    lsd,
    lsd_hf,
    power_spectrogram,
    snr,
    snr_lb,
    spectral_scores,
    stft,
)
from .train.splits import MANIFEST, load_manifest, split_entries

NOISEFILL_LEVEL_TOP = (
    0.95  # the fit band stops short of the input's Nyquist, where its anti-alias filter rolls off
)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
DEFAULT_RATES = {
    "wave-u-mamba": (8000, 12000, 16000, 24000),
    "aeromamba": (11025, 22050),
    "mambawave": (8000, 12000, 16000, 24000),
}
SYSTEMS = ("baseline", "noisefill", "model")
METRICS = ("lsd", "lsd_hf", "snr_lb", "level_bias", "snr", "visqol")
HF_VS_NOISEFILL = "lsd_hf_vs_noisefill"  # model rows: LSD-HF / noisefill's LSD-HF (< 1: beats noisefill)
LEVEL_TARGET_DB = 3.0  # the shaded band of the level-bias plot


# ---- references -------------------------------------------------------------------------------------
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
    source: str = ""  # reader/language or soundtrack package: results are reported per source
    band_bias: dict[str, list[float]] = field(default_factory=dict)  # system -> dB per band (band_centres)


def _mean(values: list[float]) -> float:
    return float(np.mean(values))


@dataclass
class Report:
    sample_rate: int
    rates: list[int]
    clips: list[ClipResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def sources(self) -> list[str]:
        return sorted({c.source for c in self.clips})

    def _clips(self, rate: int, source: str | None) -> list[ClipResult]:
        return [c for c in self.clips if c.rate == rate and (source is None or c.source == source)]

    def table(self, source: str | None = None) -> dict[int, dict[str, dict[str, float]]]:
        """rate -> system -> metric -> mean over the clips (of `source`; None: all clips).

        Model rows also hold HF_VS_NOISEFILL: the model's mean LSD-HF over noisefill's, same clips."""
        out: dict[int, dict[str, dict[str, float]]] = {}
        for rate in self.rates:
            clips = self._clips(rate, source)
            if not clips:
                continue
            systems = {s for c in clips for s in c.metrics}
            out[rate] = {
                s: {
                    m: _mean([c.metrics[s][m] for c in clips if m in c.metrics[s]])
                    for m in METRICS
                    if any(m in c.metrics[s] for c in clips)
                }
                for s in SYSTEMS
                if s in systems
            }
            if "model" in out[rate] and "noisefill" in out[rate]:
                out[rate]["model"][HF_VS_NOISEFILL] = (
                    out[rate]["model"]["lsd_hf"] / out[rate]["noisefill"]["lsd_hf"]
                )
        return out

    def band_bias(self, source: str | None = None) -> dict[int, dict[str, list[float]]]:
        """rate -> system -> level bias (dB) per band of `band_centres(sample_rate, rate)`, mean over clips."""
        out: dict[int, dict[str, list[float]]] = {}
        for rate in self.rates:
            clips = [c for c in self._clips(rate, source) if c.band_bias]
            if clips:
                systems = [s for s in SYSTEMS if any(s in c.band_bias for c in clips)]
                out[rate] = {
                    s: np.mean([c.band_bias[s] for c in clips if s in c.band_bias], axis=0).tolist()
                    for s in systems
                }
        return out

    def lags(self) -> dict[int, list[int]]:
        return {
            rate: sorted({c.lag for c in self.clips if c.rate == rate and c.lag is not None})
            for rate in self.rates
        }

    def to_json(self) -> dict:
        bias = {source: self.band_bias(source) for source in self.sources()}
        return {
            "sample_rate": self.sample_rate,
            "rates": self.rates,
            "table": {str(r): v for r, v in self.table().items()},
            "sources": {
                source: {
                    "clips": {str(r): len(self._clips(r, source)) for r in self.rates},
                    "table": {str(r): v for r, v in self.table(source).items()},
                }
                for source in self.sources()
            },
            "band_bias": {
                str(rate): {
                    "centres_hz": band_centres(self.sample_rate, rate).tolist(),
                    "all": systems,
                    "sources": {source: bias[source][rate] for source in bias if rate in bias[source]},
                }
                for rate, systems in self.band_bias().items()
            },
            "lags": {str(r): v for r, v in self.lags().items()},
            "clips": [c.__dict__ for c in self.clips],
            "notes": self.notes,
        }

    @staticmethod
    def _format_table(table: dict[int, dict[str, dict[str, float]]]) -> list[str]:
        names = {
            "lsd": "LSD",
            "lsd_hf": "LSD-HF",
            "snr_lb": "SNR-LB",
            "level_bias": "bias dB",
            "snr": "SNR dB",
            "visqol": "ViSQOL",
            HF_VS_NOISEFILL: "HF/NF",
        }
        head = f"{'rate':>6}  {'system':<10}" + "".join(f"{m:>9}" for m in names.values())
        lines = [head, "-" * len(head)]
        for rate, systems in table.items():
            for i, (name, vals) in enumerate(systems.items()):
                cells = "".join(f"{vals[m]:9.3f}" if m in vals else f"{'-':>9}" for m in names)
                lines.append(f"{rate if i == 0 else '':>6}  {name:<10}{cells}")
        return lines

    def format(self) -> str:
        """The overall table (mean over all clips), lag warnings, then one table per source."""
        sources = self.sources()
        lines = [f"all sources ({len(sources)}), mean over clips:", *self._format_table(self.table())]
        for rate, lags in self.lags().items():
            if any(lags):
                lines.append(f"WARNING: model output misaligned at {rate} Hz: lags {lags} samples")
        if len(sources) > 1:  # with one source its table is the overall one
            for source in sources:
                counts = ", ".join(f"{len(self._clips(r, source))} at {r} Hz" for r in self.rates)
                lines += ["", f"source {source} ({counts}):", *self._format_table(self.table(source))]
        else:
            lines.append(f"one source: {sources[0]!r}" if sources else "no clips")
        return "\n".join(lines + self.notes)


def _score(
    reference: np.ndarray,
    estimate: np.ndarray,
    sample_rate: int,
    input_rate: int,
    visqol: Callable[[np.ndarray, np.ndarray, int], float] | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    scalars, (_, bands) = spectral_scores(reference, estimate, sample_rate, input_rate)
    out = {
        "lsd": scalars["lsd"],
        "lsd_hf": scalars["lsd_hf"],
        "snr_lb": snr_lb(reference, estimate, sample_rate, input_rate),
        "level_bias": scalars["level_bias"],
        "snr": snr(reference, estimate),
    }
    if visqol is not None:
        try:
            out["visqol"] = visqol(reference, estimate, sample_rate)
        except ValueError:  # a clip shorter than ViSQOL's patches: scored without it
            pass
    return out, bands


def score(
    reference: np.ndarray,
    estimate: np.ndarray,
    sample_rate: int,
    input_rate: int,
    visqol: Callable[[np.ndarray, np.ndarray, int], float] | None = None,
) -> dict[str, float]:
    """All metrics of one system on one clip (METRICS; visqol only when a scorer is given)."""
    return _score(reference, estimate, sample_rate, input_rate, visqol)[0]


ModelRunner = Callable[[np.ndarray, int], np.ndarray]


def model_runner(model: object, device: str = "cpu", block_seconds: float | None = None) -> ModelRunner:
    """(lowres, input_rate) -> output at the model's rate, through the live path in file mode.

    `device`: "cpu" (a traced graph for the live block length) or "cuda" (the Triton scan).
    `block_seconds` sets the model block (rounded to its block_multiple; None: the live default of
    about 10 ms). Streaming equals offline for any block length. One processor per input rate is
    built once and reset before every clip: building one (a model copy, a trace, a warm-up step)
    costs more than scoring a short clip.
    """
    from .stepper import TorchStepper

    stepper = TorchStepper(model, device)
    block = (
        None
        if block_seconds is None
        else default_block_size(stepper.sample_rate, stepper.block_multiple, block_seconds)
    )
    processors: dict[int, BlockProcessor] = {}

    def run(lowres: np.ndarray, input_rate: int) -> np.ndarray:
        proc = processors.get(input_rate)
        if proc is None:
            proc = processors[input_rate] = BlockProcessor(stepper, input_rate, block_size=block)
        proc.reset()
        return proc.process_file_array(lowres.astype(np.float32)).astype(np.float64)

    return run


def evaluate_clip(
    reference: np.ndarray,
    sample_rate: int,
    input_rate: int,
    run_model: ModelRunner | None = None,
    visqol: Callable[[np.ndarray, np.ndarray, int], float] | None = None,
    seed: int = 0,
    name: str = "",
    source: str = "",
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
    clip = ClipResult(name, input_rate, {}, lag, source)
    for system in SYSTEMS:
        if system in signals:
            metrics, bands = _score(ref, signals[system], sample_rate, input_rate, visqol)
            clip.metrics[system], clip.band_bias[system] = metrics, bands.tolist()
    return clip, signals


def load_reference(path: Path, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """A file as a mono float64 signal at `sample_rate` (soxr VHQ), cut to `max_seconds`."""
    x, rate = sf.read(str(path), dtype="float64", always_2d=True)
    x = x.mean(axis=1)
    if rate != sample_rate:
        x = soxr.resample(x, rate, sample_rate, quality="VHQ")
    if max_seconds is not None:
        x = x[: int(max_seconds * sample_rate)]
    return x


class EvalFile(NamedTuple):
    path: Path
    source: str


def entry_source(entry: dict) -> str:
    """The source a manifest entry is reported under: its speaker (speech: the reader/language), or for
    a track-named speaker ("package/path/track", Debian music) the package: the folder below the split
    folder in the entry's path, so music groups by soundtrack rather than one row per track."""
    speaker = str(entry.get("speaker", ""))
    if speaker and "/" not in speaker:
        return speaker
    parts = Path(entry.get("path", "")).parts
    if len(parts) > 2:
        return parts[1]
    return speaker.split("/")[0] or "unknown"


def list_files(data: Path, split: str | None = None, hold_out: Sequence[str] = ()) -> list[EvalFile]:
    """Evaluation files and their sources.

    A prepared folder (manifest.json): the entries of `split` (default "test"; "valid", "held_out" and
    `hold_out` through models.train.splits.split_entries), each under `entry_source`. Any other folder:
    every audio file below `data`, its source the parent folder's name; there is no split to choose."""
    manifest = data / MANIFEST
    if manifest.exists():
        entries = split_entries(load_manifest(data), split or "test", tuple(hold_out))
        if not entries:
            raise ValueError(f"{manifest}: split {split or 'test'!r} holds no files")
        return [EvalFile(data / e["path"], entry_source(e)) for e in entries]
    if not data.is_dir():
        raise ValueError(f"--data must be a folder of audio files, got {data}")
    if split is not None or hold_out:  # silently scoring everything would pass for the asked split
        raise ValueError(f"--split/--hold-out need a prepared folder with manifest.json; {data} has none")
    root_name = data.resolve().name
    return [
        EvalFile(p, p.parent.name if p.parent != data else root_name)
        for p in sorted(data.rglob("*"))
        if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
    ]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_spectrograms(signals: dict[str, np.ndarray], sample_rate: int, path: Path, title: str) -> None:
    """One PNG: log-power spectrograms of the reference, the input (baseline), noisefill and the model."""
    plt = _pyplot()
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


def save_band_bias(report: Report, folder: Path) -> list[Path]:
    """One PNG per rate, band_level_RATE.png: level bias (dB) of the new band per third-octave band,
    a line per system (noisefill dashed, model solid) per source. The baseline is left out: its empty
    band sits tens of dB down and would flatten the others."""
    plt = _pyplot()
    per_source = {source: report.band_bias(source) for source in report.sources()}
    written = []
    for rate in report.rates:
        lines = {s: b[rate] for s, b in per_source.items() if rate in b}
        if not lines:
            continue
        centres = band_centres(report.sample_rate, rate) / 1000
        fig, ax = plt.subplots(figsize=(8, 4.5))
        ax.axhspan(-LEVEL_TARGET_DB, LEVEL_TARGET_DB, color="tab:green", alpha=0.12, label="±3 dB")
        ax.axhline(0.0, color="black", linewidth=0.8)
        for i, (source, systems) in enumerate(lines.items()):
            colour = f"C{i % 10}"
            for system, style in (("noisefill", "--"), ("model", "-")):
                if system in systems:
                    ax.plot(
                        centres, systems[system], style, color=colour, marker=".", label=f"{source} {system}"
                    )
        ax.set_xscale("log")
        ax.set_xticks(centres, [f"{c:.3g}" for c in centres], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("band centre (kHz)")
        ax.set_ylabel("level bias (dB; < 0: too quiet)")
        ax.set_title(f"new band level vs reference, input {rate} Hz -> {report.sample_rate} Hz", fontsize=10)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"band_level_{rate}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def evaluate(
    files: Sequence[Path | EvalFile],
    sample_rate: int,
    rates: Sequence[int],
    run_model: ModelRunner | None = None,
    use_visqol: bool = True,
    max_seconds: float | None = None,
    plots: Path | None = None,
    progress: bool = True,
) -> Report:
    """Score every file at every input rate; unreadable or silent files are skipped with a note.

    A bare Path is reported under its parent folder's name as its source."""
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
    for i, item in enumerate(tqdm(files, desc="evaluate", disable=not progress)):
        path, source = item if isinstance(item, EvalFile) else (Path(item), Path(item).parent.name)
        try:
            ref = load_reference(path, sample_rate, max_seconds)
        except (sf.LibsndfileError, RuntimeError, ValueError):
            skipped += 1
            continue
        for rate in rates:
            try:
                clip, signals = evaluate_clip(
                    ref, sample_rate, rate, run_model, visqol, seed=i, name=str(path), source=source
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
    if plots is not None:
        save_band_bias(report, plots)
    return report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m models.evaluate",
        description="LSD, LSD-HF, SNR-LB, level bias, SNR (and ViSQOL) of a generator beside the soxr "
        "baseline and noisefill, overall and per source. Each reference is cut to an input rate with soxr "
        "(VHQ), the model runs through the live streaming path in file mode, and every system is scored "
        "against the reference. Tune on --split valid; report --split test.",
    )
    p.add_argument("--model", help="preset name or .safetensors path; leave out to score only the references")
    p.add_argument(
        "--untrained", action="store_true", help="use the randomly initialised preset (smoke tests)"
    )
    p.add_argument(
        "--data", required=True, type=Path, help="prepared folder (manifest.json) or any audio folder"
    )
    p.add_argument(
        "--split",
        help="split of a prepared folder: test (default), valid (for choosing settings), train, held_out",
    )
    p.add_argument(
        "--hold-out",
        nargs="+",
        default=[],
        metavar="SPEAKER",
        help="speakers a leave-one-source-out model never saw (with --split held_out, e.g. --hold-out fr)",
    )
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
    p.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "cuda"),
        help="where the model runs: cpu (torch, traced) or cuda (the Triton scan); the ONNX graph of a "
        "preset matches the torch model to the export tolerance (tests/test_runtime_no_torch.py)",
    )
    p.add_argument(
        "--block-seconds",
        type=float,
        default=0.0,
        help="model block length (streaming == offline, so this only changes speed; 0, the default: the "
        "live ~10 ms, traced on the CPU)",
    )
    p.add_argument("--no-visqol", action="store_true", help="skip ViSQOL even when installed")
    p.add_argument("--json", type=Path, help="write the tables (overall, per source), band biases and clips")
    p.add_argument(
        "--plots",
        type=Path,
        help="write PNGs here: spectrograms (first scored file, every rate) and the new band's level per band",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.every < 1:
            raise ValueError(f"--every must be >= 1, got {args.every}")
        run_model, sample_rate, family = None, args.sample_rate or 48000, None
        if args.model:
            from .registry import family_of, load_model

            model = load_model(args.model, pretrained=not args.untrained)
            sample_rate = int(model.sample_rate)
            family = family_of(model)
            run_model = model_runner(model, args.device, args.block_seconds or None)
        rates = args.rates or DEFAULT_RATES.get(family or "", ())
        if not rates:
            raise ValueError("--rates is required when no model family gives a default list")
        files = list_files(args.data, args.split, args.hold_out)[:: args.every][: args.max_files]
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
            "split": args.split or ("test" if (args.data / "manifest.json").exists() else None),
            "hold_out": args.hold_out,
            **report.to_json(),
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
