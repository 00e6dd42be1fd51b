"""Band merge: the given band comes from the input, the new band from the model at its trained level."""

import numpy as np
import pytest

from realtime.band_merge import FOLLOW_MAX_DB, BandMerge

SR = 48000


def tone(hz: float, n: int = 9600) -> np.ndarray:
    return np.sin(2 * np.pi * hz * np.arange(n) / SR).astype(np.float32)[None]


def merged(merge: BandMerge, dry: np.ndarray, wet: np.ndarray, blocks=(480,)) -> np.ndarray:
    d = merge.delay
    dry_delayed = np.concatenate([np.zeros((dry.shape[0], d), np.float32), dry[:, :-d]], axis=1)
    out, pos, i = [], 0, 0
    while pos < dry.shape[1]:
        n = min(blocks[i % len(blocks)], dry.shape[1] - pos)
        out.append(merge.process(dry[:, pos : pos + n], dry_delayed[:, pos : pos + n], wet[:, pos : pos + n]))
        pos, i = pos + n, i + 1
    return np.concatenate(out, axis=1)


def test_the_given_band_is_the_input_and_the_new_band_is_the_model_at_its_gain():
    merge = BandMerge(SR, 8000.0, -6.0, 1, model_latency=0)
    d = merge.delay
    dry = tone(1000)
    changed_low = dry + 0.5 * tone(3000)  # a model that damages the given band ...
    wet = changed_low + tone(12000)  # ... and adds a new band
    y = merged(merge, dry, wet)
    settled = slice(4 * d, None)
    expected = np.roll(dry + 10 ** (-6 / 20) * tone(12000), d, axis=1)
    assert np.max(np.abs(y[:, settled] - expected[:, settled])) < 1e-3  # 3 kHz damage: gone (-60 dB)


def test_a_model_that_changes_nothing_gives_the_input_delayed_exactly():
    merge = BandMerge(SR, 4000.0, -9.0, 2, model_latency=0)
    dry = np.random.default_rng(0).standard_normal((2, 5000)).astype(np.float32)
    y = merged(merge, dry, dry.copy(), blocks=(1, 7, 480, 33))
    np.testing.assert_array_equal(y[:, merge.delay :], dry[:, : -merge.delay])


@pytest.mark.parametrize("follow", [0.0, 0.6])
def test_block_partition_does_not_matter_and_reset_restarts(follow):
    rng = np.random.default_rng(1)
    dry, wet = (rng.standard_normal((1, 4000)).astype(np.float32) for _ in range(2))
    merge = BandMerge(SR, 8000.0, 0.0, 1, model_latency=0, level_follow=follow)
    one = merged(merge, dry, wet, blocks=(4000,))
    merge.reset()
    np.testing.assert_allclose(merged(merge, dry, wet, blocks=(3, 250, 1000)), one, atol=1e-6)


def test_cutoff_outside_the_band_is_refused():
    with pytest.raises(ValueError, match="cutoff_hz"):
        BandMerge(SR, 24000.0, 0.0, 1, model_latency=0)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


@pytest.mark.parametrize("follow", [0.0, 0.5, 1.0])
def test_level_follow_moves_the_new_band_toward_the_inputs_top_band_continued_at_1_over_f2(follow):
    cut, gain_db = 7200.0, -4.0
    merge = BandMerge(SR, cut, gain_db, 1, model_latency=0, level_follow=follow)
    top_amp, new_amp = 0.2, 0.5
    dry = top_amp * tone(6100, 19200)  # inside the top half-octave [cut / sqrt 2, cut]
    wet = dry + new_amp * tone(12000, 19200)
    y = merged(merge, dry, wet)
    new_band = (y - np.roll(dry, merge.delay, axis=1))[:, 9600:]  # settled: 40 envelope time constants
    # The rule: the top band's power, flat over [cut / sqrt 2, cut], continued as (f_top / f)^2 to Nyquist.
    low = cut / np.sqrt(2)
    f_top = np.sqrt(low * cut)
    rule_rms = top_amp / np.sqrt(2) * np.sqrt(f_top**2 * (1 / cut - 2 / SR) / (cut - low))
    model_rms = new_amp / np.sqrt(2)
    expected_db = (1 - follow) * 20 * np.log10(model_rms) + follow * 20 * np.log10(rule_rms) + gain_db
    assert 20 * np.log10(rms(new_band)) == pytest.approx(expected_db, abs=0.1)


def test_level_follow_never_lifts_a_silent_model():
    merge = BandMerge(SR, 7200.0, 0.0, 1, model_latency=0, level_follow=1.0)
    dry = tone(6100)
    y = merged(merge, dry, dry + 1e-4 * tone(12000))  # a whisper of a new band under a loud top band
    new_band = (y - np.roll(dry, merge.delay, axis=1))[:, 4800:]
    assert np.all(np.isfinite(y))
    assert rms(new_band) <= 1e-4 / np.sqrt(2) * 10 ** (FOLLOW_MAX_DB / 20) * 1.01


def test_level_follow_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="level_follow"):
        BandMerge(SR, 8000.0, 0.0, 1, model_latency=0, level_follow=1.5)
