"""The live engine without a device: ring buffers, and the callback driven block by block.

The callback and the worker steps are called directly in a fixed order, so "the worker is late" is a
schedule (which callbacks run without the worker having processed the previous block), not a clock.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from _realtime_models import DelayGain

from realtime.engine import Engine, SampleRing, format_summary
from realtime.processor import Processor

RATE = 48000
BLOCK = 480
GAIN = 0.5


def tones(n: int, rate: int = RATE) -> np.ndarray:
    t = np.arange(n) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1000 * t + 1.0)).astype(np.float32)


def make_engine(input_rate: int = RATE, output_rate: int = RATE, blocksize: int = BLOCK, **kw) -> Engine:
    proc = Processor(DelayGain(output_rate, delay=7, gain=GAIN), input_rate, output_rate, backend="torch")
    return Engine(proc, proc.dry_path(), blocksize, separate_streams=input_rate != output_rate, **kw)


def references(engine: Engine, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wet and dry outputs of fresh copies of the engine's paths fed the same host blocks."""
    proc = Processor(
        DelayGain(engine.output_rate, delay=7, gain=GAIN),
        engine.input_rate,
        engine.output_rate,
        backend="torch",
    )
    dry = proc.dry_path()
    blocks = [x[i : i + engine.blocksize] for i in range(0, len(x), engine.blocksize)]
    return np.concatenate([proc.process(b) for b in blocks]), np.concatenate([dry.process(b) for b in blocks])


