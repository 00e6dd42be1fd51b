"""MambaWave: the streaming sampler equals its one-pass output, the counter-based noise depends only on
(seed, sample index), determinism per seed, the training loss, denoiser causality, presets and errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _streaming import stream_blocks
from torch import Tensor

from models.dsp.level import level_state
from models.mamba_wave import (
    MAX_SEED,
    NORMALISED_CLIP,
    MambaWave,
    MambaWaveConfig,
    MambaWaveDenoiser,
    counter_noise,
    diffusion_loss,
    mambawave_paper_config,
    mambawave_small_config,
    sampling_timesteps,
)
from models.streaming import substate

TOL = 1e-4


def tiny(steps: int, clip: bool = False, noise_bands: int = 0) -> MambaWaveConfig:
    """A few hundred parameters. No clamping by default: a clamped output could hide a wrong sample.
    No excitation by default: the sample alone, any block length."""
    return dataclasses.replace(
        mambawave_small_config(),
        channels=4,
        layers=2,
        d_state=4,
        step_embed_dim=8,
        step_hidden=16,
        sampling_steps=steps,
        clip=clip,
        noise_bands=noise_bands,
    )


def model_for(config: MambaWaveConfig, seed: int = 0) -> MambaWave:
    """Random weights throughout: the zero-initialised output layer is re-drawn so eps depends on x."""
    torch.manual_seed(seed)
    model = MambaWave(config).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.denoiser.eps_out.weight, std=0.5)
        torch.nn.init.normal_(model.denoiser.eps_out.bias, std=0.1)
    return model


def signal(batch: int, length: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(batch, length, generator=g)


def partition(total: int, seed: int, unit: int = 1) -> list[int]:
    """Random block lengths (multiples of `unit`) summing to `total`; partition 0 is one block, the
    others include single units."""
    if seed == 0:
        return [total]
    g = torch.Generator().manual_seed(seed)
    sizes, left = [1], total // unit - 1
    while left > 0:
        n = 1 if torch.rand((), generator=g) < 0.2 else int(torch.randint(2, 48, (), generator=g))
        sizes.append(min(n, left))
        left -= sizes[-1]
    return [n * unit for n in sizes]


@pytest.mark.parametrize("steps", [1, 4])
def test_streaming_equals_offline(steps: int) -> None:
    model = model_for(tiny(steps))
    c = signal(2, 160)
    seeds = [5, 9]
    with torch.inference_mode():
        reference = model(c, {"seed": model.init_state(2, seed=seeds)["seed"]})
        assert (reference - c).std() > 1e-3  # the denoiser's part: not a copy of the input
        for p in range(20):
            y = stream_blocks(model, c, partition(c.shape[-1], p), model.init_state(2, seed=seeds))
            err = (y - reference).abs().max().item()
            assert err <= TOL, f"partition {p}: max abs error {err:.2e}"


def rule_values(model: MambaWave, batch: int, seeds: list[int]) -> dict[str, Tensor]:
    """The state a host gives a 16 kHz input (band edge 8 kHz, crossover 7.6 kHz), and seeds."""
    values = {
        k: torch.from_numpy(v).expand(batch, -1) for k, v in level_state(model.config, 8000.0, 7600.0).items()
    }
    values["seed"] = model.init_state(batch, seed=seeds)["seed"]
    return values


def test_streaming_equals_offline_band_normalised() -> None:
    """The preset's form: the new band diffused in units of the rule's level, for a 16 kHz input."""
    model = model_for(tiny(2, noise_bands=12))
    unit = model.block_multiple
    c = signal(2, 40 * unit)
    values = rule_values(model, 2, [3, 4])
    with torch.inference_mode():
        reference = model(c, values)
        without = MambaWave(dataclasses.replace(model.config, noise_bands=0))
        without.load_state_dict(model.state_dict())
        plain = without.eval()(c, {"seed": values["seed"]})
        assert (reference - plain).std() > 1e-3  # a different domain
        for p in range(20):
            state = {**model.init_state(2), **values}
            y = stream_blocks(model, c, partition(c.shape[-1], p, unit), state)
            err = (y - reference).abs().max().item()
            assert err <= TOL, f"partition {p}: max abs error {err:.2e}"
    with pytest.raises(ValueError, match="multiple of block_multiple=16"):
        model.step(c[:, :10], model.init_state(2))


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_an_untrained_sampler_returns_its_input(steps: int) -> None:
    """The zero-initialised network adds nothing to the noise the input implies, so every pass's
    clean estimate is the input: an untrained model is the band-limited input (plus, in the preset,
    the excitation at the rule's level), never loud noise."""
    model = MambaWave(tiny(steps)).eval()
    c = signal(2, 200, seed=7)
    with torch.inference_mode():
        torch.testing.assert_close(model(c), c, rtol=0, atol=1e-5)


def test_an_untrained_band_normalised_sampler_plays_the_input_plus_the_rule_level_noise() -> None:
    """In the preset's domain the guess is the excitation over its envelope, so the untrained output
    is c plus the excitation at the rule's level: noisefill's band, whatever the seed."""
    model = MambaWave(tiny(2, noise_bands=12)).eval()
    c = signal(2, 30 * model.block_multiple, seed=7)
    values = rule_values(model, 2, [1, 2])
    state = {**model.init_state(2), **values}
    with torch.inference_mode():
        level, _ = model.level.step(c, substate(state, "level"))
        fill, _ = model.excitation.step(level, substate(state, "excitation"))
        assert fill[:, 100:].std() > 1e-3
        torch.testing.assert_close(model(c, values), c + fill, rtol=0, atol=1e-5)


def test_state_keys_and_contract() -> None:
    model = MambaWave(tiny(3))
    state = model.init_state(2)
    assert (model.block_multiple, model.latency, model.sample_rate) == (1, 0, 48000)
    assert {"seed", "pos"} <= state.keys()
    assert any(k.startswith("cond.") for k in state)
    for j in range(3):  # one trunk state per sampling pass, the conditioner shared
        assert any(k.startswith(f"k{j}.layers.1.") for k in state)
    assert all(v.dtype == torch.float32 and v.shape[0] == 2 for v in state.values())
    assert sampling_timesteps(50, 4) == [12, 24, 37, 49] and sampling_timesteps(50, 1) == [49]


def test_noise_depends_only_on_seed_and_index() -> None:
    model = MambaWave(tiny(1))
    seeds = torch.tensor([[0], [1]])
    whole = counter_noise(seeds, torch.arange(20000).expand(2, -1))
    # Through the sampler's state, over a partition and across the 2**20 carry of the stored position.
    for start in (0, (1 << 20) - 37):
        state = model.init_state(2, seed=[0, 1])
        state["pos"] = torch.tensor([[0.0, float(start)]] * 2)
        parts = []
        for n in partition(300, 3):
            x, state["pos"] = model.start_noise(state, n)
            parts.append(x)
        expected = counter_noise(seeds, torch.arange(start, start + 300).expand(2, -1))
        torch.testing.assert_close(torch.cat(parts, -1), expected, rtol=0, atol=1e-6)
        assert int(state["pos"][0, 0]) * (1 << 20) + int(state["pos"][0, 1]) == start + 300
    assert not torch.allclose(whole[0], whole[1])
    for row in whole:
        assert abs(row.mean().item()) < 0.05 and abs(row.std().item() - 1) < 0.03
        assert abs(torch.corrcoef(torch.stack([row[:-1], row[1:]]))[0, 1].item()) < 0.05
    assert abs(torch.corrcoef(whole)[0, 1].item()) < 0.05


def test_deterministic_per_seed() -> None:
    model = model_for(tiny(2))
    c = signal(1, 64, seed=1)
    with torch.inference_mode():
        a = model(c)
        b = model(c)
        other = model.step(c, model.init_state(1, seed=123))[0]
    assert torch.equal(a, b)
    assert (a - other).abs().max() > 1e-3
    with pytest.raises(ValueError, match="seeds must be integers"):
        model.init_state(1, seed=MAX_SEED)
    with pytest.raises(ValueError, match="one per batch row"):
        model.init_state(3, seed=[1, 2])


@pytest.mark.parametrize("noise_bands", [0, 12])
def test_diffusion_loss_backpropagates(noise_bands: int) -> None:
    torch.manual_seed(0)
    model = MambaWave(tiny(2, noise_bands=noise_bands))
    denoiser = model.denoiser
    target, cond = signal(2, 96, seed=2), signal(2, 96, seed=3)
    extra = {}
    if noise_bands:
        values = rule_values(model, 2, [0, 0])
        extra = {
            "crossover_hz": torch.tensor([7600.0, 7600.0]),
            "level": {k: v for k, v in values.items() if k != "seed"},
        }

    def loss_for(seed: int) -> Tensor:
        torch.manual_seed(seed)  # a training-mode excitation starts at a random table position
        return diffusion_loss(model, target, cond, generator=torch.Generator().manual_seed(seed), **extra)

    loss = loss_for(0)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    # DiffWave's zero-initialised output layer gets the gradient first.
    assert denoiser.eps_out.weight.grad.abs().sum() > 0
    again = loss_for(0)
    assert torch.equal(loss.detach(), again.detach())  # the generator decides t and eps
    # Once that layer is non-zero, every parameter gets a gradient.
    with torch.no_grad():
        torch.nn.init.normal_(denoiser.eps_out.weight, std=0.5)
    denoiser.zero_grad()
    loss_for(1).backward()
    dead = [n for n, p in denoiser.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient reaches {dead}"


def test_denoiser_is_causal() -> None:
    torch.manual_seed(0)
    denoiser = MambaWaveDenoiser(tiny(2)).eval()
    with torch.no_grad():
        torch.nn.init.normal_(denoiser.eps_out.weight, std=0.5)
    x, c = signal(1, 64, seed=4), signal(1, 64, seed=5)
    x2, c2 = x.clone(), c.clone()
    n = 30
    x2[:, n + 1 :] += 1.0
    c2[:, n + 1 :] -= 1.0
    t = torch.tensor([7])
    with torch.inference_mode():
        a, b = denoiser(x, c, t), denoiser(x2, c2, t)
        other_t = denoiser(x, c, torch.tensor(20.0))
    torch.testing.assert_close(a[:, : n + 1], b[:, : n + 1], rtol=0, atol=1e-6)
    assert (a[:, n + 1 :] - b[:, n + 1 :]).abs().max() > 1e-3
    assert (a - other_t).abs().max() > 1e-4  # the step embedding reaches the output


def test_presets_build() -> None:
    paper = mambawave_paper_config()
    assert (paper.channels, paper.layers, paper.sample_rate) == (32, 11, 48000)
    model = MambaWave(paper)
    assert len(model.denoiser.layers) == 11 and model.denoiser.layers[0].mamba.d_model == 32
    assert model.config is paper and MambaWaveConfig.from_dict(paper.to_dict()) == paper
    small = MambaWave(mambawave_small_config())
    assert small.block_multiple == 16 and small.config.noise_bands == 12
    with torch.inference_mode():
        assert small(signal(1, 32)).shape == (1, 32)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sampling_steps", 0, "sampling_steps"),
        ("sampling_steps", 51, "sampling_steps"),
        ("channels", 0, "channels must be >= 1"),
        ("layers", 0, "layers must be >= 1"),
        ("step_embed_dim", 7, "step_embed_dim"),
        ("beta_end", 1.0, "beta_end"),
        ("seed", -1, "seed"),
        ("noise_bands", -1, "noise_bands"),
        ("level_window", 8, "level_hop <= level_window"),
    ],
)
def test_bad_config(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MambaWaveConfig(**{field: value})


def test_bad_input_shapes() -> None:
    model = MambaWave(tiny(1))
    with pytest.raises(ValueError, match="batch, samples"):
        model.step(torch.zeros(1, 1, 8), model.init_state(1))
    with pytest.raises(ValueError, match="one shape"):
        model.denoiser(torch.zeros(1, 8), torch.zeros(1, 9), torch.tensor(0))


def test_the_band_normalised_target_is_the_new_band_over_the_rule_amplitude() -> None:
    """x_0 for training: nothing below the crossover, the target's band above it divided by the scale,
    clamped; the waveform domain's x_0 is the target itself."""
    model = MambaWave(tiny(1, noise_bands=12))
    n, rate = 4800, 48000
    time = torch.arange(n) / rate
    low, high = torch.sin(2 * torch.pi * 1000 * time), 0.01 * torch.sin(2 * torch.pi * 12000 * time)
    target, c = (low + high)[None], low[None]
    scale = torch.full((1, n), 0.01)
    x0 = model.clean_target(
        target, c + 0.1 * torch.sin(2 * torch.pi * 3000 * time), scale, torch.tensor([7600.0])
    )
    torch.testing.assert_close(x0, high[None] / 0.01, rtol=0, atol=5e-3)  # the 3 kHz error is dropped
    clamped = model.clean_target(target, c, torch.full((1, n), 1e-5), torch.tensor([7600.0]))
    assert clamped.abs().max() == NORMALISED_CLIP
    with pytest.raises(ValueError, match="one crossover frequency per row"):
        model.clean_target(target, c, scale, None)
    assert MambaWave(tiny(1)).clean_target(target, c, None, None) is target
