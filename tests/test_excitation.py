"""The noise excitation: deterministic noise, an exact band split, streaming == offline."""

import numpy as np
import pytest
import torch

from models.dsp.level import band_edges, power_law_shape, shape_db
from models.excitation import PERIOD, NoiseBands, band_noise, hash_noise

SR = 48000


def test_hash_noise_is_fixed_and_standard():
    x = hash_noise(1 << 16)
    assert np.array_equal(x, hash_noise(1 << 16))  # a pure function of the index
    assert not np.array_equal(x, hash_noise(1 << 16, seed=1))
    assert abs(x.mean()) < 0.02 and abs(x.std() - 1) < 0.02
    # the first values are pinned: a change in the generator would silently change trained models
    np.testing.assert_allclose(x[:3], [0.54461087, 0.87459989, -0.79688502], rtol=1e-7)


def test_bands_partition_the_noise_above_low_hz():
    tables = band_noise(6, 3000.0, SR, period=1 << 12)
    assert tables.shape == (6, 1 << 12) and tables.dtype == np.float32
    np.testing.assert_allclose(np.sqrt(np.mean(tables.astype(np.float64) ** 2, axis=1)), 1.0, rtol=1e-5)
    spectra = np.abs(np.fft.rfft(tables.astype(np.float64), axis=1))
    freqs = np.fft.rfftfreq(1 << 12, 1 / SR)
    edges = band_edges(6, 3000.0, SR)
    for k in range(6):
        outside = (freqs < edges[k]) | (freqs > edges[k + 1])
        assert spectra[k, outside].max() < 1e-3 * spectra[k].max()
    assert np.all((spectra > 1e-3 * spectra.max()).sum(axis=0) <= 1)  # bands never overlap
    with pytest.raises(ValueError, match="low_hz"):
        band_edges(4, 30000.0, SR)


def test_shaped_bands_follow_the_level_shape_inside_each_band():
    """With the rule's shape each band keeps unit power but tilts as the shape does, so the bands
    together are noise with the shape's spectrum, not a staircase of flat steps."""
    shape = power_law_shape(5.0)  # 15 dB per octave: 5 dB across each of these bands
    period = 1 << 16
    tables = band_noise(6, 3000.0, SR, shape=shape, period=period).astype(np.float64)
    np.testing.assert_allclose(np.sqrt(np.mean(tables**2, axis=1)), 1.0, rtol=1e-5)
    power = np.abs(np.fft.rfft(tables, axis=1)) ** 2
    freqs = np.fft.rfftfreq(period, 1 / SR)
    edges = band_edges(6, 3000.0, SR)
    for k in range(6):
        lo, hi = edges[k], edges[k + 1]
        mid = np.sqrt(lo * hi)
        lower, upper = (freqs >= lo) & (freqs < mid), (freqs >= mid) & (freqs < hi)
        measured = 10 * np.log10(power[k, lower].mean() / power[k, upper].mean())
        expected = shape_db(shape, freqs[lower]).mean() - shape_db(shape, freqs[upper]).mean()
        assert expected > 2.0 and abs(measured - expected) < 0.5, (k, measured, expected)
    flat = band_noise(6, 3000.0, SR, period=period)
    assert not np.allclose(flat, tables)


def _blocks(module, gains, sizes, state):
    out, pos = [], 0
    for n in sizes:
        y, state = module.step(gains[..., pos : pos + n], state)
        out.append(y)
        pos += n
    return torch.cat(out, -1), state


def test_streaming_equals_offline_and_wraps_the_table():
    torch.manual_seed(0)
    module = NoiseBands(4, 3000.0, SR, smooth=16).eval()
    gains = torch.rand(2, 4, PERIOD + 1000)  # longer than the table: reads wrap around
    offline = module(gains)
    streamed, state = _blocks(module, gains, [1, 15, 4000, PERIOD - 20000, 16984], module.init_state(2))
    torch.testing.assert_close(streamed, offline, rtol=0, atol=1e-6)
    assert state["pos"].tolist() == [[1000.0], [1000.0]]
    # constant unit gains give the summed bands back, from the table's start
    flat = module(torch.ones(1, 4, 64))
    torch.testing.assert_close(flat[0, 15:], module.table.sum(0)[15:64])


def test_training_mode_starts_each_stream_at_a_random_place():
    module = NoiseBands(2, 3000.0, SR).train()
    torch.manual_seed(1)
    pos = module.init_state(8)["pos"]
    assert pos.unique().numel() > 1 and ((pos >= 0) & (pos < PERIOD)).all()
    assert module.eval().init_state(3)["pos"].abs().sum() == 0


def test_bad_gains_shape_is_a_clear_error():
    module = NoiseBands(3, 3000.0, SR)
    with pytest.raises(ValueError, match=r"\(batch, 3, samples\)"):
        module.step(torch.ones(1, 2, 10), module.init_state(1))


def test_frame_gains_are_the_moving_average_of_held_gains():
    frames = torch.rand(2, 3, 9)
    held = frames.repeat_interleave(16, dim=-1)
    by_frame = NoiseBands(3, 3000.0, SR, hop=16).eval()
    by_sample = NoiseBands(3, 3000.0, SR, smooth=16).eval()
    torch.testing.assert_close(by_frame(frames), by_sample(held))
    streamed, _ = _blocks(by_frame, frames, [1, 3, 5], by_frame.init_state(2))
    torch.testing.assert_close(streamed, by_frame(frames))
    with pytest.raises(ValueError, match="not both"):
        NoiseBands(3, 3000.0, SR, smooth=4, hop=16)
