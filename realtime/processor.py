"""The block processor: any host block size in, fixed model blocks inside, a fixed and known latency out.

    host block (input_rate) -> guard -> Resampler -> model-rate FIFO -> model step -> band merge
        -> dry/wet mix -> Resampler -> output FIFO (pre-filled) -> host block (output_rate)

The band merge (realtime/band_merge.py, for inputs below the model's rate) keeps the input's own
band and takes only the new band from the model, at the level the model was calibrated for.

Each call hands back exactly the output owed for the input seen so far, floor(total_in * ratio), so
the output of any partition of the input into host blocks is bit-identical to any other (and to
file mode). The output FIFO's pre-fill is the smallest that never runs dry for any host block
size; together with both resamplers' delays and the model's latency it makes up `latency`.

This module imports torch only when a torch model is run, so the ONNX path stays torch-free.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from math import gcd
from typing import Any, Protocol

import numpy as np

from models.blocking import default_block_size
from models.dsp.band_merge import BandMerge
from models.dsp.resample import PASSBAND, SUPPORTED_RATES, Resampler, check_rate

BACKENDS = ("auto", "torch", "onnx", "triton")
# Model block length when none is given: about this long, rounded to the model's block_multiple.
# Enumerating the FIFO need over one period costs O(period); past this a proven bound is used.
_MAX_PERIOD = 1 << 22


class Stepper(Protocol):
    """What the processor runs: the streaming step contract on numpy float32 (batch, samples) blocks."""

    sample_rate: int
    block_multiple: int
    latency: int
    block_size: int | None  # a fixed block length (an exported graph), or None for any multiple

    def init_state(self, batch: int) -> dict[str, Any]: ...

    def with_state_values(self, state: dict[str, Any], values: dict[str, np.ndarray]) -> dict[str, Any]:
        """`state` with the named entries set to `values` (broadcast over the batch)."""
        ...

    def step(self, x: np.ndarray, state: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]: ...


# Longest model block run as a traced graph. Measured on the speech preset, one core: a graph saves
# half the time of a 10 ms block and a tenth of a 100 ms one, while a trace takes ~0.5 s at 10 ms
# and ~7 s at 1 s (offline evaluation's blocks), which the saving never repays for a short file.
_TRACED_MAX_SECONDS = 0.05


class TorchStepper:
    """A torch `StreamingModule` generator behind the numpy step contract.

    The model is put in eval mode and moved to `device` ("cpu", or "cuda" where the kernels pick
    the Triton scan). States stay torch tensors on that device between steps. On the CPU the step
    of a `traceable` model runs as a TorchScript graph per block shape (`models.traced`: same
    numbers, about half the time); `traced=False` runs it eagerly.
    """

    block_size = None

    def __init__(self, model: Any, device: str = "cpu", traced: bool = True) -> None:
        import torch

        from models.traced import TracedStep

        torch.set_flush_denormal(True)  # silence must not slow the model down
        self._torch = torch
        self.device = torch.device(device)
        self.model = _inference_copy(model).eval().to(self.device)
        self.sample_rate = int(model.sample_rate)
        self.block_multiple = int(model.block_multiple)
        self.latency = int(model.latency)
        # The Triton scan is a kernel launch a tracer cannot record: CUDA runs eagerly, as does a
        # model whose step may branch on values (a graph would freeze one branch).
        if traced and getattr(self.model, "traceable", False) and self.device.type == "cpu":
            self._step = TracedStep(self.model, int(_TRACED_MAX_SECONDS * self.sample_rate))
        else:
            self._step = self.model.step

    def init_state(self, batch: int) -> dict[str, Any]:
        with self._torch.inference_mode():
            return self.model.init_state(batch, self.device)

    def with_state_values(self, state: dict[str, Any], values: dict[str, np.ndarray]) -> dict[str, Any]:
        torch = self._torch
        return {
            **state,
            **{
                k: torch.as_tensor(v, device=self.device).expand_as(state[k]).clone()
                for k, v in values.items()
            },
        }

    def step(self, x: np.ndarray, state: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        with self._torch.inference_mode():
            y, new_state = self._step(self._torch.from_numpy(x).to(self.device), state)
        return y.to("cpu").numpy(), new_state


def _inference_copy(model: Any) -> Any:
    """A private copy of `model` for streaming, with weight norm folded where the model has it.

    Folding (once, instead of recomputing the weights every block) renames parameters, so it must not
    touch the caller's model. A deepcopy would not do: it shares torch's generated parametrised module
    classes with the original, and folding edits those classes. A generator is rebuilt from its config.
    """
    if not hasattr(model, "remove_weight_norm"):
        return copy.deepcopy(model)
    clone = type(model)(model.config)
    clone.load_state_dict(model.state_dict())
    clone.preset = getattr(model, "preset", None)
    clone.remove_weight_norm()
    return clone


def _is_torch_module(model: Any) -> bool:
    torch = sys.modules.get("torch")  # a torch module can only exist once torch is imported
    return torch is not None and isinstance(model, torch.nn.Module)


def _level_values(
    model: Any, stepper: Stepper, band_edge_hz: float | None, crossover_hz: float | None
) -> dict[str, np.ndarray]:
    """State values that set the level of the model's new band from the input's own top band
    (models/band_level.py) for an input whose band ends at `band_edge_hz`, with the band merge
    taking the model's output above `crossover_hz`; none when the edge is unknown."""
    config = getattr(model, "config", None) or getattr(stepper, "config", None)
    if band_edge_hz is None or crossover_hz is None or config is None:
        return {}
    from models.dsp.level import level_state

    return level_state(config, band_edge_hz, crossover_hz)


