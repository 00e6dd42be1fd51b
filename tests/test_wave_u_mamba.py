"""Wave-U-Mamba streaming: streaming == offline, == the original non-causal wiring delayed by the
declared latency, causality, restart, parameter count, and clear errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from _streaming import stream_blocks
from torch import Tensor

from models.wave_u_mamba import WaveUMamba, WaveUMambaConfig, paper_config, speech_config

SR = 48000
TOL = 1e-5
CAUSAL_TOL = 1e-6
PAPER_PARAMS = 4_203_714  # the reference implementation's count
PAPER_LATENCY = 274  # bookkeeping: see test_paper_latency_bookkeeping


def tiny(causal: bool) -> WaveUMambaConfig:
    """The paper's wiring and kernel sizes (hence its latency) with few channels: fast to test."""
    return dataclasses.replace(
        paper_config(),
        channels=(4, 8, 8, 16),
        final_channels=4,
        down_mambas=(1, 1, 1, 1),
        bottleneck_mambas=1,
        up_mambas=(1, 1, 1, 1),
        d_state=4,
        causal=causal,
    )


def model_for(config: WaveUMambaConfig, seed: int = 0) -> WaveUMamba:
    torch.manual_seed(seed)
    return WaveUMamba(config).eval()


def speech_like(seconds: float, seed: int = 0) -> Tensor:
    """A band-limited voiced-speech stand-in: harmonics of a gliding pitch, syllable envelope, noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    f0 = 120 + 30 * torch.sin(2 * torch.pi * 1.3 * t)
    phase = 2 * torch.pi * torch.cumsum(f0, 0) / SR
    voiced = sum(torch.sin(k * phase) / k for k in range(1, 25))
    envelope = 0.5 * (1 + torch.sin(2 * torch.pi * 3.0 * t)) ** 2
    x = 0.2 * voiced * envelope + 0.01 * torch.randn(t.shape, generator=g)
    return x.unsqueeze(0)


def partition(total: int, multiple: int, seed: int, max_units: int = 300) -> list[int]:
    """Random block lengths, multiples of `multiple` (the smallest always included), summing to `total`."""
    g = torch.Generator().manual_seed(seed)
    sizes, left = [multiple], total - multiple
    while left > 0:
        n = min(multiple * int(torch.randint(1, max_units, (1,), generator=g)), left)
        sizes.append(n)
        left -= n
    return sizes


def assert_streams_like_offline(model: WaveUMamba, x: Tensor, partitions: int, max_units: int = 300) -> None:
    with torch.inference_mode():
        offline = model(x)
        assert offline.shape == x.shape
        for seed in range(partitions):
            sizes = partition(x.shape[-1], model.block_multiple, seed, max_units)
            assert (stream_blocks(model, x, sizes) - offline).abs().max() <= TOL, sizes


# --- the original wiring, offline and non-causal (or causal), written with plain torch ops ---------


def _pad(kernel_span: int, lookahead: int) -> tuple[int, int]:
    return kernel_span - lookahead, lookahead


def _conv(layer, h: Tensor, lookahead: int) -> Tensor:
    conv = layer.conv
    span = (conv.kernel_size[0] - 1) * conv.dilation[0]
    return F.conv1d(F.pad(h, _pad(span, lookahead)), conv.weight, conv.bias, dilation=conv.dilation[0])


def _norm(norm, h: Tensor) -> Tensor:
    return F.layer_norm(h.transpose(1, 2), norm.normalized_shape, norm.weight, norm.bias, norm.eps).transpose(
        1, 2
    )


def _conv_norm_act(seq, h: Tensor, causal: bool) -> Tensor:
    conv, norm, _ = seq.layers
    k = conv.conv.kernel_size[0]
    return F.leaky_relu(_norm(norm.norm, _conv(conv, h, 0 if causal else k - 1)), 0.1)


def _mambas(stack, h: Tensor) -> Tensor:
    h = h.transpose(1, 2)
    for norm, mamba in zip(stack.norms, stack.mambas):
        h = h + mamba(norm(h))  # Mamba.forward: one pass from a zero state
    return h.transpose(1, 2)


def reference(model: WaveUMamba, x: Tensor) -> Tensor:
    """The reference implementation's forward with `model`'s weights: right-padded convs, 'same'
    ResBlocks and output conv, padded transposed convs (or all causal when config.causal)."""
    causal = model.config.causal
    h, skips = x.unsqueeze(1), []
    for block, between in zip(model.down, model.down_norms):
        first, *residuals, _, mambas = block.layers
        h = _conv_norm_act(first, h, causal)
        for residual in residuals:
            h = h + _conv_norm_act(residual.body, h, causal)
        h = _mambas(mambas, F.avg_pool1d(h, 2))
        skips.append(h)
        h = F.leaky_relu(_norm(between.layers[0].norm, h), 0.1)
    first, *residuals, mambas = model.bottleneck.layers
    h = _conv_norm_act(first, h, causal)
    for residual in residuals:
        h = h + _conv_norm_act(residual.body, h, causal)
    h = _mambas(mambas, h)
    h = _norm(model.bottleneck_norm.norm, h)
    for i, up in enumerate(model.up):
        h = F.leaky_relu(h, 0.1) + skips[-1 - i]
        upsample, mambas, resblock = up.layers[0], up.layers[-2], up.layers[-1]
        k = upsample.kernel_size
        length = 2 * h.shape[-1]
        padding = 0 if causal else (k - 2) // 2
        h = F.conv_transpose1d(h, upsample.conv.weight, upsample.conv.bias, 2, padding)
        if causal:  # the causal wiring's one-sample shift after upsampling
            h = F.pad(h, (1, 0))
        h = h[..., :length]
        h = _mambas(mambas, h)
        for residual in resblock.layers:
            _, conv_d, _, conv_1 = residual.body.layers
            span_d = (conv_d.conv.kernel_size[0] - 1) * conv_d.dilation
            t = _conv(conv_d, F.leaky_relu(h, 0.1), 0 if causal else span_d // 2)
            h = h + _conv(conv_1, F.leaky_relu(t, 0.1), 0 if causal else 1)
    post = model.post.layers[1]
    h = _conv(post, F.leaky_relu(h, 0.01), 0 if causal else (post.conv.kernel_size[0] - 1) // 2)
    return torch.tanh(h).squeeze(1) + x


def zero_biases(model: WaveUMamba) -> WaveUMamba:
    """Biases off: silence stays exactly zero through every layer and Mamba state (see the test)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") and not name.endswith("dt_proj.bias"):
                param.zero_()
    return model


