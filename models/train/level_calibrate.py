"""Re-centre a trained generator's level offset on the validation split (`calibrate-level`).

`fit-level` fits the rule for noise at the rule's own level. A trained correction then moves the new
band on average (the 0.9 speech correction by +1.9 / +0.8 dB at 16 / 8 kHz input), so the offset is
calibrated for the weights: the generator runs through the evaluator (file mode, no ViSQOL) on the
validation split, its level bias is averaged over the sources at each input rate (each source weighted
alike, as the fit does) and then over the rates, and `level_offset_db` moves to cancel it. The test
split is never read.

The offset scales the rule's excitation, which carries the whole new band only where the generator
owns no other content there. So each move is scored again: the measured response (dB of bias per dB
of offset) sets the next move, and a generator whose band barely follows the offset is refused, since
centring it would mean silencing the excitation rather than correcting its level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..evaluate import evaluate, list_files, model_runner
from ..registry import with_config
from ..streaming import StreamingModule

TOLERANCE_DB = 0.5  # a mean bias this close to zero is centred
MIN_RESPONSE = 0.5  # dB of bias per dB of offset below which the rule does not own the band


@dataclass
class Calibration:
    offset_before_db: float
    offset_after_db: float
    source_mean_bias_db: dict[int, float]  # per input rate, before: the mean over sources
    sources: int
    clip_rate_pairs: int  # clips scored times input rates
    passes: list[tuple[float, float]] = field(default_factory=list)  # (offset, mean bias) per scoring
    response: float | None = None  # measured dB of bias per dB of offset (None: scored once)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["source_mean_bias_db"] = {str(r): round(b, 3) for r, b in self.source_mean_bias_db.items()}
        out["passes"] = [[round(o, 2), round(b, 3)] for o, b in self.passes]
        out["response"] = None if self.response is None else round(self.response, 3)
        return out


class LevelNotOwned(ValueError):
    """The new band barely follows the level offset: the generator's own content carries it."""


def response_of(passes: Sequence[tuple[float, float]]) -> float | None:
    """dB of mean bias per dB of offset between the last two (offset, mean bias) passes."""
    if len(passes) < 2:
        return None
    (o0, b0), (o1, b1) = passes[-2], passes[-1]
    return (b1 - b0) / (o1 - o0) if o1 != o0 else 0.0


def next_offset(passes: Sequence[tuple[float, float]]) -> float:
    """The offset to score next from the (offset, mean bias) scored so far.

    The first move assumes the band follows the offset dB for dB; later ones use the response between
    the last two passes. Raises LevelNotOwned when that response is below MIN_RESPONSE."""
    offset, bias = passes[-1]
    response = response_of(passes)
    if response is None:
        return offset - bias
    if response < MIN_RESPONSE:
        before, bias_before = passes[-2]
        raise LevelNotOwned(
            f"moving level_offset_db from {before:g} to {offset:g} dB moved the mean bias only from "
            f"{bias_before:+.2f} to {bias:+.2f} dB ({response:.2f} dB per dB): the generator's own "
            "content carries most of the new band, so the rule's offset cannot centre it"
        )
    return offset - bias / response


def calibrate_level(
    model: StreamingModule,
    data: Path,
    rates: Sequence[int],
    hold_out: Sequence[str] = (),
    every: int = 1,
    max_seconds: float | None = None,
    progress: bool = True,
    max_passes: int = 3,
) -> tuple[StreamingModule, Calibration]:
    """(`model` with its level offset re-centred on `data`'s validation split, what was measured).

    Scores at most `max_passes` offsets (1: one move, unverified) and stops once the mean bias is
    within TOLERANCE_DB. Raises LevelNotOwned when the band does not follow the offset."""
    offset = getattr(model.config, "level_offset_db", None)
    if offset is None or not getattr(model.config, "noise_bands", 0):
        raise ValueError("this generator has no level rule (no noise excitation) to calibrate")
    if every < 1 or max_passes < 1:
        raise ValueError(f"every and max_passes must be >= 1, got {every} and {max_passes}")
    files = list_files(data, "valid", hold_out)[::every]

    def score(candidate: StreamingModule) -> tuple[dict[int, float], int, int]:
        """(mean bias over the sources per rate, sources, clip-rate pairs) of `candidate`."""
        report = evaluate(
            files,
            int(model.sample_rate),
            rates,
            model_runner(candidate),
            False,
            max_seconds,
            progress=progress,
        )
        tables = [report.table(s) for s in report.sources()]  # each: rate -> system -> metric, means
        bias = {r: float(np.mean([t[r]["model"]["level_bias"] for t in tables if r in t])) for r in rates}
        return bias, len(tables), len(report.clips)

    def mean_over_rates(bias: dict[int, float]) -> float:
        return float(np.mean(list(bias.values())))

    first, sources, pairs = score(model)
    calibration = Calibration(float(offset), float(offset), first, sources, pairs)
    calibration.passes.append((float(offset), mean_over_rates(first)))
    current = model
    while abs(calibration.passes[-1][1]) > TOLERANCE_DB:
        calibration.offset_after_db = round(next_offset(calibration.passes), 2)
        current = with_config(model, level_offset_db=calibration.offset_after_db)
        if len(calibration.passes) == max_passes:
            break  # the last move is kept unverified
        calibration.passes.append((calibration.offset_after_db, mean_over_rates(score(current)[0])))
    calibration.response = response_of(calibration.passes)
    return current, calibration


def report(calibration: Calibration) -> str:
    rates = ", ".join(f"{b:+.2f} dB at {r} Hz" for r, b in calibration.source_mean_bias_db.items())
    scored = "; ".join(f"offset {o:g}: {b:+.2f} dB" for o, b in calibration.passes)
    response = "" if calibration.response is None else f", response {calibration.response:.2f} dB per dB"
    return (
        f"validation, {calibration.sources} sources alike ({calibration.clip_rate_pairs} clip-rate pairs): "
        f"mean level bias {rates}\n"
        f"scored ({scored}){response}\n"
        f"level_offset_db {calibration.offset_before_db:g} -> {calibration.offset_after_db:g}"
    )