def drive(
    engine: Engine, x: np.ndarray, late: range = range(0), starve_from: int | None = None
) -> np.ndarray:
    """Run `x` through the engine's callbacks; during callbacks in `late` the worker has done nothing.

    Before each other callback the worker catches up on everything that has arrived (as a worker that
    was stalled and then runs flat out would). The dry path always keeps up.
    """
    out = []
    ratio = engine.output_rate / engine.input_rate
    for k in range(len(x) // engine.blocksize):
        while engine.pump_dry():
            pass
        if k not in late and (starve_from is None or k < starve_from):
            while engine.pump():
                pass
        block = x[k * engine.blocksize : (k + 1) * engine.blocksize, None]
        outdata = np.full((round(engine.blocksize * ratio), engine.channels), np.nan, np.float32)
        if engine.separate_streams:
            engine.input_callback(block, len(block), None, None)
            engine.output_callback(outdata, len(outdata), None, None)
        else:
            engine.callback(block, outdata, len(block), None, None)
        out.append(outdata[:, 0])
    return np.concatenate(out)


def delayed(y: np.ndarray, d: int, n: int) -> np.ndarray:
    return np.concatenate([np.zeros(d, y.dtype), y])[:n]


# ---- ring buffer --------------------------------------------------------------------------------------
def test_ring_round_trips_across_the_wrap():
    ring = SampleRing(10, 2)
    data = np.arange(34, dtype=np.float32).reshape(17, 2)
    ring.write(data[:7])
    out = np.empty((7, 2), np.float32)
    ring.read_into(out, 0)
    np.testing.assert_array_equal(out, data[:7])
    ring.write(data[7:])  # wraps: only the last 10 samples stay valid
    assert ring.span == (7, 17)
    assert ring.holds(7, 17) and not ring.holds(6, 10)
    out = np.empty((10, 2), np.float32)
    ring.read_into(out, 7)
    np.testing.assert_array_equal(out, data[7:])


def test_ring_guard_skips_late_samples_and_refuses_overwriting_unread_ones():
    ring = SampleRing(8, 1)
    ring.fill_zeros(3)
    ring.reader_pos = 5  # the reader has moved past [3, 5) while nothing arrived
    assert ring.write(np.ones((4, 1), np.float32), guard_reader=True)
    assert ring.span == (5, 7)  # the late samples 3 and 4 were dropped
    ring.reader_pos = 6
    assert not ring.write(np.ones((8, 1), np.float32), guard_reader=True)  # would reach 15 > 6 + 8
    assert ring.span == (15, 15) and not ring.holds(6, 7)


def test_ring_intact_detects_an_overwritten_reader():
    ring = SampleRing(16, 1)
    ring.write(np.zeros((12, 1), np.float32))
    assert ring.intact(0, margin=4)
    ring.write(np.zeros((4, 1), np.float32))
    assert not ring.intact(0, margin=4)  # a write in progress could reach slot 0 again
    assert ring.intact(4, margin=4)


# ---- engine -------------------------------------------------------------------------------------------
def test_on_time_output_is_the_wet_signal_delayed_by_the_handoff():
    engine = make_engine()
    x = tones(40 * BLOCK)
    wet, dry = references(engine, x)
    np.testing.assert_allclose(wet, GAIN * dry, atol=1e-7)  # the dry path lines up with the model
    out = drive(engine, x)
    np.testing.assert_array_equal(out, delayed(wet, engine.handoff, len(out)))
    assert engine.stats.misses == 0 and engine.stats.callbacks == 40


def test_impulse_comes_out_at_the_reported_latency():
    engine = make_engine()
    x = np.zeros(30 * BLOCK, np.float32)
    x[1234] = 1.0
    out = drive(engine, x)
    summary = engine.summary()
    assert int(np.argmax(np.abs(out))) == 1234 + summary["latency_samples"]
    assert out.max() == pytest.approx(GAIN, abs=1e-6)
    expected_ms = 1e3 * summary["latency_samples"] / RATE
    assert summary["reported_latency_ms"] == pytest.approx(expected_ms)
    assert summary["handoff_ms"] == pytest.approx(1e3 * (BLOCK + engine.fade) / RATE)


@pytest.mark.parametrize(
    ("input_rate", "block", "slack"),
    [(48000, 480, 0), (16000, 160, 1)],  # separate streams hold one more block: one late pump is absorbed
    ids=["duplex-48k", "separate-16k-48k"],
)
def test_late_worker_plays_the_dry_signal_cross_faded_and_stays_in_sync(input_rate, block, slack):
    engine = make_engine(input_rate, RATE, block, crossfade_ms=2.0)
    x = tones(40 * block, input_rate)
    wet, dry = references(engine, x)
    first, last = 10, 16  # callbacks 10..15 find no new wet block; the worker catches up before 16
    out = drive(engine, x, late=range(first, last))
    n, fade, h, ob = len(out), engine.fade, engine.handoff, engine.out_blocksize
    assert fade == 96 and ob == 480
    wet_al, dry_al = delayed(wet, h, n).astype(np.float64), delayed(dry, h, n).astype(np.float64)

    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)
    w = np.ones(n)
    a, b = (first + slack) * ob, last * ob
    w[a : a + fade] = 1.0 - ramp
    w[a + fade : b] = 0.0
    w[b : b + fade] = ramp
    np.testing.assert_allclose(out, w * wet_al + (1 - w) * dry_al, atol=2e-7)
    assert engine.stats.misses == last - first - slack
    assert engine.stats.dry_gaps == 0
    # In sync afterwards: exactly the wet samples the on-time engine would play there.
    np.testing.assert_array_equal(out[b + fade :], wet_al[b + fade :].astype(np.float32))
    # No click: the largest sample-to-sample step stays that of the signals themselves.
    steps = np.abs(np.diff(out[a - ob : b + ob]))
    assert steps.max() <= 1.02 * np.abs(np.diff(dry_al)).max()


def test_a_hard_switch_would_click_so_the_check_above_can_fail():
    x = tones(4 * BLOCK).astype(np.float64)
    hard = np.concatenate([GAIN * x[:1000], x[1000:]])
    assert np.abs(np.diff(hard)).max() > 1.5 * np.abs(np.diff(x)).max()


