"""The offline driver: a whole stream through a block processor, latency compensated (file mode).

It drives any processor with the host contract (`process(block)`, `reset()`, `latency`, `stats`,
rates, `channels`, `model_block`) block by block, exactly as a live host would, drops the first
`latency` output samples and flushes the end out with zeros, so the written output is time-aligned
with the input and equal to what the live path plays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def flush_lengths(frames: int, latency: int, input_rate: int, output_rate: int) -> tuple[int, int]:
    """For a stream of `frames` input samples: (file mode's output length, round(frames * ratio); the
    input to feed, zeros past the end included, for that output to come out after `latency` samples)."""
    n_out = (2 * frames * output_rate + input_rate) // (2 * input_rate)
    n_total = -(-(latency + n_out) * input_rate // output_rate)  # smallest input giving latency + n_out
    return n_out, n_total


def process_stream(
    processor: Any,
    read: Callable[[int], np.ndarray],
    frames: int,
    write: Callable[[np.ndarray], object],
    block: int | None = None,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Run `frames` input samples through `processor`, latency compensated, block by block.

    `read(k)` returns the next k input samples ((k,) or (k, channels)); `write` receives the output
    in order: round(frames * ratio) samples in all, time-aligned with the input (the first `latency`
    samples are dropped, zeros are fed after the end to flush the rest out). Host blocks are `block`
    input samples (default: about one model block; it also sets the NaN/Inf guard's granularity);
    `progress(k)` is told how many input samples were consumed. The processor is reset before and
    after, except `stats`, which then hold this stream's counts. Returns the number of output samples
    written; EOFError if `read` runs dry early.
    """
    p = processor
    if block is None:
        block = -(-p.model_block * p.input_rate // p.model_rate)
    if block < 1:
        raise ValueError(f"block must be >= 1 input samples, got {block}")
    n_out, n_total = flush_lengths(frames, p.latency, p.input_rate, p.output_rate)
    p.reset()
    skip, written, fed = p.latency, 0, 0
    trailing = (p.channels,)  # the layout of the caller's blocks, kept for the flush zeros
    while fed < n_total:
        take = min(block, n_total - fed)
        real = max(0, min(take, frames - fed))
        chunk = read(real) if real else np.zeros((0,) + trailing, np.float32)
        if chunk.shape[0] != real:
            raise EOFError(f"input ended after {fed + chunk.shape[0]} of {frames} samples")
        trailing = chunk.shape[1:]
        if real < take:  # past the end: flush with zeros
            chunk = np.concatenate([chunk, np.zeros((take - real,) + trailing, chunk.dtype)])
        y = p.process(chunk)
        cut = min(skip, y.shape[0])
        skip -= cut
        y = y[cut : cut + n_out - written]
        write(y)
        written += y.shape[0]
        fed += take
        if progress is not None:
            progress(real)
    stats = p.stats
    p.reset()
    p.stats = stats  # what happened to this stream stays readable
    return written


def process_array(processor: Any, x: np.ndarray, block: int | None = None) -> np.ndarray:
    """A whole signal through `process_stream`: round(len * ratio) samples, time-aligned with `x`."""
    processor.check_block(x)
    pos, parts = [0], []

    def read(k: int) -> np.ndarray:
        pos[0] += k
        return x[pos[0] - k : pos[0]]

    process_stream(processor, read, x.shape[0], parts.append, block)
    return np.concatenate(parts).reshape((-1,) + x.shape[1:])
