"""pedalboard integration: the process() contract, layout detection, latency compensation and Chain."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from scipy.signal import butter, sosfilt

from models.registry import load_model
from realtime.pedal import INSTALL_HINT, BandwidthExtender, Chain, PedalboardSegment

HAS_PEDALBOARD = importlib.util.find_spec("pedalboard") is not None
needs_pedalboard = pytest.mark.skipif(not HAS_PEDALBOARD, reason=f"pedalboard not installed ({INSTALL_HINT})")
if HAS_PEDALBOARD:
    import pedalboard as pb
    from pedalboard.io import AudioFile
    from pedalboard_native._internal import AddLatency  # pedalboard's own fixed-latency test plugin

RATE = 48000
N = 7200  # 0.15 s: long enough to span several model blocks and the whole latency


@pytest.fixture(scope="module")
def speech():
    torch.manual_seed(0)
    return load_model("speech", pretrained=False)


def band_limited_noise(shape: tuple[int, ...], seed: int = 0, cutoff: float = 4000.0) -> np.ndarray:
    """Noise low-passed at `cutoff` (an 8 kHz-sampled voice band, stored at 48 kHz), time on the last axis."""
    sos = butter(8, cutoff, fs=RATE, output="sos")
    return (0.3 * sosfilt(sos, np.random.default_rng(seed).standard_normal(shape))).astype(np.float32)


def peak_lag(y: np.ndarray, x: np.ndarray) -> int:
    """Lag (samples, y behind x) of the cross-correlation peak."""
    n = len(x) + len(y)
    xc = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(x, n)), n)
    lag = int(np.argmax(xc))
    return lag if lag < n // 2 else lag - n


def stream(effect, x: np.ndarray, chunk: int, rate: int = RATE) -> list[np.ndarray]:
    """`x` (channels, samples) through `effect` in chunks with reset=False, after a reset()."""
    effect.reset()
    return [effect(x[:, i : i + chunk], rate, reset=False) for i in range(0, x.shape[1], chunk)]


# --- layout detection ------------------------------------------------------------------------------


def _one_sample_delay():
    return pb.Delay(delay_seconds=0.001, feedback=0.0, mix=1.0)  # 1 sample at 1 kHz: shows the time axis


LAYOUT_SEQUENCES = [
    [(8,)],
    [(1, 8)],
    [(8, 1)],
    [(2, 8)],
    [(8, 2)],
    [(1, 1)],
    [(3, 3)],  # ambiguous with nothing remembered: both raise
    [(2, 20), (2, 2)],  # square: the remembered layout decides
    [(20, 2), (2, 2)],
    [(20, 3), (20,), (3, 3)],  # 1-D counts as channels first
    [(20, 2), (1, 2)],  # the previous channel count decides
    [(2, 20), (2, 1)],
    [(2, 0), (2, 2)],  # an empty buffer fixes the layout: the zero axis is the sample axis
    [(0, 2), (2, 2)],
    [(20, 3), (0, 0), (3, 3)],
    [(2, 20), "reset", (2, 2)],  # an explicit reset() forgets the layout
]


@needs_pedalboard
@pytest.mark.parametrize("sequence", LAYOUT_SEQUENCES, ids=str)
def test_layout_detection_matches_pedalboard(sequence):
    plugin = _one_sample_delay()
    chain = Chain([_one_sample_delay()])  # the chain detects the layout, the plugin inside sees planar audio
    rng = np.random.default_rng(0)
    for step in sequence:
        if step == "reset":
            plugin.reset()
            chain.reset()
            continue
        x = rng.standard_normal(step).astype(np.float32)
        try:
            expected = plugin(x, 1000)
        except RuntimeError:
            with pytest.raises(ValueError, match="Unable to determine channel layout"):
                chain(x, 1000)
            continue
        got = chain(x, 1000)
        assert got.shape == expected.shape and got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)


@needs_pedalboard
@pytest.mark.parametrize("shape", [(1000,), (1, 1000), (1000, 1), (2, 1000), (1000, 2)], ids=str)
def test_effect_layout_and_streaming_match_pedalboard(speech, shape):
    """Dry path in streaming mode == pedalboard's AddLatency(latency): same shapes, same samples."""
    effect = BandwidthExtender(speech, backend="torch", dry_wet=0.0)
    effect.prepare(RATE, 2 if 2 in shape else 1)
    reference = AddLatency(effect.latency_samples)
    rng = np.random.default_rng(1)
    for _ in range(2):  # the first call returns 1000 - latency samples, the second all 1000
        x = rng.standard_normal(shape).astype(np.float32)
        expected, got = reference(x, RATE, reset=False), effect(x, RATE, reset=False)
        assert got.shape == expected.shape and got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)
    offline = effect(x.astype(np.float64), RATE)
    assert offline.shape == shape and offline.dtype == np.float32
    np.testing.assert_array_equal(offline, x)  # the dry path at the model's rate is exact


