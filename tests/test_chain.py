"""StreamChain: streams stacked into one batch get exactly what each would get alone."""

from __future__ import annotations

import numpy as np
import pytest

from models.dsp.chain import StreamChain
from realtime.generators import load_shipped


@pytest.mark.parametrize(
    "model, rate, output_rate, chunk",
    [
        ("speech", 16000, 48000, 160),
        ("speech", 8000, 48000, 80),
        ("speech", 44100, 48000, 441),
        ("music", 11025, 44100, 128),
    ],
)
def test_stacked_streams_equal_each_stream_alone(model, rate, output_rate, chunk):
    graph = load_shipped(model)
    chain = StreamChain(
        graph, rate, output_rate, 1, graph.block_size, rate / 2 if rate < graph.sample_rate else None
    )
    assert chain.aligned_chunk() == chunk
    rng = np.random.default_rng(0)
    xs = [(0.1 * rng.standard_normal(chunk * 6)).astype(np.float32) for _ in range(3)]
    alone = []
    for x in xs:  # one stream, odd host blocks
        state, parts = chain.init_state(1), []
        for i in range(0, x.size, 37):
            y, state = chain.step(x[None, i : i + 37], state)
            parts.append(y[0])
        alone.append(np.concatenate(parts))
    # Stacked in aligned chunks; the third stream joins two chunks late.
    states, outs, start = [chain.init_state(1) for _ in xs], [[], [], []], [0, 0, 2]
    for k in range(8):
        live = [i for i in range(3) if 0 <= k - start[i] < 6]
        big = chain.stack([states[i] for i in live])
        x = np.stack([xs[i][(k - start[i]) * chunk : (k - start[i] + 1) * chunk] for i in live])
        y, big = chain.step(x, big)
        for row, i, state in zip(y, live, chain.unstack(big, [1] * len(live))):
            states[i] = state
            outs[i].append(row)
    for i in range(3):
        together = np.concatenate(outs[i])
        np.testing.assert_allclose(together, alone[i][: together.size], atol=1e-5, rtol=0)
        assert together.size == alone[i].size


def test_streams_at_different_points_are_not_stacked():
    graph = load_shipped("speech")
    chain = StreamChain(graph, 16000, 48000, 1, graph.block_size, 8000.0)
    a, b = chain.init_state(1), chain.init_state(1)
    _, b = chain.step(np.zeros((1, 100), np.float32), b)
    with pytest.raises(ValueError, match="different points"):
        chain.stack([a, b])
