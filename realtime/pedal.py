"""pedalboard integration: a livesr effect with pedalboard's `process()` contract, and a `Chain`.

    from pedalboard import Compressor, HighpassFilter, Limiter
    from realtime.pedal import BandwidthExtender, Chain

    chain = Chain([HighpassFilter(80), BandwidthExtender("speech"), Compressor(), Limiter()])
    out = chain(audio, 48000)                      # offline: same length, time-aligned
    part = chain(chunk, 48000, reset=False)        # streaming: latency dropped from the stream's front

pedalboard (GPL-3.0) is an optional extra: this module imports without it, `BandwidthExtender` needs
none of it, and `Chain` raises an ImportError naming `pip install "livesr[pedalboard]"`.

Python effects cannot go inside a `pedalboard.Pedalboard`: `Plugin` has no Python trampoline, and a
Python subclass of a pedalboard chain is silently bypassed when nested. So livesr effects are
duck-typed (`process`/`__call__`/`reset()`/`latency_samples`), and `Chain` is a Python-level chain
that runs each run of consecutive pedalboard plugins as one `Pedalboard` call.

The `process()` contract, as pedalboard 0.9.26 implements it:
- `process(input_array, sample_rate, buffer_size=8192, reset=True)` == `__call__`; float32 or float64
  in, float32 out; 1-D (mono) or 2-D in either orientation, output in the input's layout.
- reset=True: state reset first, the latency flushed with zeros: output time-aligned with the input,
  same length (x output/input rate for a rate-changing `BandwidthExtender`).
- reset=False: state kept across calls; the first `latency_samples` of the stream are dropped from
  its front (so early calls return fewer samples than given), and the last ones stay inside.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, MutableSequence
from typing import Any

import numpy as np

from models.dsp.level import check_new_band_db
from models.dsp.resample import check_rate

from .processor import BACKENDS, Processor

INSTALL_HINT = 'pip install "livesr[pedalboard]"'
CHANNELS_FIRST = "channels_first"  # pedalboard's "NotInterleaved": (channels, samples)
CHANNELS_LAST = "channels_last"  # pedalboard's "Interleaved": (samples, channels)


def require_pedalboard() -> Any:
    """The pedalboard module, or an ImportError that says how to install it."""
    try:
        import pedalboard
    except ImportError as err:
        raise ImportError(
            f"realtime.pedal.Chain needs the optional pedalboard package (GPL-3.0): {INSTALL_HINT}"
        ) from err
    return pedalboard


# ----------------------------------------------------------------------------------------------------
# Channel layout: pedalboard's detection rule and its per-object memory, mirrored exactly.


def detect_layout(shape: tuple[int, ...], channel_hint: int | None = None) -> str:
    """Which axis of an array of `shape` holds the channels, by pedalboard's rule.

    1-D is mono (channels first). For 2-D, a known channel count (`channel_hint`: the count of the
    previous buffer) decides when it matches one axis and the shape is not square; otherwise a zero-
    length axis is the sample axis, then the smaller axis holds the channels, and (1, 1) is channels
    first. Square shapes (n, n) with n > 1 and (0, 0) are ambiguous: ValueError.
    """
    if len(shape) == 1:
        return CHANNELS_FIRST
    if len(shape) != 2:
        raise ValueError(f"input_array must be 1-D or 2-D audio, got {len(shape)} dimensions {shape}")
    rows, cols = shape
    if channel_hint is not None:
        if rows == cols and rows > 1:
            raise ValueError(f"Unable to determine channel layout from shape: {shape}.")
        if rows == channel_hint:
            return CHANNELS_FIRST
        if cols == channel_hint:
            return CHANNELS_LAST
    if rows == 0 and cols > 0:  # zero channels makes no sense, zero samples does
        return CHANNELS_LAST
    if cols == 0 and rows > 0:
        return CHANNELS_FIRST
    if cols < rows:
        return CHANNELS_LAST
    if rows < cols:
        return CHANNELS_FIRST
    if rows == 1:  # a single sample: the layout does not matter
        return CHANNELS_FIRST
    raise ValueError(f"Unable to determine channel layout from shape: {shape}.")


class LayoutMemory:
    """A pedalboard plugin's layout memory: the last detected layout and channel count.

    Square buffers reuse the last layout; only an explicit `clear()` (a plugin's `reset()`, not a
    `process(..., reset=True)`) forgets it.
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.layout: str | None = None
        self.channels = 0

    def to_planar(self, input_array: Any) -> tuple[np.ndarray, str]:
        """(channels, samples) float32 view or copy of `input_array`, and the layout it came in.

        Mirrors pedalboard's `parseAndCacheChannelLayout`: an ambiguous shape falls back on the
        remembered layout, and is an error only when there is none yet.
        """
        if not isinstance(input_array, np.ndarray):
            raise TypeError(
                f"input_array must be a float32 or float64 numpy array, got {type(input_array).__name__}"
            )
        if input_array.dtype not in (np.float32, np.float64):
            raise TypeError(f"input_array must be float32 or float64 audio, got dtype {input_array.dtype}")
        if input_array.ndim not in (1, 2):
            raise ValueError(
                f"input_array must be 1-D or 2-D audio, got {input_array.ndim} dimensions {input_array.shape}"
            )
        try:
            self.layout = detect_layout(input_array.shape, self.channels or None)
        except ValueError as err:
            if self.layout is None:
                raise ValueError(
                    f"{err} Provide a non-square array first so that the channel axis can be told "
                    "from the sample axis (the layout is then remembered until reset())."
                ) from None
        x = input_array.astype(np.float32, copy=False)
        if x.ndim == 1:
            planar = x[None]
        else:
            planar = x if self.layout == CHANNELS_FIRST else x.T
        self.channels = planar.shape[0]
        return planar, self.layout