def make_stepper(model: Any, backend: str = "auto") -> tuple[Stepper, str]:
    """Choose how the generator runs; returns (stepper, resolved backend name).

    - a model that is not a torch module is taken as a ready numpy stepper (e.g. an OnnxStreamer);
    - "torch": the torch model on CPU; "triton": on CUDA (the kernels then use the Triton scan);
    - "onnx": exported with `export.onnx.cached_export(model)` and run by `export.runtime.OnnxStreamer`;
    - "auto": "onnx" when onnxruntime is installed and the export works, else "torch".
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if not _is_torch_module(model):
        if backend not in ("auto", "onnx"):
            raise ValueError(f"backend={backend!r} needs a torch model, got a {type(model).__name__}")
        return model, "onnx"
    if backend == "triton":
        import torch

        if not torch.cuda.is_available() or importlib.util.find_spec("triton") is None:
            raise ValueError("backend='triton' needs a CUDA device and the triton package")
        return TorchStepper(model, "cuda"), "triton"
    if backend == "onnx" or (backend == "auto" and importlib.util.find_spec("onnxruntime") is not None):
        try:
            from export.onnx import cached_export
            from export.runtime import OnnxStreamer

            return OnnxStreamer(cached_export(model)), "onnx"
        except Exception as exc:
            if backend == "onnx":
                raise
            warnings.warn(f"ONNX backend unavailable ({exc!r}); running the torch model", stacklevel=2)
    return TorchStepper(model, "cpu"), "torch"


@dataclass
class ProcessorStats:
    blocks: int = 0  # host blocks accepted
    bad_blocks: int = 0  # host blocks holding NaN/Inf, replaced by silence
    state_resets: int = 0  # model steps whose output or state went non-finite
    model_steps: int = 0


def _state_finite(state: dict[str, Any]) -> bool:
    """Whether every entry of a stepper's state (numpy arrays or torch tensors) is finite.

    Torch states are checked with one sum over all their floating values (a per-tensor check costs
    two dispatches each, a few tenths of a millisecond per block): NaN or Inf anywhere makes the sum
    non-finite, and a state so large that its sum overflows float32 counts as broken too.
    """
    tensors = []
    for value in state.values():
        if isinstance(value, np.ndarray):
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                return False
        elif value.is_floating_point():
            tensors.append(value)
    if not tensors:
        return True
    import torch

    return bool(torch.cat([t.reshape(-1) for t in tensors]).sum().isfinite())


def _delay(x: np.ndarray, line: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Delay `x` (channels, n) by the delay line's length; returns (delayed x, new line)."""
    full = np.concatenate([line, x], axis=1)
    return full[:, : x.shape[1]], full[:, x.shape[1] :]


