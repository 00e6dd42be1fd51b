"""Polyphase resampler: exact lengths and delay, partition-independent streaming, filter quality."""

from __future__ import annotations

from math import gcd

import numpy as np
import pytest

from models.dsp.resample import SUPPORTED_RATES, Resampler, check_rate

PAIRS = sorted(
    {(r, t) for t in (44100, 48000) for r in SUPPORTED_RATES if r != t}
    | {(t, r) for t in (44100, 48000) for r in SUPPORTED_RATES if r != t}
)


def _run(r: Resampler, x: np.ndarray, lengths) -> list[np.ndarray]:
    state, outs, i = r.init_state(x.shape[0]), [], 0
    for n in lengths:
        y, state = r.step(x[:, i : i + n], state)
        outs.append(y)
        i += n
    assert i == x.shape[1]
    return outs


def _random_lengths(rng: np.random.Generator, total: int, high: int) -> list[int]:
    lengths = []
    while sum(lengths) < total:
        lengths.append(min(int(rng.integers(0, high)), total - sum(lengths)))
    return lengths


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
def test_streaming_any_partition_equals_one_pass(pair):
    rng = np.random.default_rng(sum(pair))
    r = Resampler(*pair)
    x = rng.standard_normal((2, 3000)).astype(np.float32)
    (whole,) = _run(r, x, [x.shape[1]])
    lengths = _random_lengths(rng, x.shape[1], 60) + [0]
    outs = _run(r, x, lengths)
    # After every call exactly floor(n * L / M) samples have come out in total.
    assert [sum(o.shape[1] for o in outs[: i + 1]) for i in range(len(outs))] == [
        r.output_length(sum(lengths[: i + 1])) for i in range(len(lengths))
    ]
    assert whole.dtype == np.float32 and whole.shape == (2, 3000 * pair[1] // pair[0])
    np.testing.assert_array_equal(np.concatenate(outs, axis=1), whole)
    ones = _run(r, x[:, :400], [1] * 400)
    np.testing.assert_array_equal(np.concatenate(ones, axis=1), whole[:, : r.output_length(400)])


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
@pytest.mark.parametrize("input_delay", [0, 37])
def test_latency_is_the_measured_impulse_delay(pair, input_delay):
    r = Resampler(*pair, input_delay=input_delay)
    j = 3 * (pair[0] // gcd(*pair))
    x = np.zeros((1, input_delay + j + 4 * r.latency * pair[0] // pair[1] + 200))
    x[0, input_delay] = 1.0
    (y,) = _run(r, x, [x.shape[1]])
    y = y[0]
    assert int(np.argmax(np.abs(y))) == r.latency
    # Linear phase: the response is symmetric about the reported delay, so the delay is exact.
    side = np.arange(1, r.latency + 1)
    np.testing.assert_allclose(y[r.latency - side], y[r.latency + side], atol=1e-12)
    # A later impulse lands later by exactly j * out/in samples.
    x2 = np.roll(x, j, axis=1)
    (y2,) = _run(r, x2, [x2.shape[1]])
    assert int(np.argmax(np.abs(y2[0]))) == r.latency + j * pair[1] // pair[0]


def _sine_fit(y: np.ndarray, f: float, rate: int, t0: int) -> tuple[float, float]:
    """(amplitude of the best-fitting sine at f, rms of what is left) over y[t0:]."""
    t = np.arange(t0, y.size) / rate
    basis = np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y[t0:], rcond=None)
    rest = y[t0:] - basis @ coef
    return float(np.hypot(*coef)), float(np.sqrt(np.mean(rest**2)))


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
def test_sine_passband_flat_images_and_aliases_below_80db(pair):
    r = Resampler(*pair)
    rate_in, rate_out = pair
    nyquist = min(pair) / 2
    n = rate_in // 5
    t = np.arange(n) / rate_in
    settle = 2 * r.latency + 8
    for frac in (0.05, 0.5, 0.9):
        f = frac * nyquist
        (y,) = _run(r, np.sin(2 * np.pi * f * t)[None], [n])
        amp, rest = _sine_fit(y[0], f, rate_out, settle)
        assert abs(20 * np.log10(amp)) < 0.002, f"{f:.0f} Hz: gain {20 * np.log10(amp):.4f} dB"
        # Everything that is not the sine itself: images, aliases, rounding. Sine rms = 1/sqrt(2).
        assert 20 * np.log10(rest * np.sqrt(2)) < -80, (
            f"{f:.0f} Hz: residual {20 * np.log10(rest * 1.414):.1f} dB"
        )
    if rate_in > rate_out:  # content above the output Nyquist must not fold back
        for frac in (1.0, 1.01, 1.2, 1.6):
            f = frac * nyquist
            if f >= rate_in / 2:
                continue
            (y,) = _run(r, np.sin(2 * np.pi * f * t)[None], [n])
            level = np.sqrt(np.mean(y[0, settle:] ** 2)) * np.sqrt(2)
            assert 20 * np.log10(level + 1e-300) < -80, f"{f:.0f} Hz leaks at {20 * np.log10(level):.1f} dB"


@pytest.mark.parametrize("input_delay", [0, 5])
def test_same_rate_is_identity(input_delay):
    r = Resampler(48000, 48000, input_delay=input_delay)
    assert r.latency == input_delay
    x = np.random.default_rng(0).standard_normal((1, 100))
    outs = _run(r, x, [0, 1, 30, 69])
    np.testing.assert_array_equal(np.concatenate(outs, axis=1), x)


def test_step_is_pure():
    r = Resampler(16000, 48000)
    state = r.init_state(1)
    x = np.random.default_rng(1).standard_normal((1, 64))
    y1, _ = r.step(x, state)
    y2, s2 = r.step(x, state)
    np.testing.assert_array_equal(y1, y2)
    assert not np.any(state["history"]) and int(state["phase"]) == 0 and np.any(s2["history"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="in_rate"):
        Resampler(0, 48000)
    with pytest.raises(ValueError, match="out_rate"):
        Resampler(16000, 48000.0)
    with pytest.raises(ValueError, match="input_delay"):
        Resampler(16000, 48000, input_delay=-1)
    with pytest.raises(ValueError, match="passband"):
        Resampler(16000, 48000, passband=1.0)
    r = Resampler(16000, 48000)
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        r.step(np.zeros(10), r.init_state(1))
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        r.step(np.zeros((1, 10), np.int16), r.init_state(1))
    with pytest.raises(ValueError, match="batch 2"):
        r.step(np.zeros((2, 10)), r.init_state(1))
    with pytest.raises(ValueError, match="16000, 22050"):
        check_rate("input_rate", 96000)
