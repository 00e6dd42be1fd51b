"""The new band's level: the input's top band continued above its edge, the one place that sets it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models import evaluate as ev
from models.band_level import CORRECTION_DB, BandLevel, correction_gain
from models.dsp.level import analysis_edges, band_edges, check_new_band_db, level_state, power_law_shape
from models.registry import build_model, with_config
from realtime.processor import Processor, process_offline

SR = 48000
CONFIG = {
    "noise_bands": 12,
    "noise_low_hz": 3500.0,
    "sample_rate": SR,
    "level_shape": power_law_shape(2.0),
    "level_window": 512,
}


def sloped_noise(
    seconds: float, slope: float, band_edge_hz: float | None = None, seed: int = 0
) -> np.ndarray:
    """Noise whose power density falls as f^-slope above 1 kHz, optionally cut (FFT) at `band_edge_hz`."""
    n = int(seconds * SR)
    f = np.fft.rfftfreq(n, 1 / SR)
    spec = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    spec *= np.where(f > 1000, (1000 / np.maximum(f, 1)) ** (slope / 2), 1.0)
    if band_edge_hz is not None:
        spec[f >= band_edge_hz] = 0
    x = np.fft.irfft(spec, n)
    return 0.2 * x / np.abs(x).max()


def band_power(x: np.ndarray, lo: float, hi: float) -> float:
    p = ev.power_spectrogram(x)[4:-4]
    f = ev.bin_frequencies(SR)
    return float(p[:, (f >= lo) & (f < hi)].mean())


def test_the_rule_gives_no_power_below_the_crossover_and_more_to_wider_bands():
    state = level_state(CONFIG, 8000.0, 7200.0)
    edges = band_edges(12, 3500.0, SR)
    rule, top = state["level.rule"], state["level.top"]
    assert rule.shape == (12,) and top.shape == (analysis_edges().size - 1,)
    np.testing.assert_array_equal(rule[edges[1:] <= 7200.0], 0)
    assert (rule[edges[1:] > 7200.0] > 0).all()
    inside = (analysis_edges()[1:] > 8000 / math.sqrt(2)) & (analysis_edges()[:-1] < 7200.0)
    assert (top[inside] > 0).all() and (top[~inside] == 0).all()
    # steeper slope: less power far above the edge
    steep = level_state({**CONFIG, "level_shape": power_law_shape(4.0)}, 8000.0, 7200.0)["level.rule"]
    assert steep[-1] < rule[-1]


@pytest.mark.parametrize("edge", [1000.0, 23000.0])
def test_a_band_edge_outside_the_measured_range_is_a_clear_error(edge):
    with pytest.raises(ValueError, match="band edge|cut_hz"):
        level_state(CONFIG, edge, 0.9 * edge)


def test_a_generator_without_excitation_needs_no_level():
    assert level_state({**CONFIG, "noise_bands": 0}, 8000.0, 7200.0) == {}


def test_band_level_reads_the_top_band_power_of_white_noise():
    """Calibration: for white noise the rule's power per band equals the density times the slope's
    integral, to within 0.5 dB, whatever the band edge."""
    module = BandLevel(12, SR, hop=16, window=512)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((1, SR)).astype(np.float32))
    for edge in (4000.0, 8000.0, 12000.0):
        state = {
            **module.init_state(1),
            **{
                k.split(".")[1]: torch.from_numpy(v)[None]
                for k, v in level_state(
                    {**CONFIG, "level_shape": power_law_shape(0.0)}, edge, 0.9 * edge
                ).items()
            },
        }
        amp, _ = module.step(x, state)
        power = amp[0, :, 64:].square().mean(-1).numpy()  # after the first window
        edges = band_edges(12, 3500.0, SR)
        expected = (edges[1:] - edges[:-1]) / (SR / 2)  # slope 0: white continues white
        live = power > 1e-12  # bands below the crossover get nothing
        np.testing.assert_allclose(10 * np.log10(power[live] / expected[live]), 0.0, atol=0.5)


def test_band_level_streams_exactly():
    module = BandLevel(12, SR, hop=16, window=512)
    x = torch.from_numpy(sloped_noise(0.2, 2.0)[None].astype(np.float32))[:, :9600]
    state = {
        **module.init_state(1),
        **{
            k.split(".")[1]: torch.from_numpy(v)[None] for k, v in level_state(CONFIG, 8000.0, 7200.0).items()
        },
    }
    whole, _ = module.step(x, state)
    parts, pos = [], 0
    for n in (16, 480, 32, 1600, 7472):
        y, state = module.step(x[:, pos : pos + n], state)
        parts.append(y)
        pos += n
    torch.testing.assert_close(torch.cat(parts, -1), whole, rtol=0, atol=1e-6)


def test_correction_is_bounded_and_zero_at_zero():
    gain = correction_gain(torch.tensor([-1e3, 0.0, 1e3]))
    db = 20 * torch.log10(gain)
    torch.testing.assert_close(db, torch.tensor([-CORRECTION_DB, 0.0, CORRECTION_DB]))


def _zero_correction(name: str, slope: float) -> torch.nn.Module:
    """An untrained preset whose waveform and level corrections are zero: the rule alone."""
    model = with_config(build_model(name), level_shape=power_law_shape(slope), level_offset_db=0.0).eval()
    with torch.no_grad():
        if name == "speech":  # the weight-normed output conv: zero gain and bias
            for key, p in model.post.named_parameters():
                if key.endswith(("original0", "bias")):
                    p.zero_()
        elif name == "mambawave":  # already zero-initialised: the sample is its guess, the rule-level noise
            assert model.denoiser.eps_out.weight.abs().sum() == 0
        else:  # already zero-initialised: the spectral correction and the gain map
            assert all(p.abs().sum() == 0 for p in model.decoder[-1].conv_tr.parameters())
    return model


@pytest.mark.parametrize(
    ("name", "input_rate"), [("speech", 16000), ("speech", 8000), ("music", 11025), ("mambawave", 16000)]
)
def test_zero_correction_plays_noisefills_level(name, input_rate):
    """Acceptance: on a signal with a known 1/f^2 slope an untrained generator (zero correction) puts
    the new band at noisefill's level (the same rule, slope 2) within 1 dB, and at the reference's."""
    model = _zero_correction(name, slope=2.0)
    sr = model.sample_rate
    reference = sloped_noise(3.0, 2.0, seed=2)[: 3 * sr]
    lowres = ev.downsample(reference, sr, input_rate)
    out = process_offline(model, lowres.astype(np.float32), input_rate, backend="torch")[
        : reference.size
    ].astype(np.float64)
    filled = ev.noisefill(ev.baseline(lowres, input_rate, sr, reference.size), sr, input_rate)
    lo, hi = input_rate / 2, min(ev.MAX_HZ, sr / 2)
    model_db = 10 * math.log10(band_power(out, lo, hi))
    assert abs(model_db - 10 * math.log10(band_power(filled, lo, hi))) < 1.0
    assert abs(model_db - 10 * math.log10(band_power(reference, lo, hi))) < 1.0


@pytest.mark.parametrize(("name", "input_rate"), [("speech", 16000), ("music", 11025)])
def test_zero_correction_follows_the_shape_inside_each_excitation_band(name, input_rate):
    """The rule sets a power density, not a step per excitation band: on noise with a steep known
    slope (15 dB per octave, about 3.5 dB across an excitation band) an untrained generator's new band
    is at the reference's level within 1 dB, and within 1 dB peak to peak over twelfths of an octave
    (bands of flat noise: a sawtooth of about 2 dB there)."""
    model = _zero_correction(name, slope=5.0)
    sr = model.sample_rate
    reference = sloped_noise(3.0, 5.0, seed=3)[: 3 * sr]
    lowres = ev.downsample(reference, sr, input_rate)
    out = process_offline(model, lowres.astype(np.float32), input_rate, backend="torch")[: reference.size]
    centres, bias = ev.level_bias_per_band(reference, out.astype(np.float64), sr, input_rate, 12)
    assert centres.size >= 15 and abs(bias.mean()) < 1.0 and np.ptp(bias) < 1.0, bias.round(2)


@pytest.mark.parametrize(("name", "input_rate"), [("speech", 16000), ("speech", 8000), ("mambawave", 16000)])
def test_the_given_band_passes_unchanged(name, input_rate):
    """Acceptance: a band-limited chirp comes out of the 48 kHz presets with its band intact (SNR-LB
    >= 60 dB against the same chirp made at 48 kHz), although the chirp's top half-octave drives a
    loud new band just above it."""
    model = build_model(name).eval()  # untrained: whatever it does to the low band is cut away

    def chirp(rate: int) -> np.ndarray:
        t = np.arange(int(2.0 * rate)) / rate
        f0, f1 = 200.0, 0.875 * input_rate / 2  # up to the crossover (0.9 x the Nyquist frequency)
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * 2.0))
        return 0.5 * np.sin(phase) * np.hanning(t.size)

    lowres = chirp(input_rate).astype(np.float32)
    out = process_offline(model, lowres, input_rate, backend="torch").astype(np.float64)
    assert ev.snr_lb(chirp(SR), out, SR, input_rate) >= 60.0
    assert ev.snr(chirp(SR), out) < 40.0  # the new band is there: the full band differs


@pytest.mark.parametrize(("name", "input_rate"), [("speech", 16000), ("music", 11025), ("mambawave", 16000)])
def test_the_new_band_is_there_from_the_first_block(name, input_rate):
    """A stream's new band does not fade in: on steady noise its level over the first 50 ms of output
    is within 3 dB of the level a second later (the shipped weights, through file mode)."""
    from models.registry import load_model

    model = load_model(name).eval()
    sr = model.sample_rate
    reference = sloped_noise(1.5, 2.0, seed=4)[: int(1.5 * sr)]
    lowres = ev.downsample(reference, sr, input_rate)
    out = process_offline(model, lowres.astype(np.float32), input_rate, backend="torch")
    spec = np.fft.rfftfreq(2400, 1 / sr)

    def new_band_db(segment: np.ndarray) -> float:
        p = np.abs(np.fft.rfft(segment * np.hanning(segment.size))) ** 2
        return 10 * math.log10(p[(spec >= input_rate / 2) & (spec < 16000)].mean())

    first = new_band_db(out[:2400])  # 50 ms at 48 kHz (54 ms at 44.1 kHz)
    later = new_band_db(out[sr : sr + 2400])
    assert abs(first - later) < 3.0


def test_a_same_rate_input_gets_the_level_only_with_its_band_edge():
    model = build_model("speech").eval()
    unknown = Processor(model, 48000, backend="torch")
    assert unknown.chain.level_values == {} and unknown.chain.merge is None  # the generator runs alone
    named = Processor(model, 48000, backend="torch", input_cutoff_hz=8000.0)
    for key, value in level_state(model.config, 8000.0, 7200.0).items():
        np.testing.assert_array_equal(named.chain.level_values[key], value)
    assert named.chain.merge is not None and named.latency == unknown.latency + named.chain.merge.delay
    with pytest.raises(ValueError, match="input_cutoff_hz"):
        Processor(model, 48000, backend="torch", input_cutoff_hz=30000.0)


def test_a_power_law_shape_gives_the_power_laws_integral():
    """The shape rule with f ** -slope: each band's power per unit of top-band power is the closed-form
    integral of f ** -slope over the band divided by its integral over the top band."""
    slope, cut, crossover = 3.0, 8000.0, 7200.0
    rule = level_state({**CONFIG, "level_shape": power_law_shape(slope)}, cut, crossover)["level.rule"]
    edges = band_edges(12, 3500.0, SR)

    def integral(a, b):
        return (b ** (1 - slope) - a ** (1 - slope)) / (1 - slope)

    expected = integral(edges[:-1], edges[1:]) / integral(cut / math.sqrt(2), crossover)
    live = edges[1:] > crossover
    np.testing.assert_allclose(rule[live], expected[live], rtol=2e-3)
    louder = level_state(
        {**CONFIG, "level_shape": power_law_shape(slope), "level_offset_db": 3.0}, cut, crossover
    )
    np.testing.assert_allclose(louder["level.rule"], rule * 10**0.3, rtol=1e-5)


def test_a_config_with_the_old_single_slope_loads_as_that_power_law():
    from models.wave_u_mamba import WaveUMambaConfig, speech_config

    old = speech_config().to_dict()
    del old["level_shape"], old["level_offset_db"]
    old["level_slope"] = 3.25
    config = WaveUMambaConfig.from_dict(old)
    assert config.level_shape == power_law_shape(3.25) and config.level_offset_db == 0.0
    for key, value in level_state(old, 8000.0, 7200.0).items():  # the dict form (an ONNX graph's) too
        np.testing.assert_array_equal(level_state(config, 8000.0, 7200.0)[key], value)


@pytest.mark.parametrize(
    "shape", [((1000.0, 0.0),), ((2000.0, 0.0), (1000.0, -3.0)), ((1000.0, 0.0), (2000.0, float("nan")))]
)
def test_a_bad_level_shape_is_a_clear_error(shape):
    from models.wave_u_mamba import WaveUMambaConfig

    with pytest.raises(ValueError, match="level_shape"):
        WaveUMambaConfig(level_shape=shape)


def test_the_listeners_trim_scales_the_rule_and_nothing_else():
    plain, trimmed = (
        level_state(CONFIG, 8000.0, 7200.0),
        level_state(CONFIG, 8000.0, 7200.0, new_band_db=-6.0),
    )
    np.testing.assert_array_equal(trimmed["level.top"], plain["level.top"])
    np.testing.assert_allclose(trimmed["level.rule"], plain["level.rule"] * 10**-0.6, rtol=1e-6)


@pytest.mark.parametrize("bad", [30.0, -24.5, float("nan"), float("inf"), "3", True, None])
def test_a_bad_trim_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="new_band_db"):
        check_new_band_db(bad)


@pytest.mark.parametrize(("name", "input_rate"), [("speech", 8000), ("music", 11025)])
def test_the_trim_moves_the_new_band_by_its_db_from_the_next_block(name, input_rate):
    """A listener's trim moves the new band of a generator with zero correction by its dB (within
    0.5 dB), set at the start or mid-stream, and leaves the given band as it was (SNR-LB >= 60 dB)."""
    model = _zero_correction(name, slope=2.0)
    sr = model.sample_rate
    lowres = ev.downsample(sloped_noise(2.0, 2.0, seed=5)[: 2 * sr], sr, input_rate).astype(np.float32)
    half = lowres.size // 2
    f = ev.bin_frequencies(sr)
    band = (f >= input_rate / 2) & (f < min(ev.MAX_HZ, sr / 2))

    def later_band_db(x: np.ndarray) -> float:  # from 0.2 s after the switch on
        return 10 * math.log10(ev.power_spectrogram(x[x.size // 2 + sr // 5 :])[:, band].mean())

    plain = Processor(model, input_rate, backend="torch").process_file_array(lowres)
    from_start = Processor(model, input_rate, backend="torch", new_band_db=-6.0).process_file_array(lowres)
    live = Processor(model, input_rate, backend="torch")
    first = live.process(lowres[:half])
    live.new_band_db = -6.0
    switched = np.concatenate([first, live.process(lowres[half:]), live.process(np.zeros(sr, np.float32))])
    switched = switched[live.latency : live.latency + plain.size]
    assert live.new_band_db == -6.0
    for trimmed in (from_start, switched):
        assert abs(later_band_db(trimmed) - later_band_db(plain) + 6.0) < 0.5
        assert ev.snr_lb(plain.astype(np.float64), trimmed.astype(np.float64), sr, input_rate) >= 60.0
    np.testing.assert_array_equal(
        switched[: half * sr // input_rate - live.latency], plain[: half * sr // input_rate - live.latency]
    )
