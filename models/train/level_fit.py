"""Fit the band-level rule's shape and offset (models/band_level.py) on a validation split.

The rule continues the input's top band with a typical spectrum's shape S(f). The fit takes S from the
data: per source (speaker / soundtrack), the mean over the active frames of every validation clip of
10 log10 P(f) per STFT bin (the evaluator's spectra), averaged over sources so that the largest source
does not decide, then averaged in dB over quarter-octave bands. The offset makes the rule's level bias
(the evaluator's, against each source's own spectrum, for noise at the rule's level) zero on average
over the sources and the training input rates. Only the validation split is read: the reported test
split never chooses a setting.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..dsp.level import shape_db
from ..evaluate import active_frames, bin_frequencies, entry_source, load_reference, power_spectrogram
from .splits import load_manifest, split_entries

SHAPE_LOW_HZ = 1000.0  # lowest shape point: below every top band the presets can meet
SHAPE_POINTS_PER_OCTAVE = 4
SCORED_HIGH_HZ = 19500.0  # the data's codec cut: nothing above is scored or fitted (DATA.md)
NOISE_LOG_MEAN_DB = 2.5  # a noise bin's mean 10 log10 power lies this far below its density's


@dataclass
class LevelFit:
    shape: tuple[tuple[float, float], ...]  # (Hz, dB)
    offset_db: float
    # per input rate, per source: the fitted rule's level bias (dB) over the missing band and per band
    bias: dict[int, dict[str, tuple[float, list[float]]]]
    band_edges_hz: dict[int, list[float]]
    clips: dict[str, int]


def _top_band(bins: np.ndarray, edge_hz: float, crossover_ratio: float) -> np.ndarray:
    return (bins >= edge_hz / math.sqrt(2)) & (bins <= crossover_ratio * edge_hz)


def _missing_band(bins: np.ndarray, edge_hz: float) -> np.ndarray:
    return (bins >= edge_hz) & (bins <= SCORED_HIGH_HZ)


def fit_level(
    data: Path,
    input_rates: Sequence[int],
    crossover_ratio: float,
    max_seconds: float | None = None,
    hold_out: Sequence[str] = (),
) -> LevelFit:
    """Fit the rule on `data`'s validation split (models.train.splits.split_entries) for a model whose
    inputs arrive at `input_rates` (band edge = rate / 2, top band up to `crossover_ratio` x edge)."""
    meta = load_manifest(data)
    rate = int(meta["sample_rate"])
    spectra: dict[str, list[np.ndarray]] = {}
    for entry in split_entries(meta, "valid", tuple(hold_out)):
        try:
            x = load_reference(data / entry["path"], rate, max_seconds)
        except (OSError, RuntimeError, ValueError):
            continue  # an unreadable file: the trainer skips it too
        power = power_spectrogram(x)
        frames = power[active_frames(power, rate)]
        if len(frames):
            spectra.setdefault(entry_source(entry), []).append(frames)
    if not spectra:
        raise ValueError(f"{data}: the validation split holds no readable clips")
    bins = bin_frequencies(rate)
    log_power = [
        np.mean([(10 * np.log10(np.maximum(p, 1e-12))).mean(0) for p in clips], 0)
        for clips in spectra.values()
    ]
    mean_db = np.mean(log_power, 0) + NOISE_LOG_MEAN_DB
    half = 2 ** (0.5 / SHAPE_POINTS_PER_OCTAVE)  # a point stands for the bins within half a step
    centres = SHAPE_LOW_HZ * 2.0 ** (np.arange(64) / SHAPE_POINTS_PER_OCTAVE)
    centres = centres[centres <= SCORED_HIGH_HZ]
    scored = bins <= SCORED_HIGH_HZ
    levels = [mean_db[scored & (bins >= c / half) & (bins < c * half)].mean() for c in centres]
    top_db = max(levels)
    shape = tuple((round(float(c), 1), round(float(v - top_db), 2)) for c, v in zip(centres, levels))

    def rule_bias(edge: float) -> dict[str, np.ndarray]:
        """Per source and missing-band bin: noise at the rule's level (offset 0) minus the source's
        clips, mean over frames and clips."""
        top, miss = _top_band(bins, edge, crossover_ratio), _missing_band(bins, edge)
        top_db = shape_db(shape, bins[top])
        rule = shape_db(shape, bins[miss]) - 10 * np.log10(np.mean(10 ** (top_db / 10)))  # re the top band

        def clip_bias(frames: np.ndarray) -> np.ndarray:
            top_power = frames[:, top].mean(1)
            ok = top_power > 0
            need = 10 * np.log10(np.maximum(frames[ok][:, miss], 1e-8)) - 10 * np.log10(top_power[ok, None])
            return rule - NOISE_LOG_MEAN_DB - need.mean(0)

        return {name: np.mean([clip_bias(p) for p in clips], 0) for name, clips in spectra.items()}

    per_rate = {r: rule_bias(r / 2) for r in input_rates}
    offset = -float(np.mean([b.mean() for by_source in per_rate.values() for b in by_source.values()]))
    bias: dict[int, dict[str, tuple[float, list[float]]]] = {}
    edges_hz: dict[int, list[float]] = {}
    for r, by_source in per_rate.items():
        miss_hz = bins[_missing_band(bins, r / 2)]
        edges = np.geomspace(r / 2, SCORED_HIGH_HZ, 7)
        edges_hz[r] = [float(e) for e in edges]
        bias[r] = {}
        for name, b in by_source.items():
            b = b + offset
            bands = [
                float(b[(miss_hz >= lo) & (miss_hz < hi)].mean()) for lo, hi in zip(edges[:-1], edges[1:])
            ]
            bias[r][name] = (float(b.mean()), bands)
    return LevelFit(shape, round(offset, 2), bias, edges_hz, {k: len(v) for k, v in spectra.items()})


def report(fit: LevelFit) -> str:
    """The fit as text: the config fields to paste into a preset, then the validation bias table."""
    lines = [
        f"clips per source: {', '.join(f'{k} {v}' for k, v in sorted(fit.clips.items()))}",
        "level_shape=(" + ", ".join(f"({f:g}, {db:g})" for f, db in fit.shape) + "),",
        f"level_offset_db={fit.offset_db:g},",
        "",
        "validation level bias of the fitted rule (noise at its level; dB; per sixth of the missing band)",
    ]
    for r, by_source in fit.bias.items():
        lines.append(
            f"input {r} Hz, bands from {' '.join(f'{e / 1000:.1f}' for e in fit.band_edges_hz[r])} kHz"
        )
        for name, (overall, bands) in sorted(by_source.items()):
            lines.append(f"  {name:24s} {overall:+6.1f}   [{' '.join(f'{b:+5.1f}' for b in bands)}]")
    return "\n".join(lines)


def to_json(fit: LevelFit) -> str:
    return json.dumps(
        {
            "level_shape": fit.shape,
            "level_offset_db": fit.offset_db,
            "bias": {str(r): v for r, v in fit.bias.items()},
            "band_edges_hz": {str(r): v for r, v in fit.band_edges_hz.items()},
            "clips": fit.clips,
        },
        indent=1,
    )