@pytest.mark.parametrize(
    "limits", [{"ring_seconds": 0.0}, {"max_backlog_s": 0.05}], ids=["ring-overrun", "backlog-limit"]
)
def test_a_worker_too_far_behind_resynchronises(limits):
    engine = make_engine(**limits)  # a ring of 8 host blocks, or at most 5 blocks of backlog
    x = tones(40 * BLOCK)
    out = drive(engine, x, late=range(5, 20))
    summary = engine.summary()
    assert summary["resyncs"] == 1
    assert summary["misses"] >= 15
    total = summary["latency_samples"]
    expected = delayed(GAIN * x, total, len(out))
    # Back on the wet signal, at the same total latency, from the restart on (after the fade-in).
    back = np.flatnonzero(np.abs(out - expected) > 1e-6).max() + 1
    assert back <= 24 * BLOCK
    np.testing.assert_allclose(out[back:], expected[back:], atol=1e-6)
    assert np.abs(out[back:]).max() > 0.2


def test_separate_streams_with_different_rates_stay_exact():
    engine = make_engine(input_rate=16000, output_rate=48000, blocksize=160)
    assert engine.out_blocksize == 480 and engine.handoff == 2 * 480 + engine.fade
    x = tones(50 * 160, rate=16000)
    wet, _ = references(engine, x)
    out = drive(engine, x)
    np.testing.assert_array_equal(out, delayed(wet, engine.handoff, len(out)))
    assert engine.stats.misses == 0


def test_a_starved_output_plays_the_dry_signal_forever_without_drift():
    engine = make_engine()
    x = tones(30 * BLOCK)
    _, dry = references(engine, x)
    out = drive(engine, x, starve_from=5)
    a = 5 * BLOCK + engine.fade
    np.testing.assert_allclose(out[a:], delayed(dry, engine.handoff, len(out))[a:], atol=1e-7)
    assert engine.stats.misses == 25


def test_xrun_flags_are_counted():
    sd = pytest.importorskip("sounddevice")
    engine = make_engine()
    flags = sd.CallbackFlags()
    flags.output_underflow = True
    block = np.zeros((BLOCK, 1), np.float32)
    out = np.zeros((BLOCK, 1), np.float32)
    engine.callback(block, out, BLOCK, None, flags)
    engine.callback(block, out, BLOCK, None, sd.CallbackFlags())
    assert engine.stats.xruns == 1 and engine.stats.flags["output_underflow"] == 1
    assert "xruns" in format_summary(engine.summary())


def test_bad_arguments_are_refused():
    proc = Processor(DelayGain(48000), 16000, 48000, backend="torch")
    with pytest.raises(ValueError, match="separate_streams"):
        Engine(proc, proc.dry_path(), 160)
    with pytest.raises(ValueError, match="blocksize"):
        Engine(proc, proc.dry_path(), 0, separate_streams=True)
    other = Processor(DelayGain(48000, delay=3), 16000, 48000, backend="torch")
    with pytest.raises(ValueError, match="time-aligned"):
        Engine(proc, other.dry_path(), 160, separate_streams=True)


@pytest.mark.parametrize("rates", [(48000, 48000, 480), (16000, 48000, 160)])
def test_worker_threads_feed_the_callback(rates):
    input_rate, output_rate, block = rates
    engine = make_engine(input_rate, output_rate, block)
    x = tones(20 * block, input_rate)
    wet, _ = references(engine, x)
    rings = [engine.wet_ring, engine.dry_ring]
    out = []
    engine.start_workers()
    try:
        for k in range(20):
            deadline = time.monotonic() + 30  # a liveness bound, not a timing assertion
            while min(ring.span[1] for ring in rings) < engine.handoff + k * engine.out_blocksize:
                assert time.monotonic() < deadline and engine.error is None
                time.sleep(0.001)
            outdata = np.zeros((engine.out_blocksize, 1), np.float32)
            if engine.separate_streams:
                engine.input_callback(x[k * block : (k + 1) * block, None], block, None, None)
                engine.output_callback(outdata, len(outdata), None, None)
            else:
                engine.callback(x[k * block : (k + 1) * block, None], outdata, block, None, None)
            out.append(outdata[:, 0])
    finally:
        engine.stop_workers()
    out = np.concatenate(out)
    np.testing.assert_array_equal(out, delayed(wet, engine.handoff, len(out)))
    assert engine.stats.misses == 0 and engine.stats.dry_gaps == 0 and engine.error is None