def assert_matches_reference_delayed(model: WaveUMamba, x: Tensor) -> None:
    lag = model.latency
    with torch.inference_mode():
        y, ref = model(x), reference(model, x)
    assert (y[:, lag:] - ref[:, : ref.shape[-1] - lag]).abs().max() <= TOL


def measured_latency(model: WaveUMamba, x: Tensor, max_shift: int = 400) -> int:
    """The one shift at which the streamed response lines up with the original wiring's."""
    with torch.inference_mode():
        y, ref = model(x), reference(model, x)
    n = x.shape[-1]
    hits = [s for s in range(max_shift) if (y[:, s:] - ref[:, : n - s]).abs().max() <= TOL]
    assert len(hits) == 1, hits
    return hits[0]


def with_lead_in(x: Tensor, silence: int) -> Tensor:
    """x after `silence` zeros: outputs the stream computes for times before 0 then see only silence."""
    return torch.cat([torch.zeros(x.shape[0], silence), x], dim=-1)


# --- presets ------------------------------------------------------------------------------------


def test_paper_preset_size_and_latency() -> None:
    model = WaveUMamba(paper_config())
    params = sum(p.numel() for p in model.parameters())
    assert abs(params - PAPER_PARAMS) <= 0.03 * PAPER_PARAMS, params
    assert model.sample_rate == 48000 and model.block_multiple == 16
    assert model.latency == PAPER_LATENCY
    mamba_params = sum(p.numel() for n, p in model.named_parameters() if ".mambas." in n)
    assert mamba_params == 2_831_680  # 19 blocks, as measured on the reference