# --- offline alignment -----------------------------------------------------------------------------


@needs_pedalboard
def test_offline_chain_dry_path_lands_impulses_on_their_samples(speech):
    x = np.zeros((2, N), np.float32)
    x[0, 1000] = x[1, 3001] = 1.0
    x += band_limited_noise((2, N)) * 0.01
    chain = Chain(
        [pb.Gain(-6), BandwidthExtender(speech, backend="torch", dry_wet=0.0), pb.Delay(0.005, 0.0, 0.3)]
    )
    y = chain(x, RATE)
    expected = pb.Pedalboard([pb.Gain(-6), pb.Delay(0.005, 0.0, 0.3)])(x, RATE)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, expected, atol=1e-6)
    assert [int(np.argmax(np.abs(ch))) for ch in y] == [1000, 3001]
    assert chain.latency_samples == chain[1].latency_samples > 0  # declared, yet compensated offline


@needs_pedalboard
def test_offline_chain_wet_path_is_time_aligned(speech):
    x = band_limited_noise((2, N), seed=2)
    chain = Chain([pb.Gain(-3), BandwidthExtender(speech, backend="torch"), pb.Delay(0.005, 0.0, 0.3)])
    y = chain(x, RATE)
    assert y.shape == x.shape and np.isfinite(y).all()
    dry = pb.Pedalboard([pb.Gain(-3), pb.Delay(0.005, 0.0, 0.3)])(x, RATE)
    assert np.abs(y - dry).max() > 1e-2  # the generator changed the signal...
    assert [peak_lag(y[c], x[c]) for c in range(2)] == [0, 0]  # ...without shifting it in time


@needs_pedalboard
def test_offline_latency_of_pedalboard_plugins_and_effects_is_compensated(speech):
    """AddLatency plugins on both sides of the effect: the chain still returns the input, aligned."""
    x = band_limited_noise((N,), seed=3)
    ext = BandwidthExtender(speech, backend="torch", dry_wet=0.0)
    chain = Chain([AddLatency(100), ext, AddLatency(50)])
    np.testing.assert_array_equal(chain(x, RATE), x)
    parts = stream(chain, x[None], 1000)
    assert chain.latency_samples == 100 + ext.latency_samples + 50
    np.testing.assert_array_equal(np.concatenate(parts, axis=1)[0], x[: N - chain.latency_samples])


# --- streaming -------------------------------------------------------------------------------------


@needs_pedalboard
@pytest.mark.parametrize("chunk", [256, 1000])
def test_streaming_equals_offline_after_the_latency(speech, chunk):
    x = band_limited_noise((2, N), seed=4)

    def make_chain() -> Chain:
        # Fresh plugins for each run: a fresh Limiter loses its state if a later block outgrows the first.
        return Chain(
            [
                pb.Gain(-3),
                AddLatency(100),
                BandwidthExtender(speech, backend="torch"),
                pb.Delay(0.005, 0.0, 0.3),
                pb.Compressor(-20, 4),
                pb.Limiter(-6),
            ]
        )

    offline = make_chain()(x, RATE)
    chain = make_chain()
    parts = [chain(x[:, i : i + chunk], RATE, reset=False) for i in range(0, N, chunk)]
    latency = chain.latency_samples
    assert latency == 100 + chain[2].latency_samples
    # Per-call lengths follow pedalboard's streaming rule: the latency comes off the front of the stream.
    reference = AddLatency(latency)
    expected_lengths = [
        reference(x[:, i : i + chunk], RATE, reset=False).shape[1] for i in range(0, N, chunk)
    ]
    assert [p.shape[1] for p in parts] == expected_lengths
    assert parts[0].shape[1] == max(0, chunk - latency)
    streamed = np.concatenate(parts, axis=1)
    assert streamed.shape == (2, N - latency)
    np.testing.assert_allclose(streamed, offline[:, : N - latency], atol=1e-5)


@needs_pedalboard
def test_tiny_stereo_buffers_between_stages_keep_their_layout(speech):
    """The stage after the effect first gets (2, 1): ambiguous to pedalboard, fixed by the chain."""
    x = band_limited_noise((2, 3000), seed=9)
    ext = BandwidthExtender(speech, backend="torch", dry_wet=0.0)
    ext.prepare(RATE, 2)
    chain = Chain([ext, pb.Delay(0.002, 0.5, 0.5)])
    offline = chain(x, RATE)
    parts = stream(chain, x, ext.latency_samples + 1)
    assert parts[0].shape == (2, 1)
    streamed = np.concatenate(parts, axis=1)
    np.testing.assert_allclose(streamed, offline[:, : streamed.shape[1]], atol=1e-6)