def from_planar(y: np.ndarray, layout: str, ndim: int) -> np.ndarray:
    """(channels, samples) back into the input's layout, C-contiguous float32."""
    if ndim == 1:
        y = y[0]
    elif layout == CHANNELS_LAST:
        y = y.T
    return np.ascontiguousarray(y, dtype=np.float32)


def check_sample_rate(sample_rate: Any) -> int:
    """`sample_rate` as an int (pedalboard hands out float rates such as 44100.0)."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float, np.integer, np.floating)):
        raise TypeError(f"sample_rate must be a number in Hz, got {type(sample_rate).__name__}")
    if not np.isfinite(sample_rate) or sample_rate <= 0 or float(sample_rate) != int(sample_rate):
        raise ValueError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    return int(sample_rate)


def check_positive_int(name: str, value: Any) -> int:
    """`value` as an int >= 1, or a ValueError naming `name` (pedalboard hangs on buffer_size=0)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class Effect:
    """pedalboard's `process()`/`__call__` front end around a (channels, samples) float32 core.

    Subclasses implement `process_planar` and `reset_state`; `latency_samples` says how many samples
    the effect holds back in streaming mode.
    """

    def __init__(self) -> None:
        self._layout = LayoutMemory()

    def process(
        self, input_array: np.ndarray, sample_rate: float, buffer_size: int = 8192, reset: bool = True
    ) -> np.ndarray:
        """Run audio through the effect (see the module docstring for the contract)."""
        rate, size = check_sample_rate(sample_rate), check_positive_int("buffer_size", buffer_size)
        x, layout = self._layout.to_planar(input_array)
        if x.shape[0] == 0:  # (0, 0) read with a remembered layout: nothing to process
            return np.zeros(input_array.shape, np.float32)
        y = from_planar(self.process_planar(x, rate, size, bool(reset)), layout, input_array.ndim)
        # Like pedalboard, always hand back a new array, never a view of the caller's.
        return y.copy() if np.may_share_memory(y, input_array) else y

    def __call__(
        self, input_array: np.ndarray, sample_rate: float, buffer_size: int = 8192, reset: bool = True
    ) -> np.ndarray:
        """Alias for `process`."""
        return self.process(input_array, sample_rate, buffer_size, reset)

    def reset(self) -> None:
        """Clear all state, the remembered channel layout included."""
        self._layout.clear()
        self.reset_state()

    def process_planar(self, x: np.ndarray, sample_rate: int, buffer_size: int, reset: bool) -> np.ndarray:
        raise NotImplementedError

    def reset_state(self) -> None:
        raise NotImplementedError

    @property
    def latency_samples(self) -> int:
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------------
# The bandwidth-extension effect.