def test_paper_latency_bookkeeping() -> None:
    """Per level: down convs add 3 + 3, an odd lag is rounded up to even before pooling, the bottleneck
    adds 2 + 2, each transposed conv doubles the lag and adds its padding, each ResBlock adds
    (1 + 1) + (3 + 1), the output conv 3."""
    delay = 0
    for _ in range(4):
        delay += 6
        delay = (delay + delay % 2) // 2
    assert delay == 6
    delay += 4
    for k in (4, 4, 8, 8):
        delay = 2 * delay + (k - 2) // 2 + 6
    assert delay + 3 == PAPER_LATENCY
    model = WaveUMamba(tiny(causal=False))
    assert [skip.latency for skip in model.skips] == [4, 21, 56, 128]
    assert model.latency == PAPER_LATENCY


def test_speech_preset_is_causal_and_compact() -> None:
    model = WaveUMamba(speech_config())
    assert model.latency == 0 and model.block_multiple == 16 and model.sample_rate == 48000
    assert model.config.causal
    assert sum(p.numel() for p in model.parameters()) < 0.1 * PAPER_PARAMS


@pytest.mark.parametrize("causal", [False, True])
def test_tiny_streams_like_offline_over_many_partitions(causal) -> None:
    model = model_for(tiny(causal))
    assert_streams_like_offline(model, speech_like(0.4), partitions=20, max_units=400)


def test_speech_preset_streams_like_offline() -> None:
    model = model_for(speech_config())
    assert_streams_like_offline(model, speech_like(1.0), partitions=3)


def test_paper_preset_streams_like_offline() -> None:
    model = model_for(paper_config())
    assert_streams_like_offline(model, speech_like(0.1), partitions=2, max_units=100)


@pytest.mark.slow
def test_speech_preset_streams_like_offline_3s_20_partitions() -> None:
    model = model_for(speech_config())
    assert_streams_like_offline(model, speech_like(3.0), partitions=20)


@pytest.mark.slow
def test_paper_preset_streams_like_offline_half_second_20_partitions() -> None:
    model = model_for(paper_config())
    assert_streams_like_offline(model, speech_like(0.5), partitions=20, max_units=200)


def test_causal_model_equals_the_causal_reference_exactly() -> None:
    """Latency 0: nothing to pad or trim; biases on; the stream is the causal wiring from sample 0."""
    model = model_for(tiny(causal=True))
    x = speech_like(0.3)
    with torch.inference_mode():
        assert (model(x) - reference(model, x)).abs().max() <= TOL


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_paper_wiring_streams_the_non_causal_reference_delayed_by_the_latency(preset) -> None:
    config = tiny(causal=False) if preset == "tiny" else paper_config()
    model = zero_biases(model_for(config))
    # A look-ahead layer's first outputs belong to times before 0, where the reference has zero
    # padding instead; with zero biases and a silent lead-in longer than the latency they are zeros too.
    x = with_lead_in(speech_like(0.1), 320)
    assert_matches_reference_delayed(model, x)
    if preset == "tiny":
        # Streamed in blocks too, and with a loud impulse: the response lines up at exactly the latency.
        impulse = torch.zeros(1, 2048)
        impulse[0, 1000] = 1.0
        assert measured_latency(model, impulse) == PAPER_LATENCY
        with torch.inference_mode():
            streamed = stream_blocks(model, x, partition(x.shape[-1], 16, seed=7, max_units=40))
            ref = reference(model, x)
        lag = model.latency
        assert (streamed[:, lag:] - ref[:, : ref.shape[-1] - lag]).abs().max() <= TOL