@needs_pedalboard
def test_chain_with_audiofile(speech, tmp_path):
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    x = band_limited_noise((2, N), seed=5)
    with AudioFile(str(src), "w", RATE, 2, bit_depth=32) as f:
        f.write(x)
    chain = Chain([pb.HighpassFilter(80), BandwidthExtender(speech, backend="torch"), pb.Limiter()])
    with AudioFile(str(src)) as f:
        audio, rate = f.read(f.frames), f.samplerate
    with AudioFile(str(dst), "w", rate, audio.shape[0], bit_depth=32) as f:
        f.write(chain(audio, rate))
    with AudioFile(str(dst)) as f:
        written = f.read(f.frames)
    np.testing.assert_array_equal(written, chain(x, RATE))
    # Streaming from the file in chunks (the last one shorter) gives the same audio, latency trimmed.
    chain.reset()
    with AudioFile(str(src)) as f:
        parts = [chain(f.read(999), f.samplerate, reset=False) for _ in range(-(-f.frames // 999))]
    streamed = np.concatenate(parts, axis=1)
    np.testing.assert_allclose(streamed, written[:, : N - chain.latency_samples], atol=1e-5)


# --- the rate-changing mode ------------------------------------------------------------------------


def test_rate_changing_mode_aligns_and_streams(speech):
    rng = np.random.default_rng(6)
    n = 2400  # 0.15 s at 16 kHz
    x = np.zeros(n, np.float32)
    x[800] = 1.0
    dry = BandwidthExtender(speech, output_rate=48000, backend="torch", dry_wet=0.0)
    y = dry(x, 16000)
    assert y.shape == (3 * n,) and int(np.argmax(y)) == 3 * 800
    wet = BandwidthExtender(speech, output_rate=48000, backend="torch")
    x = rng.standard_normal((n, 1)).astype(np.float32) * 0.3
    offline = wet(x, 16000)
    assert offline.shape == (3 * n, 1)
    parts = [wet(x[i : i + 160], 16000, reset=False) for i in range(0, n, 160)]
    streamed = np.concatenate(parts)
    assert streamed.shape == (3 * n - wet.latency_samples, 1) and parts[0].shape[0] == 0
    np.testing.assert_allclose(streamed, offline[: len(streamed)], atol=1e-5)


# --- Chain as a list -------------------------------------------------------------------------------


@needs_pedalboard
def test_chain_groups_consecutive_plugins_into_one_pedalboard(speech):
    gain, comp, delay = pb.Gain(-3), pb.Compressor(), pb.Delay(0.005)
    ext = BandwidthExtender(speech)
    chain = Chain([gain, comp, ext, delay])
    assert len(chain) == 4 and chain[2] is ext and list(chain) == [gain, comp, ext, delay]
    kinds = [type(s) for s in chain.stages]
    assert kinds == [PedalboardSegment, BandwidthExtender, PedalboardSegment]
    assert list(chain.stages[0].board) == [gain, comp] and list(chain.stages[2].board) == [delay]
    del chain[2]
    assert len(chain.stages) == 1 and list(chain.stages[0].board) == [gain, comp, delay]
    chain.insert(0, ext)
    chain.reverse()
    assert chain[-1] is ext and chain[:2] == [delay, comp]
    assert chain.pop() is ext and ext not in chain
    with pytest.raises(ValueError, match="appears twice"):
        chain.append(gain)
    with pytest.raises(ValueError, match="appears twice"):
        chain.append(pb.Pedalboard([delay]))
    with pytest.raises(TypeError, match="pedalboard plugins or effects"):
        chain.append(lambda x, sr: x)
    with pytest.raises(ValueError, match="changes the sample rate"):
        chain.append(BandwidthExtender(speech, output_rate=48000))
    with pytest.raises(ValueError, match="cannot contain itself"):
        chain.append(Chain([pb.Gain(1), chain]))
    assert len(chain) == 3  # failed edits change nothing


class Polarity:
    """A plain Python effect with the process() contract: flips the sign (planar in, planar out)."""

    def process(self, x, sample_rate, buffer_size=8192, reset=True):
        return -x

    def reset(self):
        pass


@needs_pedalboard
def test_chain_runs_nested_chains_and_duck_typed_effects(speech):
    x = band_limited_noise((N, 2), seed=10)  # channels last this time
    inner = Chain([pb.Gain(-6), BandwidthExtender(speech, backend="torch", dry_wet=0.0)])
    chain = Chain([AddLatency(64), inner, Polarity(), pb.Gain(6)])
    y = chain(x, RATE)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, -x, atol=1e-5)  # -6 dB then +6 dB, sign flipped, aligned
    parts = stream(chain, x.T.copy(), 1000)
    assert chain.latency_samples == 64 + inner.latency_samples == 64 + inner[1].latency_samples
    streamed = np.concatenate(parts, axis=1)
    np.testing.assert_allclose(streamed, -x.T[:, : N - chain.latency_samples], atol=1e-5)


# --- bad input -------------------------------------------------------------------------------------


def test_bad_input_gets_clear_errors(speech, tmp_path):
    ext = BandwidthExtender(speech, backend="torch")
    with pytest.raises(RuntimeError, match="prepare"):
        _ = ext.latency_samples
    with pytest.raises(ValueError, match="Provide a non-square array first"):
        ext(np.zeros((2, 2), np.float32), RATE)
    x = np.zeros(480, np.float32)
    with pytest.raises(ValueError, match="2 dimensions|1-D or 2-D"):
        ext(np.zeros((2, 2, 480), np.float32), RATE)
    with pytest.raises(TypeError, match="float32 or float64"):
        ext(np.zeros(480, np.int16), RATE)
    with pytest.raises(TypeError, match="numpy array"):
        ext([0.0] * 480, RATE)
    with pytest.raises(ValueError, match="buffer_size"):
        ext(x, RATE, buffer_size=0)
    with pytest.raises(ValueError, match="whole number"):
        ext(x, 44100.5)
    with pytest.raises(ValueError, match="sample_rate=12345 Hz is not supported"):
        ext(x, 12345)
    with pytest.raises(ValueError, match="backend"):
        BandwidthExtender(speech, backend="cuda")
    with pytest.raises(ValueError, match="dry_wet"):
        BandwidthExtender(speech, dry_wet=1.5)
    with pytest.raises(ValueError, match="new_band_db"):
        BandwidthExtender(speech, new_band_db=30.0)
    with pytest.raises(ValueError, match="new_band_db"):
        ext.new_band_db = float("nan")
    with pytest.raises(ValueError, match="output_rate"):
        BandwidthExtender(speech, output_rate=1234)
    with pytest.raises(FileNotFoundError, match="not found"):
        BandwidthExtender(tmp_path / "missing.safetensors")


def test_nan_block_becomes_silence_and_the_stream_goes_on(speech):
    ext = BandwidthExtender(speech, backend="torch", dry_wet=0.0)
    x = band_limited_noise((2400,), seed=7)
    x[1000] = np.nan
    y = ext(x, RATE, buffer_size=480)
    assert y.shape == x.shape and np.isfinite(y).all()
    np.testing.assert_array_equal(y[960:1440], 0.0)  # the guarded host block
    np.testing.assert_array_equal(y[:960], x[:960])
    np.testing.assert_array_equal(y[1440:], x[1440:])


def test_processor_is_rebuilt_when_rate_or_channels_change(speech):
    ext = BandwidthExtender(speech, backend="torch", dry_wet=0.0)
    ext.prepare(RATE)
    latency_48k = ext.latency_samples
    x = band_limited_noise((2, 1500), seed=8)
    first = ext(x, RATE, reset=False)  # stereo: a new processor, a new stream
    assert ext.processor.channels == 2 and first.shape == (2, 1500 - latency_48k)
    with pytest.warns(UserWarning, match="run the chain at 48000 Hz"):
        y = ext(x, 44100)
    assert ext.processor.input_rate == 44100 and ext.latency_samples != latency_48k
    assert y.shape == x.shape
    # dry_wet and the new band's trim reach the live processor
    ext.dry_wet = 0.25
    ext.new_band_db = -4.0
    assert ext.processor.dry_wet == 0.25 and ext.processor.new_band_db == -4.0
    ext(x, RATE)  # a rebuilt processor keeps the trim
    assert ext.processor.input_rate == RATE and ext.processor.new_band_db == -4.0


# --- pedalboard is optional ------------------------------------------------------------------------


def test_import_and_effect_work_without_pedalboard():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["pedalboard"] = None  # as if not installed
        import numpy as np, torch
        torch.set_num_threads(1)
        import realtime, realtime.pedal
        from models.registry import load_model
        from realtime.pedal import BandwidthExtender, Chain
        try:
            Chain([])
        except ImportError as err:
            print("ERR", err)
        ext = BandwidthExtender(load_model("speech", pretrained=False), backend="torch", dry_wet=0.0)
        x = np.linspace(-1, 1, 960, dtype=np.float32)
        print("SAME", bool(np.array_equal(ext(x, 48000), x)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (
        f"ERR realtime.pedal.Chain needs the optional pedalboard package (GPL-3.0): {INSTALL_HINT}"
        in out.stdout
    )
    assert "SAME True" in out.stdout
