"""The live processor: a generator (torch model or exported graph) behind the host's block processor.

The signal chain itself (resamplers, model blocks, band merge, the dry delay line, the output FIFO)
is `models.dsp.chain.StreamChain`; its host front end (block layouts, the NaN/Inf guard, stats,
bypass, the dry path) is `models.dsp.block_processor.BlockProcessor`; the offline driver of file
mode is `models.dsp.offline`. This module only picks the backend (`realtime.steppers`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.dsp.block_processor import BlockProcessor, DryPath, ProcessorStats
from models.dsp.resample import SUPPORTED_RATES

from .steppers import BACKENDS, make_stepper


class Processor(BlockProcessor):
    """Runs a streaming generator live on host blocks of any size, with a fixed, known latency.

    Args:
        model: a torch `StreamingModule` generator (with `sample_rate`, `block_multiple`, `latency`)
            or a numpy stepper with the same contract (e.g. `export.runtime.OnnxStreamer`).
        backend: "torch" | "onnx" | "triton" | "auto" (see `realtime.steppers.make_stepper`).
        input_rate, output_rate, channels, block_size, dry_wet, input_cutoff_hz, new_band_db: see
            `BlockProcessor`
            (latency, guards, bypass and the dry path are documented there).
    """

    def __init__(
        self,
        model: Any,
        input_rate: int,
        output_rate: int | None = None,
        backend: str = "auto",
        channels: int = 1,
        block_size: int | None = None,
        dry_wet: float = 1.0,
        input_cutoff_hz: float | None = None,
        new_band_db: float = 0.0,
    ) -> None:
        stepper, self.backend = make_stepper(model, backend)
        super().__init__(
            stepper, input_rate, output_rate, channels, block_size, dry_wet, input_cutoff_hz, new_band_db
        )


def process_offline(
    model: Any,
    x: np.ndarray,
    input_rate: int,
    output_rate: int | None = None,
    backend: str = "auto",
    block_size: int | None = None,
    dry_wet: float = 1.0,
) -> np.ndarray:
    """`Processor(...).process_file_array(x)` for a (samples,) or (samples, channels) signal."""
    channels = x.shape[1] if isinstance(x, np.ndarray) and x.ndim == 2 else 1
    proc = Processor(model, input_rate, output_rate, backend, channels, block_size, dry_wet)
    return proc.process_file_array(x)


__all__ = [
    "BACKENDS",
    "SUPPORTED_RATES",
    "DryPath",
    "Processor",
    "ProcessorStats",
    "make_stepper",
    "process_offline",
]
