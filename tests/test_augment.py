"""Randomised target augmentation: determinism, the requested colouring, and the sampler's use of it."""

import dataclasses
import math

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import welch

from models.train import degrade as dg
from models.train.augment import AugmentConfig, augment, tilt_db
from models.train.data import Clip, SegmentSampler

SR = 48000
NOTHING = AugmentConfig(tilt_prob=0.0, eq_prob=0.0, room_prob=0.0, mic_prob=0.0, noise_prob=0.0)
EVERYTHING = AugmentConfig(tilt_prob=1.0, eq_prob=1.0, room_prob=1.0, mic_prob=1.0, noise_prob=1.0)


def white(seconds: float, seed: int = 0) -> np.ndarray:
    return 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise bursts under a slow envelope, with pauses: a level that varies like speech."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0, None) ** 2
    return 0.3 * envelope * np.random.default_rng(seed).standard_normal(n)


def band_db(x: np.ndarray, lo: float, hi: float) -> float:
    f, p = welch(x, SR, nperseg=4096)
    return 10 * math.log10(p[(f >= lo) & (f < hi)].mean() + 1e-30)


def rms_db(x: np.ndarray) -> float:
    return 10 * math.log10(float(np.mean(x * x)) + 1e-30)


def test_same_rng_state_same_output_and_seeds_differ():
    x = speechlike(0.5)
    a = augment(x, SR, np.random.default_rng([0, 2, 7]), EVERYTHING)
    b = augment(x, SR, np.random.default_rng([0, 2, 7]), EVERYTHING)
    c = augment(x, SR, np.random.default_rng([0, 2, 8]), EVERYTHING)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert not np.allclose(a, x)


@pytest.mark.parametrize("rate", [44100, 48000])
def test_output_is_finite_float64_and_the_same_length(rate):
    for seed, x in enumerate((speechlike(0.3), np.zeros(5000), np.ones(7), white(0.2) * 1e-9)):
        for cfg in (AugmentConfig(), EVERYTHING):
            y = augment(x, rate, np.random.default_rng(seed), cfg)
            assert y.shape == x.shape and y.dtype == np.float64
            assert np.all(np.isfinite(y))
    assert np.array_equal(augment(np.zeros(5000), SR, np.random.default_rng(0), EVERYTHING), np.zeros(5000))


def test_disabled_or_no_stage_returns_the_input():
    x = speechlike(0.2)
    for cfg in (AugmentConfig(enabled=False), NOTHING):
        y = augment(x, SR, np.random.default_rng(1), cfg)
        assert np.array_equal(y, x) and y is not x


@pytest.mark.parametrize("slope", [3.0, -4.0])
def test_tilt_follows_the_requested_slope(slope):
    cfg = dataclasses.replace(
        NOTHING, tilt_prob=1.0, tilt_db_per_octave=(slope, slope), tilt_pivot_hz=(1000.0, 1000.0)
    )
    x = white(1.0, seed=3)
    y = augment(x, SR, np.random.default_rng(0), cfg)
    change = [band_db(y, f0 * 0.95, f0 * 1.05) - band_db(x, f0 * 0.95, f0 * 1.05) for f0 in (2000, 12000)]
    measured = (change[1] - change[0]) / math.log2(12000 / 2000)  # dB per octave
    assert measured == pytest.approx(slope, abs=0.25)
    assert abs(band_db(y, 100, 300) - band_db(x, 100, 300)) < 0.5  # well below the pivot: untouched


def test_tilt_is_clamped_to_18_db_at_20_khz():
    f = np.array([100.0, 20000.0, 24000.0])
    for slope in (6.0, -6.0):
        gain = tilt_db(f, slope, 1000.0)
        assert abs(gain[0]) < 0.1 and gain[1] == pytest.approx(math.copysign(18.0, slope))
        assert gain[2] == gain[1]  # held above 20 kHz
    gentle = tilt_db(f, 1.0, 4000.0)
    assert gentle[1] == pytest.approx(math.log2(5), abs=0.05)  # within the clamp: the slope as asked


def test_room_keeps_the_level_and_smears_in_time():
    cfg = dataclasses.replace(NOTHING, room_prob=1.0, room_rt60_s=(0.4, 0.4), room_wet=(0.3, 0.3))
    x = speechlike(1.0, seed=4)
    for seed in range(3):
        y = augment(x, SR, np.random.default_rng(seed), cfg)
        assert abs(rms_db(y) - rms_db(x)) < 2.0
        gap = slice(int(0.17 * SR), int(0.33 * SR))  # the envelope's pause: only the room's tail
        assert rms_db(y[gap]) > rms_db(x[gap]) + 20


def test_noise_lies_in_the_requested_range_below_the_signal():
    cfg = dataclasses.replace(NOTHING, noise_prob=1.0, noise_below_db=(45.0, 70.0))
    x = speechlike(0.5, seed=5)
    below = []
    for seed in range(12):
        y = augment(x, SR, np.random.default_rng(seed), cfg)
        below.append(rms_db(x) - rms_db(y - x))
    assert all(45.0 - 0.01 <= b <= 70.0 + 0.01 for b in below)
    assert max(below) - min(below) > 5  # drawn, not fixed
    fixed = dataclasses.replace(cfg, noise_below_db=(50.0, 50.0))
    for pink, name in ((1.0, "pink"), (0.0, "white")):
        y = augment(x, SR, np.random.default_rng(0), dataclasses.replace(fixed, pink_prob=pink))
        assert rms_db(x) - rms_db(y - x) == pytest.approx(50.0, abs=0.01), name


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="room_prob must be a probability"):
        AugmentConfig(room_prob=1.5)
    with pytest.raises(ValueError, match="tilt_pivot_hz must be a positive"):
        AugmentConfig(tilt_pivot_hz=(0.0, 1000.0))
    with pytest.raises(ValueError, match="eq_q must be"):
        AugmentConfig(eq_q=(4.0, 0.5))
    with pytest.raises(ValueError, match="room_wet must lie in"):
        AugmentConfig(room_wet=(0.1, 1.5))


# ---- the sampler ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("augment")
    found = []
    for i, name in enumerate(("a", "b")):
        path = root / f"{name}.wav"
        x = speechlike(0.4, seed=10 + i)
        sf.write(path, x, SR, subtype="FLOAT")
        found.append(Clip(path, x.size, name))
    return found


def test_sampler_examples_stay_deterministic_with_augmentation(two_clips):
    degrade = dg.DegradeConfig(SR, (8000, 16000))

    def sampler(aug):
        return SegmentSampler(two_clips, SR, 4800, degrade, seed=3, augment=aug)

    on, again, off = sampler(AugmentConfig()), sampler(AugmentConfig()), sampler(None)
    changed = 0
    for g in range(6):
        lr1, hr1, d1 = on.example(g)
        lr2, hr2, d2 = again.example(g)
        assert np.array_equal(lr1, lr2) and np.array_equal(hr1, hr2) and d1 == d2
        hr0 = off.example(g)[1]
        assert 0.3 <= np.max(np.abs(hr1)) <= 0.95 + 1e-6  # the peak is still renormalised
        changed += not np.allclose(hr1, hr0, atol=1e-4)
    assert changed >= 4  # most examples get at least one stage
    forced = sampler(EVERYTHING)
    assert all(not np.allclose(forced.example(g)[1], off.example(g)[1], atol=1e-4) for g in range(3))
