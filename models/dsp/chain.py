"""The host's signal chain as one pure streaming piece: any block size in, fixed model blocks inside.

    x (input_rate) -> Resampler -> model-rate FIFO -> model step -> band merge -> dry/wet mix
        -> Resampler -> output FIFO (pre-filled) -> y (output_rate)

`StreamChain` follows the project's step contract on numpy (channels, samples) float32 blocks:

    state = chain.init_state()
    y, state = chain.step(x, state, bypass=False, dry_wet=1.0)   # pure: `state` is never mutated

Each step hands back exactly the output owed for the input seen so far, floor(total_in * ratio), so
any partition of the input gives bit-identical output. The output FIFO's pre-fill is the smallest
that never runs dry for any block size; with both resamplers' delays, the model's latency and the
band merge's delay it makes up `latency`.

The dry signal (the resampled input, lined up with the output) comes from one delay line, `model
latency + merge delay` samples long, read at two taps: the band merge subtracts the input lined up
with the model's output, and the output takes the input lined up with the merged result.

The chain knows the generator only as a `Stepper` (the step contract on numpy blocks): a torch
model (`models.stepper.TorchStepper`) or an exported graph (`export.runtime.OnnxStreamer`). It
imports neither torch nor any other livesr layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from math import gcd
from typing import Any, Protocol

import numpy as np

from .band_merge import BandMerge
from .level import check_new_band_db, level_state
from .resample import PASSBAND, Resampler, ResamplerState

# Enumerating the FIFO need over one period costs O(period); past this a proven bound is used.
_MAX_PERIOD = 1 << 22


class Stepper(Protocol):
    """What the chain runs: the streaming step contract on numpy float32 (batch, samples) blocks.

    Optional: `config` (the generator's config, for its band level), `state_finite(state)` (a check
    for states that are not numpy arrays) and `with_state_values` (needed with a band level).
    """

    sample_rate: int
    block_multiple: int
    latency: int
    block_size: int | None  # a fixed block length (an exported graph), or None for any multiple

    def init_state(self, batch: int) -> dict[str, Any]: ...

    def step(self, x: np.ndarray, state: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]: ...


def arrays_finite(state: dict[str, Any]) -> bool:
    """Whether every floating numpy array in a stepper's state is finite."""
    return all(
        not (isinstance(v, np.ndarray) and v.dtype.kind == "f") or bool(np.isfinite(v).all())
        for v in state.values()
    )


def prefill(input_rate: int, model_rate: int, output_rate: int, block: int) -> int:
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


@dataclass(frozen=True)
class ChainState:
    """Everything a `StreamChain` carries between steps (a new object per step; arrays never mutated)."""

    resample_in: ResamplerState
    resample_out: ResamplerState
    dry: np.ndarray  # the one dry delay line: model latency + merge delay samples
    pending: np.ndarray  # model-rate samples waiting for a whole model block
    fifo: np.ndarray  # output samples made but not yet owed
    n_in: int  # input samples seen
    n_out: int  # output samples handed out
    model: dict[str, Any] | None  # the generator's state; None until its first step (and after a bypass)
    merge: np.ndarray | None  # the band merge's context (None without a band merge)
    model_steps: int = 0
    state_resets: int = 0  # steps whose output or state went non-finite, so the model restarted