def _load_model(model: Any, backend: str, pretrained: bool) -> Any:
    if isinstance(model, (str, os.PathLike)):
        from .generators import load_generator  # a shipped preset's graph, else the torch model

        return load_generator(str(model), backend, pretrained)
    return model  # an already-built generator (or numpy stepper); the Processor checks its contract


class BandwidthExtender(Effect):
    """A livesr generator as a pedalboard-style effect.

    Args:
        model: a preset name ("speech", "music"), a path to a .safetensors file, or an already-built
            generator module (or numpy stepper such as an `OnnxStreamer`).
        output_rate: None (default) for the same-rate mode used in chains: the output has the input's
            rate; the audio is resampled to the model's rate and back inside (exact pass-through when
            the rates are equal). Run chains at the model's rate (48 kHz speech, 44.1 kHz music),
            resampling a band-limited file up first, or the restored band is cut again on the way out.
            An int (one of `SUPPORTED_RATES`) for the rate-changing mode, outside chains: the output
            has `output_rate` and round(len * output_rate / sample_rate) samples offline.
        backend: "auto" | "torch" | "onnx" | "triton" (see `realtime.processor.make_stepper`).
        pretrained: for a name or path: trained weights (a preset then runs its shipped ONNX graph
            under "auto"/"onnx", without torch) or random ones (`realtime.generators.load_generator`).
        dry_wet: 1.0 = model output only, 0.0 = the time-aligned dry input only.
        input_cutoff_hz: where the band of the incoming audio ends, when it runs at the model's rate
            (e.g. 8000 for a 16 kHz recording resampled to 48 kHz): the output keeps the input below
            it and the new band's level follows the input's top band. Without it the generator runs
            alone and its noise excitation stays silent (see `realtime.processor.Processor`).
        new_band_db: trim the new band's level by this many dB from the fitted one (within +-24 dB):
            a voice brighter or duller above the band edge than the training voices is met by ear.

    A `Processor` is built for each (sample_rate, channels) on first use (or by `prepare`) and rebuilt,
    reset, when they change. NaN/Inf input is guarded by the Processor: the host block holding it
    (`buffer_size` samples at most) is replaced by silence.
    """

    def __init__(
        self,
        model: Any = "speech",
        *,
        output_rate: int | None = None,
        backend: str = "auto",
        pretrained: bool = True,
        dry_wet: float = 1.0,
        input_cutoff_hz: float | None = None,
        new_band_db: float = 0.0,
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.output_rate = None if output_rate is None else check_rate("output_rate", output_rate)
        self.backend = backend
        self._check_dry_wet(dry_wet)
        self._dry_wet = float(dry_wet)
        self.input_cutoff_hz = input_cutoff_hz
        self._new_band_db = check_new_band_db(new_band_db)
        self.model = _load_model(model, backend, pretrained)
        self._proc: Processor | None = None
        self._to_drop = 0  # stream samples still to drop from the front (streaming mode)

    def __repr__(self) -> str:
        name = getattr(self.model, "preset", type(self.model).__name__)
        rate = "" if self.output_rate is None else f" output_rate={self.output_rate}"
        return f"<BandwidthExtender model={name!r}{rate} dry_wet={self._dry_wet:g}>"

    @staticmethod
    def _check_dry_wet(value: float) -> None:
        if not isinstance(value, (int, float, np.floating)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"dry_wet must be a number in [0, 1], got {value!r}")

    @property
    def dry_wet(self) -> float:
        return self._dry_wet

    @dry_wet.setter
    def dry_wet(self, value: float) -> None:
        self._check_dry_wet(value)
        self._dry_wet = float(value)
        if self._proc is not None:
            self._proc.dry_wet = self._dry_wet

    @property
    def new_band_db(self) -> float:
        return self._new_band_db

    @new_band_db.setter
    def new_band_db(self, value: float) -> None:
        self._new_band_db = check_new_band_db(value)
        if self._proc is not None:
            self._proc.new_band_db = self._new_band_db

    @property
    def processor(self) -> Processor | None:
        """The Processor currently in use (None before the first `prepare`/`process`)."""
        return self._proc

    def prepare(self, sample_rate: float, num_channels: int = 1) -> None:
        """Build the Processor now (model export, buffers) so the first block does not pay for it."""
        self._processor(check_sample_rate(sample_rate), check_positive_int("num_channels", num_channels))

    @property
    def latency_samples(self) -> int:
        """Samples held back in streaming mode, at the output rate, for the prepared rate and channels."""
        if self._proc is None:
            raise RuntimeError(
                "latency_samples depends on the sample rate: call prepare(sample_rate) or process audio first"
            )
        return self._proc.latency

    def _processor(self, sample_rate: int, channels: int) -> Processor:
        proc = self._proc
        if proc is not None and (proc.input_rate, proc.channels) == (sample_rate, channels):
            return proc
        check_rate("sample_rate", sample_rate)
        out_rate = sample_rate if self.output_rate is None else self.output_rate
        proc = Processor(
            self.model,
            sample_rate,
            out_rate,
            self.backend,
            channels,
            dry_wet=self._dry_wet,
            input_cutoff_hz=self.input_cutoff_hz,
            new_band_db=self._new_band_db,
        )
        if self.output_rate is None and sample_rate < proc.model_rate:
            warnings.warn(
                f"BandwidthExtender at {sample_rate} Hz: the model restores the band up to "
                f"{proc.model_rate // 2} Hz, which this rate cuts again; run the chain at "
                f"{proc.model_rate} Hz (resample the input first) or set output_rate",
                stacklevel=4,
            )
        self._proc, self._to_drop = proc, proc.latency
        return proc

    def reset_state(self) -> None:
        if self._proc is not None:
            self._proc.reset()
            self._to_drop = self._proc.latency

    def process_planar(self, x: np.ndarray, sample_rate: int, buffer_size: int, reset: bool) -> np.ndarray:
        proc = self._processor(sample_rate, x.shape[0])
        if reset:
            self.reset_state()
            if x.shape[1] == 0:
                return np.zeros((x.shape[0], 0), np.float32)
            # Offline: the Processor flushes the latency and aligns; it is left reset.
            return proc.process_file_array(x.T, block=buffer_size).T
        parts = [proc.process(x[:, i : i + buffer_size].T) for i in range(0, x.shape[1], buffer_size)]
        y = np.concatenate(parts).T if parts else np.zeros((x.shape[0], 0), np.float32)
        drop = min(self._to_drop, y.shape[1])
        self._to_drop -= drop
        return y[:, drop:]


# ----------------------------------------------------------------------------------------------------
# The chain.


class PedalboardSegment:
    """Consecutive pedalboard plugins run as one `pedalboard.Pedalboard` call on planar audio.

    Mono goes in as 1-D (never ambiguous). Multichannel goes in as (channels, samples); when that
    shape could be read the other way round by pedalboard's rule (samples <= channels) and the board
    has not yet seen this channel count, an empty (channels, 0) buffer is sent first to fix its layout.
    In streaming mode empty buffers are skipped and `buffer_size` is capped at the stream's first
    block, so a segment behind a latency (short first buffer) never makes pedalboard re-prepare a
    plugin mid-stream. `held` counts the samples the plugins hold back in the current stream (their
    latency, once the stream is longer than it).
    """

    def __init__(self, board: Any) -> None:
        self.board = board
        self._known_channels = 0
        self._stream_block: int | None = None
        self.held = 0

    def __repr__(self) -> str:
        return repr(self.board)

    def process_planar(self, x: np.ndarray, sample_rate: int, buffer_size: int, reset: bool) -> np.ndarray:
        channels, n = x.shape
        if reset:
            self._stream_block = None
        elif n == 0:
            return x.copy()  # nothing to do, and a zero block size must not become the stream's
        else:
            # pedalboard re-prepares a fresh plugin, losing its state (Limiter does), whenever a call's
            # block size exceeds all earlier ones. Behind a latency the first buffer is short, so
            # later calls run in internal blocks no longer than it (same output, no re-prepare).
            self._stream_block = self._stream_block or min(buffer_size, n)
            buffer_size = min(buffer_size, self._stream_block)
        if channels == 1:
            y = self.board(x[0], sample_rate, buffer_size, reset)[None]
        else:
            if n <= channels and self._known_channels != channels:
                self.board(np.zeros((channels, 0), np.float32), sample_rate, buffer_size, False)
            y = self.board(np.ascontiguousarray(x), sample_rate, buffer_size, reset)
        self._known_channels = channels
        self.held = 0 if reset else self.held + n - y.shape[1]
        return y

    def reset(self) -> None:
        self.board.reset()
        self._known_channels = 0
        self._stream_block = None
        self.held = 0


class ForeignEffect:
    """Any other object with the `process()` contract, fed planar audio (1-D when mono)."""

    def __init__(self, effect: Any) -> None:
        self.effect = effect
        self.held = 0

    def __repr__(self) -> str:
        return repr(self.effect)

    def process_planar(self, x: np.ndarray, sample_rate: int, buffer_size: int, reset: bool) -> np.ndarray:
        out = self.effect.process(x[0] if x.shape[0] == 1 else x, sample_rate, buffer_size, reset)
        y = np.asarray(out, dtype=np.float32)
        y = y[None] if y.ndim == 1 else y
        self.held = 0 if reset else self.held + x.shape[1] - y.shape[1]
        return y

    def reset(self) -> None:
        self.effect.reset()
        self.held = 0


def _plugins_in(item: Any, pedalboard: Any) -> Iterator[Any]:
    """`item` and, for a pedalboard.Pedalboard or a Chain, every effect nested in it."""
    yield item
    if isinstance(item, (pedalboard.Pedalboard, Chain)):
        for child in item:
            yield from _plugins_in(child, pedalboard)


class Chain(Effect, MutableSequence):
    """A list of pedalboard plugins and livesr effects with pedalboard's `process()` contract.

    Each run of consecutive pedalboard plugins runs inside one `pedalboard.Pedalboard` call; other
    items (`BandwidthExtender`, nested `Chain`s, any object with `process` and `reset`) run between.
    reset=True: every stage flushes its own latency, so the output is time-aligned and as long as the
    input, as in a `Pedalboard`. reset=False: stages stream with pedalboard's semantics, so the chain
    drops its total latency from the front of the stream. List-like: indexing, slicing, `len`,
    `append`, `insert`, `del`, `remove`, `pop`. Requires pedalboard.
    """

    def __init__(self, effects: Iterable[Any] = ()) -> None:
        self._pedalboard = require_pedalboard()
        super().__init__()
        self._items: list[Any] = []
        self._stages: list[Any] | None = None
        for item in effects:
            self.append(item)

    def __repr__(self) -> str:
        return f"<Chain with {len(self._items)} effects: {self._items!r}>"

    # --- list access -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: Any) -> Any:
        return self._items[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        items = list(self._items)
        items[index] = value
        self._set_items(items)

    def __delitem__(self, index: Any) -> None:
        items = list(self._items)
        del items[index]
        self._set_items(items)

    def insert(self, index: int, value: Any) -> None:
        items = list(self._items)
        items.insert(index, value)
        self._set_items(items)

    def reverse(self) -> None:
        self._set_items(self._items[::-1])  # swapping in place would hold a duplicate for a moment

    def _set_items(self, items: list[Any]) -> None:
        for item in items:
            self._check_item(item)
        seen: set[int] = set()
        for item in items:
            for plugin in _plugins_in(item, self._pedalboard):
                if plugin is self:
                    raise ValueError("a Chain cannot contain itself")
                if id(plugin) in seen:
                    raise ValueError(
                        f"{plugin!r} appears twice in the chain; each effect keeps its own state, "
                        "so use a separate instance for each position"
                    )
                seen.add(id(plugin))
        self._items, self._stages = items, None

    def _check_item(self, item: Any) -> None:
        if isinstance(item, self._pedalboard.Plugin):
            return
        if not (callable(getattr(item, "process", None)) and callable(getattr(item, "reset", None))):
            raise TypeError(
                f"Chain items must be pedalboard plugins or effects with process() and reset(), "
                f"got {type(item).__name__}"
            )
        if getattr(item, "output_rate", None) is not None:
            raise ValueError(
                f"{item!r} changes the sample rate (output_rate={item.output_rate}); inside a Chain "
                "use the same-rate mode (output_rate=None) and run the chain at the model's rate"
            )

    # --- processing ------------------------------------------------------------------------------
    @property
    def stages(self) -> list[Any]:
        """What one call runs, in order: `PedalboardSegment`s (one Pedalboard call each) and effects."""
        if self._stages is None:
            stages: list[Any] = []
            run: list[Any] = []
            for item in self._items + [None]:
                if isinstance(item, self._pedalboard.Plugin):
                    run.append(item)
                    continue
                if run:
                    stages.append(PedalboardSegment(self._pedalboard.Pedalboard(run)))
                    run = []
                if item is not None:
                    stages.append(item if isinstance(item, Effect) else ForeignEffect(item))
            self._stages = stages
        return self._stages

    def process_planar(self, x: np.ndarray, sample_rate: int, buffer_size: int, reset: bool) -> np.ndarray:
        channels = x.shape[0]
        for stage in self.stages:
            n = x.shape[1]
            x = stage.process_planar(x, sample_rate, buffer_size, reset)
            if x.ndim != 2 or x.shape[0] != channels or x.shape[1] > n or (reset and x.shape[1] != n):
                raise RuntimeError(
                    f"{stage!r} returned shape {x.shape} for {channels} channels x {n} samples (planar): "
                    "a chain stage must keep the channel count and, "
                    "offline, the length (and never return more samples than it was given)"
                )
        return x

    def prepare(self, sample_rate: float, num_channels: int = 1) -> None:
        """Prepare every livesr effect (see `BandwidthExtender.prepare`)."""
        for stage in self.stages:
            if callable(getattr(stage, "prepare", None)):
                stage.prepare(sample_rate, num_channels)

    @property
    def latency_samples(self) -> int:
        """Total streaming latency: livesr effects' declared latencies plus the samples each other
        stage has held back in the current stream (pedalboard does not report plugin latency)."""
        return sum(s.latency_samples if isinstance(s, Effect) else s.held for s in self.stages)

    def reset_state(self) -> None:
        for stage in self.stages:
            stage.reset()


__all__ = [
    "CHANNELS_FIRST",
    "CHANNELS_LAST",
    "INSTALL_HINT",
    "BandwidthExtender",
    "Chain",
    "Effect",
    "LayoutMemory",
    "detect_layout",
    "require_pedalboard",
]
