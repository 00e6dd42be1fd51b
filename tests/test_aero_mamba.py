"""Streaming AEROMamba: exact block streaming, latency, causality, presets."""

import dataclasses
import math

import pytest
import torch

from models.aero_mamba import AEROMamba, AEROMambaConfig, music_config, paper_config, parameter_count

RATE = 44100


def tiny_config(**changes) -> AEROMambaConfig:
    """Every AERO part (FTB, norms, DConv with Mamba, zero-input decoder) on 32 bins and 8 channels."""
    base = dict(n_fft=64, hop=16, channels=8, strides=(4, 2), norm_starts=1, norm_groups=2, ftb_layers=2)
    return AEROMambaConfig(**{**base, **changes})


def randomised(model: AEROMamba, seed: int = 0) -> AEROMamba:
    """Give the zero-initialised output layer and the tiny LayerScales real weights (a trained-like net)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if (
                name.startswith("decoder.")
                and "conv_tr" in name
                and name.startswith(f"decoder.{len(model.decoder) - 1}")
            ):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
            elif name.endswith(".scale"):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.5 + 0.25)
    return model.eval()


def music_signal(n: int, seed: int = 0) -> torch.Tensor:
    """Two stereo-ish mixtures: a chord of partials under 5.5 kHz with a decay, and a sweep plus noise."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64) / RATE
    chord = sum(
        torch.sin(2 * math.pi * f * t) / (k + 1) for k, f in enumerate((220.0, 277.2, 329.6, 1760.0, 5000.0))
    )
    chord = chord * torch.exp(-t)
    chirp = torch.sin(2 * math.pi * (50 * t + 0.5 * 10000 * t**2 / t[-1])) + 0.05 * torch.randn(
        n, generator=gen
    )
    return (0.3 * torch.stack([chord, chirp])).float()


def run_blocks(model, x, sizes):
    state = model.init_state(x.shape[0])
    outs, start = [], 0
    for n in sizes:
        y, state = model.step(x[:, start : start + n], state)
        outs.append(y)
        start += n
    return torch.cat(outs, dim=-1)


def random_partition(total, multiple, gen, largest):
    sizes, left = [multiple], total - multiple  # the smallest block always occurs
    while left:
        n = multiple * int(torch.randint(1, largest + 1, (1,), generator=gen))
        sizes.append(min(n, left))
        left -= sizes[-1]
    return sizes


def test_paper_config_has_the_paqm_parameter_count():
    n = parameter_count(AEROMamba(paper_config()))
    assert abs(n - 18.55e6) / 18.55e6 < 0.03, n


def test_contract_attributes():
    for cfg in (paper_config(), music_config()):
        model = AEROMamba(cfg)
        assert model.sample_rate == RATE
        assert model.block_multiple == cfg.hop == 256
        assert model.latency == cfg.n_fft - cfg.hop == 256


@torch.no_grad()
def test_untrained_model_is_the_identity_delayed_by_latency():
    # The residual output layer starts at zero: any signal, impulse included, comes out `latency` late
    # (the noise excitation, which starts quiet but not silent, left out).
    for model in (AEROMamba(tiny_config()), AEROMamba(dataclasses.replace(music_config(), noise_bands=0))):
        hop, lat = model.block_multiple, model.latency
        x = music_signal(hop * 24)
        x[0, 5 * hop + 3] += 1.0
        y = model(x)
        torch.testing.assert_close(y[:, lat:], x[:, :-lat], atol=1e-5, rtol=0)
        assert y[:, :lat].abs().max() < 1e-5


@torch.no_grad()
def test_tiny_model_streams_exactly_and_restarts_cleanly():
    model = randomised(AEROMamba(tiny_config()))
    hop = model.block_multiple
    x = music_signal(hop * 60)
    ref = model(x)
    assert (ref[:, model.latency :] - x[:, : -model.latency]).abs().max() > 1e-2  # the net does act
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        sizes = random_partition(x.shape[1], hop, gen, largest=12)
        assert (run_blocks(model, x, sizes) - ref).abs().max() <= 1e-5
    # Restart: a fresh state after another signal gives the same output again.
    state = model.init_state(2)
    _, state = model.step(music_signal(hop * 10, seed=9), state)
    again, _ = model.step(x, model.init_state(2))
    assert torch.equal(again, ref)


