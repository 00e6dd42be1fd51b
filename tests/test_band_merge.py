"""Band merge: the given band comes from the input, the new band from the model at the model's own level."""

import numpy as np
import pytest

from models.dsp.band_merge import BandMerge

SR = 48000


def tone(hz: float, n: int = 9600) -> np.ndarray:
    return np.sin(2 * np.pi * hz * np.arange(n) / SR).astype(np.float32)[None]


def merged(merge: BandMerge, dry: np.ndarray, wet: np.ndarray, blocks=(480,)) -> np.ndarray:
    d = merge.delay
    dry_delayed = np.concatenate([np.zeros((dry.shape[0], d), np.float32), dry[:, :-d]], axis=1)
    out, pos, i, state = [], 0, 0, merge.init_state(dry.shape[0])
    while pos < dry.shape[1]:
        n = min(blocks[i % len(blocks)], dry.shape[1] - pos)
        part = slice(pos, pos + n)
        y, state = merge.step(wet[:, part], dry[:, part], dry_delayed[:, part], state)
        out.append(y)
        pos, i = pos + n, i + 1
    return np.concatenate(out, axis=1)


def test_the_given_band_is_the_input_and_the_new_band_is_the_model_unscaled():
    merge = BandMerge(SR, 8000.0)
    d = merge.delay
    dry = tone(1000)
    changed_low = dry + 0.5 * tone(3000)  # a model that damages the given band ...
    wet = changed_low + tone(12000)  # ... and adds a new band
    y = merged(merge, dry, wet)
    settled = slice(4 * d, None)
    expected = np.roll(dry + tone(12000), d, axis=1)
    assert np.max(np.abs(y[:, settled] - expected[:, settled])) < 1e-3  # 3 kHz damage: gone (-60 dB)


def test_a_model_that_changes_nothing_gives_the_input_delayed_exactly():
    merge = BandMerge(SR, 4000.0)
    dry = np.random.default_rng(0).standard_normal((2, 5000)).astype(np.float32)
    y = merged(merge, dry, dry.copy(), blocks=(1, 7, 480, 33))
    np.testing.assert_array_equal(y[:, merge.delay :], dry[:, : -merge.delay])


def test_block_partition_does_not_matter():
    rng = np.random.default_rng(1)
    dry, wet = (rng.standard_normal((1, 4000)).astype(np.float32) for _ in range(2))
    merge = BandMerge(SR, 8000.0)
    one = merged(merge, dry, wet, blocks=(4000,))
    np.testing.assert_allclose(merged(merge, dry, wet, blocks=(3, 250, 1000)), one, atol=1e-6)


def test_cutoff_outside_the_band_is_refused():
    with pytest.raises(ValueError, match="cutoff_hz"):
        BandMerge(SR, 24000.0)
