"""Re-centre a trained generator's level offset on the validation split (`calibrate-level`).

`fit-level` fits the rule for noise at the rule's own level. A trained correction then moves the new
band on average (the 0.9 speech correction by +1.9 / +0.8 dB at 16 / 8 kHz input), so the offset is
calibrated for the weights: the generator runs through the evaluator (file mode, no ViSQOL) on the
validation split, its level bias is averaged over the sources at each input rate (each source weighted
alike, as the fit does), and `level_offset_db` moves by minus the mean over the rates. The offset
scales the whole new band's power, so the sources' mean bias is then centred. The test split is never
read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..evaluate import evaluate, list_files, model_runner
from ..registry import with_config
from ..streaming import StreamingModule


@dataclass
class Calibration:
    offset_before_db: float
    offset_after_db: float
    source_mean_bias_db: dict[int, float]  # per input rate, before: the mean over sources
    sources: int
    clip_rate_pairs: int  # clips scored times input rates

    def to_dict(self) -> dict:
        out = asdict(self)
        out["source_mean_bias_db"] = {str(r): round(b, 3) for r, b in self.source_mean_bias_db.items()}
        return out


def calibrate_level(
    model: StreamingModule,
    data: Path,
    rates: Sequence[int],
    hold_out: Sequence[str] = (),
    every: int = 1,
    max_seconds: float | None = None,
    progress: bool = True,
) -> tuple[StreamingModule, Calibration]:
    """(`model` with its level offset re-centred on `data`'s validation split, what was measured)."""
    offset = getattr(model.config, "level_offset_db", None)
    if offset is None or not getattr(model.config, "noise_bands", 0):
        raise ValueError("this generator has no level rule (no noise excitation) to calibrate")
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    files = list_files(data, "valid", hold_out)[::every]
    report = evaluate(
        files, int(model.sample_rate), rates, model_runner(model), False, max_seconds, progress=progress
    )
    sources = report.sources()
    tables = [report.table(s) for s in sources]  # each: rate -> system -> metric, the source's means
    bias = {
        rate: float(np.mean([t[rate]["model"]["level_bias"] for t in tables if rate in t])) for rate in rates
    }
    after = round(float(offset) - float(np.mean(list(bias.values()))), 2)
    calibration = Calibration(float(offset), after, bias, len(sources), len(report.clips))
    return with_config(model, level_offset_db=after), calibration


def report(calibration: Calibration) -> str:
    rates = ", ".join(f"{b:+.2f} dB at {r} Hz" for r, b in calibration.source_mean_bias_db.items())
    return (
        f"validation, {calibration.sources} sources alike ({calibration.clip_rate_pairs} clip-rate pairs): "
        f"mean level bias {rates}\n"
        f"level_offset_db {calibration.offset_before_db:g} -> {calibration.offset_after_db:g}"
    )
