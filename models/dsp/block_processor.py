"""The block processor: host blocks of any size and layout in, a fixed and known latency out.

A mutable front end around the pure `StreamChain` (models/dsp/chain.py) for hosts that call
`process(block)`: it checks the block's layout ((samples,) or (samples, channels)), replaces NaN/Inf
blocks by silence before anything sees them, counts what happened (`stats`) and holds the live
settings (`bypass`, `dry_wet`, `new_band_db`). `DryPath` is the same chain with the model left out,
for an engine that must play something when the model is late.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .blocking import default_block_size
from .chain import ChainState, Stepper, StreamChain
from .offline import process_array, process_stream
from .resample import check_rate


@dataclass
class ProcessorStats:
    blocks: int = 0  # host blocks accepted
    bad_blocks: int = 0  # host blocks holding NaN/Inf, replaced by silence
    state_resets: int = 0  # model steps whose output or state went non-finite
    model_steps: int = 0


class _HostBlocks:
    """Host side shared by the processor and its dry path: block checks, the NaN/Inf guard, stats."""

    _bypass: bool = False
    _dry_wet: float = 1.0

    def __init__(self, chain: StreamChain) -> None:
        self.chain = chain
        self.input_rate, self.output_rate, self.model_rate = (
            chain.input_rate,
            chain.output_rate,
            chain.model_rate,
        )
        self.channels, self.model_block, self.model_latency = (
            chain.channels,
            chain.model_block,
            chain.model_latency,
        )
        self.latency = chain.latency
        self.reset()

    def reset(self) -> None:
        """Back to a fresh stream (stats included); settings are kept."""
        self._state: ChainState = self.chain.init_state()
        self.stats = ProcessorStats()

    def output_length(self, n_in_total: int) -> int:
        """Output samples handed out after `n_in_total` input samples: floor(n * output/input rate)."""
        return self.chain.output_length(n_in_total)

    def check_block(self, block: Any) -> np.ndarray:
        """`block` as (samples, channels), or a ValueError naming the expected shape and dtype."""
        shape = "(samples,) or (samples, 1)" if self.channels == 1 else f"(samples, {self.channels})"
        if not isinstance(block, np.ndarray) or block.dtype not in (np.float32, np.float64):
            kind = getattr(block, "dtype", type(block).__name__)
            raise ValueError(f"block must be a float32 or float64 numpy array of shape {shape}, got {kind}")
        if block.ndim == 1 and self.channels == 1:
            block = block[:, None]
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise ValueError(f"block must have shape {shape}, got {block.shape}")
        return block

    def process(self, block: np.ndarray) -> np.ndarray:
        """One host block in, the output owed for it out (floor(total_in * ratio) in total), float32.

        Mono blocks may be (samples,) or (samples, 1) and come back in the same layout; multichannel
        blocks are (samples, channels). A block holding NaN/Inf is replaced by silence (counted).
        """
        x = self.check_block(block)
        self.stats.blocks += 1
        if np.isfinite(x).all():
            x = np.ascontiguousarray(x.T, dtype=np.float32)
        else:
            self.stats.bad_blocks += 1
            x = np.zeros((self.channels, x.shape[0]), np.float32)
        y, self._state = self.chain.step(x, self._state, self._bypass, self._dry_wet)
        self.stats.model_steps, self.stats.state_resets = self._state.model_steps, self._state.state_resets
        return y[0].copy() if block.ndim == 1 else np.ascontiguousarray(y.T)


class DryPath(_HostBlocks):
    """The processor's signal path with the model left out: resampled input, delayed to line up.

    Made by `BlockProcessor.dry_path()`. Fed the same host blocks, its `process()` returns the same
    number of samples per call as the processor's, with the same `latency`, and is bit-identical to the
    processor's output in bypass. It costs two resamplers and a delay line, no model.
    """

    _bypass = True


class BlockProcessor(_HostBlocks):
    """Runs a streaming generator on host blocks of any size, with a fixed, known latency.

    Args:
        stepper: the generator on the numpy step contract (`models.dsp.chain.Stepper`).
        input_rate: host input rate, one of `SUPPORTED_RATES`.
        output_rate: host output rate (one of `SUPPORTED_RATES`); default: the model's rate.
        channels: channels run as a batch through the model.
        block_size: model block length in model-rate samples; default ~10 ms rounded to the model's
            block_multiple, or the stepper's fixed block length.
        dry_wet: 1.0 = model output only, 0.0 = dry only; mixes at the model rate, time-aligned.
        input_cutoff_hz: where the band of an input at the model's own rate ends (a low-passed file);
            ignored for an input below the model's rate, whose band ends at its Nyquist frequency.
            With a band edge the output keeps the input below it and the new band's level follows
            the input's top band; without one (a same-rate input of unknown band) the generator runs
            alone and its noise excitation stays silent.
        new_band_db: a listener's trim of the new band's level, in dB from the fitted rule's (within
            +-24 dB; default 0). Voices differ above the band edge by several dB that the given band
            does not reveal; the trim moves the generator's band level (`models.dsp.level`), so it
            needs a band edge and a generator with a band level (the presets), and does nothing else.

    `latency` (output samples) = output-FIFO pre-fill (block buffering, at least model_block - 1)
    + both resamplers' delays + the model's latency + the band merge's delay: an impulse at input
    sample 0 comes out at output sample `latency` exactly, whatever the host block sizes.

    Guards: a host block holding NaN/Inf is replaced by silence before anything sees it
    (`stats.bad_blocks`); if a model step yields a non-finite output or state, the state goes back to
    its initial value (`stats.state_resets`) and a non-finite output block is replaced by the dry block.

    Dry path and overload fallback: the dry signal is the resampled input delayed by the model's
    latency (and the band merge's), so it lines up with the wet output sample for sample.
    `bypass = True` outputs it alone (the model is skipped; its state restarts when bypass is
    switched off) with the latency unchanged, so toggling never shifts time. For a live engine,
    `dry_path()` returns an independent `DryPath` (no model, cheap): feed it every host block the
    processor is fed (e.g. in the audio callback); each call returns as many samples as `process()`
    does for that block and they are exactly the processor's bypass output, so when the model is late
    the engine plays the `DryPath` samples for that stretch and stays in sync. Changes to `bypass`,
    `dry_wet` and `new_band_db` take effect from the next model block.
    """

    def __init__(
        self,
        stepper: Stepper,
        input_rate: int,
        output_rate: int | None = None,
        channels: int = 1,
        block_size: int | None = None,
        dry_wet: float = 1.0,
        input_cutoff_hz: float | None = None,
        new_band_db: float = 0.0,
    ) -> None:
        input_rate = check_rate("input_rate", input_rate)
        if not isinstance(channels, (int, np.integer)) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        for attr in ("sample_rate", "block_multiple", "latency"):
            if not isinstance(getattr(stepper, attr, None), (int, np.integer)):
                raise ValueError(f"model must declare an integer `{attr}`")
        self.stepper = stepper
        model_rate = int(stepper.sample_rate)
        output_rate = model_rate if output_rate is None else check_rate("output_rate", output_rate)
        if input_rate < model_rate:
            band_edge_hz: float | None = input_rate / 2
        elif input_cutoff_hz is not None:
            if not 0 < input_cutoff_hz < model_rate / 2:
                raise ValueError(f"input_cutoff_hz must lie in (0, {model_rate / 2}), got {input_cutoff_hz}")
            band_edge_hz = float(input_cutoff_hz)
        else:
            band_edge_hz = None
        block = _choose_block(stepper, block_size)
        self.dry_wet = dry_wet
        chain = StreamChain(stepper, input_rate, output_rate, int(channels), block, band_edge_hz, new_band_db)
        super().__init__(chain)
        # One step on silence, thrown away (steps are pure): one-off costs such as tracing the torch
        # graph (~0.5 s) are paid here, not by the first live block.
        stepper.step(np.zeros((self.channels, block), np.float32), self.chain.init_model_state())

    @property
    def dry_wet(self) -> float:
        return self._dry_wet

    @dry_wet.setter
    def dry_wet(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"dry_wet must be in [0, 1], got {value}")
        self._dry_wet = float(value)

    @property
    def new_band_db(self) -> float:
        return self.chain.new_band_db

    @new_band_db.setter
    def new_band_db(self, value: float) -> None:
        self.chain.set_new_band_db(value)
        self._state = self.chain.with_level(self._state)

    @property
    def bypass(self) -> bool:
        return self._bypass

    @bypass.setter
    def bypass(self, value: bool) -> None:
        self._bypass = bool(value)

    def dry_path(self) -> DryPath:
        """A fresh, independent dry signal path matching this processor (see the class docstring)."""
        return DryPath(self.chain.copy())

    # File mode's driver (models/dsp/offline.py) as methods: `proc.process_stream(read, frames, write)`
    # streams a whole input latency compensated, `proc.process_file_array(x)` a whole array.
    process_stream = process_stream
    process_file_array = process_array


def _choose_block(stepper: Stepper, block_size: int | None) -> int:
    """The model block: the stepper's fixed one, `block_size`, or about 10 ms."""
    multiple = int(stepper.block_multiple)
    fixed = getattr(stepper, "block_size", None)
    if fixed is not None:
        if block_size is not None and block_size != fixed:
            raise ValueError(f"block_size={block_size}: this model only runs blocks of {fixed} samples")
        return int(fixed)
    if block_size is None:
        return default_block_size(int(stepper.sample_rate), multiple)
    if not isinstance(block_size, (int, np.integer)) or block_size <= 0 or block_size % multiple:
        raise ValueError(f"block_size must be a positive multiple of {multiple} samples, got {block_size!r}")
    return int(block_size)