class StreamChain:
    """The host chain around one generator for `channels` streams run as a batch.

    Args:
        stepper: the generator on the numpy step contract.
        input_rate, output_rate: host rates (Hz).
        channels: streams (or channels) run as one batch through the model.
        model_block: model block length in model-rate samples (a multiple of `block_multiple`).
        band_edge_hz: where the input's band ends (None: unknown, the generator runs alone). With an
            edge the output keeps the input below `PASSBAND` x the edge (the band merge) and the new
            band's level follows the input's top band (`models.dsp.level`, when the stepper has a
            config). Between the passband edge and the edge the upsampled input already rolls off,
            and only the model can fill that gap.
        new_band_db: a listener's trim of the new band's level, dB from the fitted rule's (no effect
            without a band edge or a generator without a band level); `set_new_band_db` changes it.
    """

    def __init__(
        self,
        stepper: Stepper,
        input_rate: int,
        output_rate: int,
        channels: int,
        model_block: int,
        band_edge_hz: float | None = None,
        new_band_db: float = 0.0,
    ) -> None:
        self.stepper = stepper
        self.input_rate, self.output_rate = int(input_rate), int(output_rate)
        self.model_rate = int(stepper.sample_rate)
        self.channels, self.model_block = int(channels), int(model_block)
        self.band_edge_hz = band_edge_hz
        crossover_hz = PASSBAND * band_edge_hz if band_edge_hz is not None else None
        self.crossover_hz = crossover_hz  # the output takes the model's band above it
        self.merge = BandMerge(self.model_rate, crossover_hz) if crossover_hz is not None else None
        self._state_finite = getattr(stepper, "state_finite", arrays_finite)
        self.set_new_band_db(new_band_db)
        merge_delay = self.merge.delay if self.merge is not None else 0
        # Delay from the model's input to the merged output, at the model rate.
        self.model_latency = int(stepper.latency) + merge_delay
        self._in = Resampler(self.input_rate, self.model_rate)
        self._out = Resampler(
            self.model_rate, self.output_rate, input_delay=self._in.latency + self.model_latency
        )
        self.prefill = prefill(self.input_rate, self.model_rate, self.output_rate, self.model_block)
        self.latency = self.prefill + self._out.latency

    def copy(self) -> StreamChain:
        """The same chain with its own resampler scratch buffers, for another thread."""
        return StreamChain(
            self.stepper,
            self.input_rate,
            self.output_rate,
            self.channels,
            self.model_block,
            self.band_edge_hz,
            self.new_band_db,
        )

    def set_new_band_db(self, value: float) -> None:
        """Trim the new band's level to `value` dB from the fitted rule's, for model states made from
        now on (`with_level` moves a running stream's)."""
        self.new_band_db = check_new_band_db(value)
        self.level_values = (  # empty for a stepper without a config or a band level
            level_state(
                getattr(self.stepper, "config", None), self.band_edge_hz, self.crossover_hz, self.new_band_db
            )
            if self.crossover_hz is not None
            else {}
        )

    def with_level(self, state: ChainState) -> ChainState:
        """`state` with its generator's band level set to this chain's (after `set_new_band_db`)."""
        if state.model is None or not self.level_values:
            return state
        return replace(state, model=self.stepper.with_state_values(state.model, self.level_values))

    def aligned_chunk(self) -> int:
        """The shortest input length (a whole number of model blocks) after which the chain is back at
        the same point of its period: both resamplers' phases, the model-rate FIFO and the output FIFO
        are where they started. Streams fed in such chunks can be stepped together (`stack`)."""
        up_in = Fraction(self.model_rate, self.input_rate)
        down_out = Fraction(self.output_rate, self.model_rate).denominator
        whole = self.model_block * down_out // gcd(self.model_block, down_out)  # model samples per step
        # chunk = m * up_in.denominator input samples -> m * up_in.numerator model samples, a multiple of `whole`
        m = whole // gcd(whole, up_in.numerator)
        return m * up_in.denominator

    def stack(self, states: Sequence[ChainState]) -> ChainState:
        """One state whose rows are the given streams' rows, to step them as one batch.

        Every stream must be at the same point of the chain's period (fed in `aligned_chunk` pieces);
        the counters are the first stream's (with aligned chunks every stream is owed the same
        output per step). Needs a stepper with `stack_states` (an exported graph's runtime).
        """
        if not states:
            raise ValueError("stack needs at least one stream state")
        first = states[0]
        for s in states[1:]:
            if (
                int(s.resample_in["phase"]) != int(first.resample_in["phase"])
                or int(s.resample_out["phase"]) != int(first.resample_out["phase"])
                or s.pending.shape[1] != first.pending.shape[1]
                or s.fifo.shape[1] != first.fifo.shape[1]
            ):
                raise ValueError("streams at different points of the chain's period cannot be stacked")
        models = [self.init_model_state(s.dry.shape[0]) if s.model is None else s.model for s in states]
        merges = None
        if self.merge is not None:
            merges = np.concatenate(
                [self.merge.init_state(s.dry.shape[0]) if s.merge is None else s.merge for s in states]
            )

        def rows(get: Any) -> np.ndarray:
            return np.concatenate([get(s) for s in states])

        return replace(
            first,
            resample_in={
                "history": rows(lambda s: s.resample_in["history"]),
                "phase": first.resample_in["phase"],
            },
            resample_out={
                "history": rows(lambda s: s.resample_out["history"]),
                "phase": first.resample_out["phase"],
            },
            dry=rows(lambda s: s.dry),
            pending=rows(lambda s: s.pending),
            fifo=rows(lambda s: s.fifo),
            model=self.stepper.stack_states(models),
            merge=merges,
        )

    def unstack(self, state: ChainState, rows: Sequence[int]) -> list[ChainState]:
        """The inverse of `stack`: one state per stream, stream i owning `rows[i]` rows."""
        edges = np.cumsum([0, *rows])
        models = (
            self.stepper.split_state(state.model, list(rows))
            if state.model is not None
            else [None] * len(rows)
        )

        def part(a: np.ndarray | None, i: int) -> np.ndarray | None:
            return None if a is None else a[edges[i] : edges[i + 1]]

        return [
            replace(
                state,
                resample_in={
                    "history": part(state.resample_in["history"], i),
                    "phase": state.resample_in["phase"],
                },
                resample_out={
                    "history": part(state.resample_out["history"], i),
                    "phase": state.resample_out["phase"],
                },
                dry=part(state.dry, i),
                pending=part(state.pending, i),
                fifo=part(state.fifo, i),
                model=models[i],
                merge=part(state.merge, i),
            )
            for i in range(len(rows))
        ]

    def output_length(self, n_in_total: int) -> int:
        """Output samples handed out after `n_in_total` input samples: floor(n * output/input rate)."""
        return n_in_total * self.output_rate // self.input_rate

    def init_state(self, batch: int | None = None) -> ChainState:
        """A fresh stream of `batch` rows (default: `channels`): silence in every buffer; the model's
        state is made at its first step."""
        c = self.channels if batch is None else int(batch)
        return ChainState(
            resample_in=self._in.init_state(c),
            resample_out=self._out.init_state(c),
            dry=np.zeros((c, self.model_latency), np.float32),
            pending=np.zeros((c, 0), np.float32),
            fifo=np.zeros((c, self.prefill), np.float32),
            n_in=0,
            n_out=0,
            model=None,
            merge=None,
        )

    def init_model_state(self, batch: int | None = None) -> dict[str, Any]:
        """The generator's initial state for `batch` rows (default: `channels`), with the band level
        set for this chain's band edge."""
        state = self.stepper.init_state(self.channels if batch is None else int(batch))
        return self.stepper.with_state_values(state, self.level_values) if self.level_values else state

    def step(
        self, x: np.ndarray, state: ChainState, bypass: bool = False, dry_wet: float = 1.0
    ) -> tuple[np.ndarray, ChainState]:
        """One finite (rows, n) float32 block in; the (rows, k) output owed for it out. Rows are the
        state's batch: `channels` for one stream, or streams stacked by a server (`init_state(batch)`).

        `bypass`: output the dry signal only and skip the model (its state restarts from
        `init_model_state` at the next step without bypass). `dry_wet`: 1.0 = the merged model
        output, 0.0 = dry, mixed at the model rate, time-aligned.
        """
        u, resample_in = self._in.step(x, state.resample_in)
        pending = np.concatenate([state.pending, u], axis=1)
        n_blocks = pending.shape[1] // self.model_block
        ready, pending = np.split(pending, [n_blocks * self.model_block], axis=1)
        state = replace(state, resample_in=resample_in, pending=pending)
        if bypass:
            state = replace(state, model=None, merge=None)
        outs = []
        for block in np.split(ready, n_blocks, axis=1) if n_blocks else ():
            out, state = self._model_block(block, state, bypass, dry_wet)
            outs.append(out)
        mixed = np.concatenate(outs, axis=1) if outs else np.zeros((x.shape[0], 0), np.float32)
        y, resample_out = self._out.step(mixed, state.resample_out)
        fifo = np.concatenate([state.fifo, y], axis=1)
        n_in = state.n_in + x.shape[1]
        count = self.output_length(n_in) - state.n_out
        if count > fifo.shape[1]:
            raise RuntimeError(f"output FIFO ran dry ({fifo.shape[1]} < {count}): pre-fill too small")
        state = replace(
            state, resample_out=resample_out, fifo=fifo[:, count:], n_in=n_in, n_out=state.n_out + count
        )
        return fifo[:, :count], state

    def _model_block(
        self, block: np.ndarray, state: ChainState, bypass: bool, dry_wet: float
    ) -> tuple[np.ndarray, ChainState]:
        (rows, n), tap = block.shape, self.model_latency - int(self.stepper.latency)
        line = np.concatenate([state.dry, block], axis=1)
        state = replace(state, dry=line[:, n:])
        dry = line[:, :n]  # lined up with the merged output
        if bypass:
            return dry, state
        if state.model is None:  # first step, or the first after a bypass
            state = replace(state, model=self.init_model_state(rows), merge=None)
        y, model = self.stepper.step(np.ascontiguousarray(block), state.model)
        y = np.asarray(y, dtype=np.float32)
        y_ok = bool(np.isfinite(y).all())
        if y_ok and self._state_finite(model):
            state = replace(state, model=model, model_steps=state.model_steps + 1)
        else:
            state = replace(
                state,
                model=self.init_model_state(rows),
                model_steps=state.model_steps + 1,
                state_resets=state.state_resets + 1,
            )
        if not y_ok:
            return dry, state
        if self.merge is not None:
            context = state.merge if state.merge is not None else self.merge.init_state(rows)
            y, context = self.merge.step(y, line[:, tap : tap + n], dry, context)
            state = replace(state, merge=context)
        if dry_wet == 1.0:
            return y, state
        return (dry_wet * y + (1.0 - dry_wet) * dry).astype(np.float32), state