@torch.no_grad()
def test_music_preset_streams_3s_exactly_over_20_partitions():
    model = randomised(AEROMamba(music_config()))
    hop = model.block_multiple
    x = music_signal(hop * (3 * RATE // hop))
    ref = model(x)
    assert (ref[:, model.latency :] - x[:, : -model.latency]).abs().max() > 1e-3
    gen = torch.Generator().manual_seed(2)
    for _ in range(20):
        sizes = random_partition(x.shape[1], hop, gen, largest=96)
        assert (run_blocks(model, x, sizes) - ref).abs().max() <= 1e-5


@torch.no_grad()
def test_paper_preset_streams_exactly():
    model = randomised(AEROMamba(paper_config()))
    hop = model.block_multiple
    x = music_signal(hop * 10)
    ref = model(x)
    assert (run_blocks(model, x, [hop, 3 * hop, 2 * hop, 4 * hop]) - ref).abs().max() <= 1e-5


@torch.no_grad()
def test_output_never_depends_on_later_hops():
    model = randomised(AEROMamba(tiny_config()))
    hop = model.block_multiple
    x = music_signal(hop * 30)
    y = model(x)
    for t in (7 * hop, 11 * hop + 9, 20 * hop - 1):
        changed = x.clone()
        changed[:, t] += 0.5
        y2 = model(changed)
        start = t - t % hop  # outputs are emitted a hop at a time: the input's own hop may react
        assert torch.equal(y2[:, :start], y[:, :start])
        assert (y2[:, start:] - y[:, start:]).abs().max() > 1e-4


@torch.no_grad()
def test_streams_in_a_batch_are_independent():
    model = randomised(AEROMamba(tiny_config()))
    x = music_signal(16 * 20)
    both = model(x)
    torch.testing.assert_close(model(x[1:]), both[1:], atol=1e-6, rtol=0)


def test_bad_blocks_and_configs_raise_clear_errors():
    model = AEROMamba(tiny_config())
    with pytest.raises(ValueError, match="block_multiple=16"):
        model.step(torch.zeros(1, 24), model.init_state(1))
    with pytest.raises(ValueError, match="batch, samples"):
        model.step(torch.zeros(1, 1, 32), model.init_state(1))
    with pytest.raises(ValueError, match="strides"):
        tiny_config(strides=(3, 2))
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(channels=6)
    with pytest.raises(ValueError, match="unknown AEROMambaConfig fields"):
        AEROMambaConfig.from_dict({"channels": 8, "colour": "red"})


def test_config_round_trips_through_a_dict():
    cfg = music_config()
    assert AEROMambaConfig.from_dict(cfg.to_dict()) == cfg
    assert isinstance(cfg.to_dict()["strides"], list)


@torch.no_grad()
def test_a_correction_only_network_moves_the_excitation_and_nothing_else():
    """correction_only: a network with a trained-like output layer passes the input spectrum as it is
    (the identity, delayed, while the rule is silent: no band edge) and, with a band edge, its
    correction moves the excitation's level."""
    from models.dsp.level import level_state

    cfg = dataclasses.replace(music_config(), correction_only=True)
    trained, untrained = randomised(AEROMamba(cfg)), AEROMamba(cfg).eval()
    hop, lat = trained.block_multiple, trained.latency
    x = music_signal(hop * 24)
    torch.testing.assert_close(trained(x)[:, lat:], x[:, :-lat], atol=1e-5, rtol=0)
    full = randomised(AEROMamba(music_config()))  # the same layer as a spectral residual changes the signal
    assert (full(x)[:, lat:] - x[:, :-lat]).abs().max() > 1e-3

    def new_band(model: AEROMamba) -> torch.Tensor:
        state = model.init_state(x.shape[0])
        for key, value in level_state(cfg, 5512.5, 0.9 * 5512.5).items():
            state[key] = torch.as_tensor(value).expand_as(state[key]).clone()
        y = model.step(x, state)[0]
        return torch.fft.rfft(y - torch.nn.functional.pad(x, (lat, 0))[:, : y.shape[1]], dim=-1)

    moved, plain = new_band(trained), new_band(untrained)
    bins = torch.fft.rfftfreq(x.shape[1], 1 / RATE)
    power = [float((b[:, bins > 6000].abs() ** 2).sum()) for b in (moved, plain)]
    assert abs(10 * math.log10(power[0] / power[1])) > 0.5  # the correction moved the band
    with pytest.raises(ValueError, match="correction_only"):
        tiny_config(correction_only=True)