def test_global_residual_is_delayed_by_the_latency() -> None:
    """With the correction branch silenced (and no noise) the model is a pure delay of `latency` samples."""
    for config in (paper_config(), speech_config()):
        model = model_for(dataclasses.replace(config, channels=(4, 4, 4, 4), final_channels=4, noise_bands=0))
        with torch.no_grad():
            post = model.post.layers[1].conv
            post.parametrizations.weight.original0.zero_()
            post.bias.zero_()
        x = torch.zeros(1, 1024)
        x[0, 100] = 1.0
        with torch.inference_mode():
            y = model(x)
        assert torch.equal(y, F.pad(x, (model.latency, 0))[:, :1024])


@pytest.mark.parametrize("preset", ["tiny-paper", "tiny-causal", "speech", "paper"])
def test_output_before_a_change_never_changes(preset) -> None:
    """Perturb the input at t for t in every phase of the 16-sample pooling grid (one batch row each)."""
    config = {
        "tiny-paper": tiny(False),
        "tiny-causal": tiny(True),
        "speech": speech_config(),
        "paper": paper_config(),
    }[preset]
    model = model_for(config)
    x = speech_like(0.03)
    start = 640
    perturbed = x.repeat(17, 1)  # row 0 stays clean
    for phase in range(16):
        perturbed[1 + phase, start + phase] += 0.5
    with torch.inference_mode():
        y = model(perturbed)
    for phase in range(16):
        at = start + phase
        changed = (y[1 + phase] - y[0]).abs()
        # Before t only rounding may differ: conv kernels may mix neighbouring samples in intermediate
        # sums (their weights on later samples are zero only mathematically); ~1e-7 here, vs ~0.1 after t.
        assert changed[:at].max() <= CAUSAL_TOL, phase
        assert changed[at:].max() > 1e-4
        if model.latency == 0:
            assert changed[at] > 0  # the direct path: no delay at all


def test_restart_after_init_state_gives_identical_output() -> None:
    model = model_for(speech_config())
    x, other = speech_like(0.2, seed=1), speech_like(0.2, seed=2)
    sizes = partition(x.shape[-1], 16, seed=3, max_units=60)
    with torch.inference_mode():
        first = stream_blocks(model, x, sizes)
        stream_blocks(model, other, sizes)  # a different stream in between
        again = stream_blocks(model, x, sizes)
    assert torch.equal(first, again)


def test_batched_streams_are_independent() -> None:
    model = model_for(tiny(False))
    a, b = speech_like(0.1, seed=1), speech_like(0.1, seed=2)
    with torch.inference_mode():
        both = model(torch.cat([a, b]))
        assert (both[1:] - model(b)).abs().max() <= TOL


def test_folding_weight_norm_keeps_the_output() -> None:
    model = model_for(tiny(False))
    x = speech_like(0.05)
    with torch.inference_mode():
        before = model(x)
        after = model.remove_weight_norm()(x)
    assert (before - after).abs().max() <= TOL
    assert not any("parametrizations" in name for name, _ in model.named_parameters())


def test_bad_blocks_raise_clear_errors() -> None:
    model = model_for(tiny(True))
    state = model.init_state(1)
    with pytest.raises(ValueError, match="block_multiple=16"):
        model.step(torch.zeros(1, 100), state)
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        model.step(torch.zeros(1, 1, 160), state)


def test_config_round_trip_and_validation() -> None:
    for config in (paper_config(), speech_config()):
        data = config.to_dict()
        assert isinstance(data["channels"], list)
        assert WaveUMambaConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="unknown WaveUMambaConfig fields: nope"):
        WaveUMambaConfig.from_dict({"nope": 1})
    with pytest.raises(ValueError, match="up_mambas"):
        WaveUMambaConfig(up_mambas=(2, 2))
    with pytest.raises(ValueError, match="post_kernel"):
        WaveUMambaConfig(post_kernel=6)