def _prefill(input_rate: int, model_rate: int, output_rate: int, block: int) -> int:
    """Smallest output-FIFO pre-fill (output samples) that never runs dry, for any host block size.

    After n input samples the host is owed floor(n * out/in) samples while the chain has made
    floor(floor(floor(n*L1/M1) / B) * B * L2/M2): the difference is periodic in n, so its maximum
    over one period is exact. For huge periods the proven bound ceil(B * L2/M2) is used (a few samples
    more at most).
    """
    r1, r2 = Fraction(model_rate, input_rate), Fraction(output_rate, model_rate)
    l1, m1, l2, m2 = r1.numerator, r1.denominator, r2.numerator, r2.denominator
    a0 = block // gcd(l1, block)
    period = m1 * a0 * (m2 // gcd(a0 * l1 * l2, m2))
    if period > _MAX_PERIOD:
        return -(-block * l2 // m2)
    n = np.arange(period, dtype=np.int64)
    owed = n * output_rate // input_rate
    made = (n * l1 // m1) // block * block * l2 // m2
    return int((owed - made).max())


class _HostPath:
    """Shared host side: input checks and NaN/Inf guard, both resamplers, the pre-filled output FIFO.

    Subclasses transform the model-rate stream in `_model_rate_stage`, delaying it by exactly
    `model_latency` samples.
    """

    def __init__(
        self,
        input_rate: int,
        model_rate: int,
        output_rate: int,
        channels: int,
        model_latency: int,
        prefill: int,
    ) -> None:
        self.input_rate, self.model_rate, self.output_rate = input_rate, model_rate, output_rate
        self.channels = channels
        self.model_latency = model_latency
        self._in = Resampler(input_rate, model_rate)
        self._out = Resampler(model_rate, output_rate, input_delay=self._in.latency + model_latency)
        self._prefill = prefill
        self.latency = prefill + self._out.latency
        self._reset_host()

    def _reset_host(self) -> None:
        self._in_state = self._in.init_state(self.channels)
        self._out_state = self._out.init_state(self.channels)
        self._dry_line = np.zeros((self.channels, self.model_latency), np.float32)
        self._fifo = np.zeros((self.channels, self._prefill), np.float32)
        self._n_in = self._n_out = 0
        self.stats = ProcessorStats()

    def output_length(self, n_in_total: int) -> int:
        """Output samples handed out after `n_in_total` input samples: floor(n * output/input rate)."""
        return n_in_total * self.output_rate // self.input_rate

    def _check(self, block: Any) -> np.ndarray:
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

    def _accept(self, block: Any) -> np.ndarray:
        """`block` as a finite (channels, n) float32 array; NaN/Inf blocks become silence (counted)."""
        block = self._check(block)
        self.stats.blocks += 1
        if not np.isfinite(block).all():
            self.stats.bad_blocks += 1
            return np.zeros((self.channels, block.shape[0]), np.float32)
        return np.ascontiguousarray(block.T, dtype=np.float32)

    def process(self, block: np.ndarray) -> np.ndarray:
        """One host block in, the output owed for it out (floor(total_in * ratio) in total), float32.

        Mono blocks may be (samples,) or (samples, 1) and come back in the same layout; multichannel
        blocks are (samples, channels).
        """
        x = self._accept(block)
        u, self._in_state = self._in.step(x, self._in_state)
        y, self._out_state = self._out.step(self._model_rate_stage(u), self._out_state)
        self._fifo = np.concatenate([self._fifo, y], axis=1)
        self._n_in += x.shape[1]
        count = self.output_length(self._n_in) - self._n_out
        if count > self._fifo.shape[1]:
            raise RuntimeError(f"output FIFO ran dry ({self._fifo.shape[1]} < {count}): pre-fill too small")
        out, self._fifo = self._fifo[:, :count], self._fifo[:, count:]
        self._n_out += count
        return out[0].copy() if block.ndim == 1 else np.ascontiguousarray(out.T)

    def _model_rate_stage(self, u: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class DryPath(_HostPath):
    """The processor's signal path with the model left out: resampled input, delayed to line up.

    Made by `Processor.dry_path()`. Fed the same host blocks, its `process()` returns the same number
    of samples per call as the processor's, with the same `latency`, and is bit-identical to the
    processor's output in bypass. It costs two resamplers and a delay line, no model.
    """

    def reset(self) -> None:
        self._reset_host()

    def _model_rate_stage(self, u: np.ndarray) -> np.ndarray:
        dry, self._dry_line = _delay(u, self._dry_line)
        return dry


class Processor(_HostPath):
    """Runs a streaming generator live on host blocks of any size, with a fixed, known latency.

    Args:
        model: a torch `StreamingModule` generator (with `sample_rate`, `block_multiple`, `latency`)
            or a numpy stepper with the same contract (e.g. `export.runtime.OnnxStreamer`).
        input_rate: host input rate, one of `SUPPORTED_RATES`.
        output_rate: host output rate (one of `SUPPORTED_RATES`); default: the model's rate.
        backend: "torch" | "onnx" | "triton" | "auto" (see `make_stepper`).
        channels: channels run as a batch through the model.
        block_size: model block length in model-rate samples; default ~10 ms rounded to the model's
            block_multiple, or the exported graph's fixed block length.
        dry_wet: 1.0 = model output only, 0.0 = dry only; mixes at the model rate, time-aligned.
        input_cutoff_hz: where the band of an input at the model's own rate ends (a low-passed file);
            ignored for an input below the model's rate, whose band ends at its Nyquist frequency.
            With a band edge the output keeps the input below it and the new band's level follows
            the input's top band; without one (a same-rate input of unknown band) the generator runs
            alone and its noise excitation stays silent.

    `latency` (output samples) = output-FIFO pre-fill (block buffering, at least model_block - 1)
    + both resamplers' delays + the model's latency + the band merge's delay: an impulse at input
    sample 0 comes out at output sample `latency` exactly, whatever the host block sizes.

    Guards: a host block holding NaN/Inf is replaced by silence before anything sees it
    (`stats.bad_blocks`); if a model step yields a non-finite output or state, the state goes back to
    `init_state` (`stats.state_resets`) and a non-finite output block is replaced by the dry block.

    Dry path and overload fallback: the dry signal is the resampled input delayed by the model's
    latency (and the band merge's), so it lines up with the wet output sample for sample.
    `bypass = True` outputs it alone (the model is skipped; its state restarts from `init_state`
    when bypass is switched off) with the latency unchanged, so toggling never shifts time. For a
    live engine, `dry_path()` returns an independent `DryPath` (no model, cheap): feed it every host
    block the processor is fed (e.g. in the audio callback); each call returns as many samples as
    `process()` does for that block and they are exactly the processor's bypass output, so when the
    model is late the engine plays the `DryPath` samples for that stretch and stays in sync. Changes
    to `bypass` and `dry_wet` take effect from the next model block.
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
    ) -> None:
        input_rate = check_rate("input_rate", input_rate)
        if not isinstance(channels, (int, np.integer)) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        self.stepper, self.backend = make_stepper(model, backend)
        for attr in ("sample_rate", "block_multiple", "latency"):
            if not isinstance(getattr(self.stepper, attr, None), (int, np.integer)):
                raise ValueError(f"model must declare an integer `{attr}`")
        model_rate = int(self.stepper.sample_rate)
        output_rate = model_rate if output_rate is None else check_rate("output_rate", output_rate)
        self.model_block = self._choose_block(block_size)
        self.dry_wet = dry_wet
        self._bypass = False
        # A band-limited input: the output keeps its band and takes only the new band from the model.
        # The crossover sits at the resampler's passband edge, not at the Nyquist frequency: between
        # the two the upsampled input is already rolling off, and only the model can fill that gap.
        if input_rate < model_rate:
            band_edge_hz: float | None = input_rate / 2
        elif input_cutoff_hz is not None:
            if not 0 < input_cutoff_hz < model_rate / 2:
                raise ValueError(f"input_cutoff_hz must lie in (0, {model_rate / 2}), got {input_cutoff_hz}")
            band_edge_hz = float(input_cutoff_hz)
        else:
            band_edge_hz = None
        crossover_hz = PASSBAND * band_edge_hz if band_edge_hz is not None else None
        self._merge = (
            BandMerge(model_rate, crossover_hz, int(channels), int(self.stepper.latency))
            if crossover_hz is not None
            else None
        )
        # The new band's level follows the input's top band (models/band_level.py), above the same
        # crossover the merge uses.
        self._state_values = _level_values(model, self.stepper, band_edge_hz, crossover_hz)
        merge_delay = self._merge.delay if self._merge is not None else 0
        prefill = _prefill(input_rate, model_rate, output_rate, self.model_block)
        super().__init__(
            input_rate,
            model_rate,
            output_rate,
            int(channels),
            int(self.stepper.latency) + merge_delay,
            prefill,
        )
        self._reset_model()
        # One step on silence, thrown away (steps are pure): one-off costs such as tracing the torch
        # graph (~0.5 s) are paid here, not by the first live block.
        self.stepper.step(np.zeros((self.channels, self.model_block), np.float32), self._state)

    def _choose_block(self, block_size: int | None) -> int:
        multiple = int(self.stepper.block_multiple)
        fixed = getattr(self.stepper, "block_size", None)
        if fixed is not None:
            if block_size is not None and block_size != fixed:
                raise ValueError(f"block_size={block_size}: this model only runs blocks of {fixed} samples")
            return int(fixed)
        if block_size is None:
            return default_block_size(int(self.stepper.sample_rate), multiple)
        if not isinstance(block_size, (int, np.integer)) or block_size <= 0 or block_size % multiple:
            raise ValueError(
                f"block_size must be a positive multiple of {multiple} samples, got {block_size!r}"
            )
        return int(block_size)

    @property
    def dry_wet(self) -> float:
        return self._dry_wet

    @dry_wet.setter
    def dry_wet(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"dry_wet must be in [0, 1], got {value}")
        self._dry_wet = float(value)

    @property
    def bypass(self) -> bool:
        return self._bypass

    @bypass.setter
    def bypass(self, value: bool) -> None:
        if self._bypass and not value:
            self._reset_model()  # its state is stale after a bypass
        self._bypass = bool(value)

    def dry_path(self) -> DryPath:
        """A fresh, independent dry signal path matching this processor (see the class docstring)."""
        return DryPath(
            self.input_rate,
            self.model_rate,
            self.output_rate,
            self.channels,
            self.model_latency,
            self._prefill,
        )

    def reset(self) -> None:
        """Back to the state of a freshly made processor (stats included); settings are kept."""
        self._reset_host()
        self._reset_model()

    def _reset_model(self) -> None:
        self._state = self._fresh_state()
        self._pending = np.zeros((self.channels, 0), np.float32)
        if self._merge is not None:
            self._merge.reset()

    def _fresh_state(self) -> dict[str, Any]:
        state = self.stepper.init_state(self.channels)
        return self.stepper.with_state_values(state, self._state_values) if self._state_values else state

    def _model_rate_stage(self, u: np.ndarray) -> np.ndarray:
        self._pending = np.concatenate([self._pending, u], axis=1)
        n_blocks = self._pending.shape[1] // self.model_block
        ready, self._pending = np.split(self._pending, [n_blocks * self.model_block], axis=1)
        outs = [self._mix(blk) for blk in np.split(ready, n_blocks, axis=1)] if n_blocks else [ready]
        return np.concatenate(outs, axis=1)

    def _mix(self, block: np.ndarray) -> np.ndarray:
        dry, self._dry_line = _delay(block, self._dry_line)
        if self._bypass:
            return dry
        wet = self._step(np.ascontiguousarray(block), dry)
        if self._merge is not None:
            wet = self._merge.process(block, dry, wet)
        if self._dry_wet == 1.0:
            return wet
        if self._dry_wet == 0.0:
            return dry
        return self._dry_wet * wet + (1.0 - self._dry_wet) * dry

    def _step(self, block: np.ndarray, dry: np.ndarray) -> np.ndarray:
        y, state = self.stepper.step(block, self._state)
        y = np.asarray(y, dtype=np.float32)
        self.stats.model_steps += 1
        y_ok = bool(np.isfinite(y).all())
        if y_ok and _state_finite(state):
            self._state = state
            return y
        self._state = self._fresh_state()
        self.stats.state_resets += 1
        return y if y_ok else dry

    def process_stream(
        self,
        read: Callable[[int], np.ndarray],
        frames: int,
        write: Callable[[np.ndarray], object],
        block: int | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> int:
        """Run `frames` input samples through the streaming path, latency compensated, block by block.

        `read(k)` returns the next k input samples ((k,) or (k, channels)); `write` receives the output
        in order: round(frames * ratio) samples in all, time-aligned with the input (the first `latency`
        samples are dropped, zeros are fed after the end to flush the rest out). Host blocks are `block`
        input samples (default: about one model block; it also sets the NaN/Inf guard's granularity);
        `progress(k)` is told how many input samples were consumed. The processor is reset before and
        after, except `stats`, which then hold this stream's counts. Returns the number of output samples
        written; EOFError if `read` runs dry early.
        """
        if block is None:
            block = -(-self.model_block * self.input_rate // self.model_rate)
        if block < 1:
            raise ValueError(f"block must be >= 1 input samples, got {block}")
        n_out = (2 * frames * self.output_rate + self.input_rate) // (2 * self.input_rate)
        need = self.latency + n_out
        n_total = -(-need * self.input_rate // self.output_rate)  # smallest input giving `need` outputs
        self.reset()
        skip, written, fed = self.latency, 0, 0
        trailing = (self.channels,)  # the layout of the caller's blocks, kept for the flush zeros
        while fed < n_total:
            take = min(block, n_total - fed)
            real = max(0, min(take, frames - fed))
            chunk = read(real) if real else np.zeros((0,) + trailing, np.float32)
            if chunk.shape[0] != real:
                raise EOFError(f"input ended after {fed + chunk.shape[0]} of {frames} samples")
            trailing = chunk.shape[1:]
            if real < take:  # past the end: flush with zeros
                chunk = np.concatenate([chunk, np.zeros((take - real,) + trailing, chunk.dtype)])
            y = self.process(chunk)
            cut = min(skip, y.shape[0])
            skip -= cut
            y = y[cut : cut + n_out - written]
            write(y)
            written += y.shape[0]
            fed += take
            if progress is not None:
                progress(real)
        stats = self.stats
        self.reset()
        self.stats = stats  # what happened to this stream stays readable
        return written

    def process_file_array(self, x: np.ndarray, block: int | None = None) -> np.ndarray:
        """A whole signal through `process_stream`: round(len * ratio) samples, time-aligned with `x`."""
        self._check(x)
        pos, parts = [0], []

        def read(k: int) -> np.ndarray:
            pos[0] += k
            return x[pos[0] - k : pos[0]]

        self.process_stream(read, x.shape[0], parts.append, block)
        return np.concatenate(parts).reshape((-1,) + x.shape[1:])


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
    "Stepper",
    "TorchStepper",
    "make_stepper",
    "process_offline",
]
