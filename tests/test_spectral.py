"""Streaming spectral layers: causal STFT/iSTFT, per-frame norms, causal time convolutions."""

import math

import pytest
import torch
import torch.nn.functional as F

from models.spectral import (
    CausalTimeConv,
    FrameNorm,
    FreqConv,
    FreqConvTranspose,
    StreamingISTFT,
    StreamingSTFT,
    frame_moments,
)

FRAMINGS = [(512, 256), (512, 128), (64, 16), (8, 4)]


def run_blocks(module, x, sizes, axis=-1):
    """Step `module` over consecutive blocks of `sizes` along `axis`; concatenate the outputs."""
    state = module.init_state(x.shape[0])
    outs, start = [], 0
    for n in sizes:
        y, state = module.step(x.narrow(axis, start, n), state)
        outs.append(y)
        start += n
    assert start == x.shape[axis]
    return torch.cat(outs, dim=-1)


def random_partition(total, multiple, gen, largest=8):
    """Random block lengths (multiples of `multiple`, the smallest included) summing to `total`."""
    sizes, left = [multiple], total - multiple
    while left:
        n = multiple * int(torch.randint(1, largest + 1, (1,), generator=gen))
        sizes.append(min(n, left))
        left -= sizes[-1]
    return sizes


def sweep(n, rate=44100.0):
    t = torch.arange(n, dtype=torch.float64) / rate
    return (0.5 * torch.sin(2 * math.pi * (100 * t + 0.5 * 8000 * t**2 / t[-1]))).float()


@pytest.mark.parametrize("n_fft,hop", FRAMINGS)
def test_stft_is_torch_stft_of_frames_ending_at_each_hop(n_fft, hop):
    x = torch.randn(2, hop * 12, generator=torch.Generator().manual_seed(0))
    spec = StreamingSTFT(n_fft, hop)(x)
    padded = F.pad(x, (n_fft - hop, 0))  # frame j covers [(j + 1) hop - n_fft, (j + 1) hop)
    window = torch.hann_window(n_fft)
    ref = torch.stft(padded, n_fft, hop, window=window, normalized=True, center=False, return_complex=True)
    assert spec.shape == (2, 2, n_fft // 2 + 1, 12)
    torch.testing.assert_close(spec, torch.view_as_real(ref).permute(0, 3, 1, 2), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_fft,hop", FRAMINGS)
def test_impulse_comes_out_exactly_latency_samples_late(n_fft, hop):
    stft, istft = StreamingSTFT(n_fft, hop), StreamingISTFT(n_fft, hop)
    assert istft.latency == n_fft - hop
    for t in (0, 1, hop - 1, 3 * hop + 5):
        x = torch.zeros(1, hop * 16)
        x[0, t] = 1.0
        y = istft(stft(x))
        expected = torch.zeros_like(y)
        expected[0, t + istft.latency] = 1.0
        torch.testing.assert_close(y, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("n_fft,hop", FRAMINGS)
def test_stft_istft_is_a_pure_delay_on_noise_and_a_sweep(n_fft, hop):
    stft, istft = StreamingSTFT(n_fft, hop), StreamingISTFT(n_fft, hop)
    n, lat = hop * 40, n_fft - hop
    x = torch.stack([torch.randn(n, generator=torch.Generator().manual_seed(1)), sweep(n)])
    y = istft(stft(x))
    assert y[:, :lat].abs().max() < 1e-6
    torch.testing.assert_close(y[:, lat:], x[:, : n - lat], atol=1e-5, rtol=0)


def test_dropped_nyquist_bin_reads_as_zero():
    stft, istft = StreamingSTFT(64, 16), StreamingISTFT(64, 16)
    spec = stft(torch.randn(2, 16 * 10, generator=torch.Generator().manual_seed(2)))
    zeroed = spec.clone()
    zeroed[:, :, -1] = 0
    torch.testing.assert_close(istft(spec[:, :, :-1]), istft(zeroed), atol=1e-6, rtol=0)
    assert (istft(spec[:, :, :-1]) - istft(spec)).abs().max() > 1e-3  # noise does reach Nyquist


@pytest.mark.parametrize("n_fft,hop", [(512, 256), (64, 16)])
def test_stft_and_istft_stream_exactly_like_one_pass(n_fft, hop):
    gen = torch.Generator().manual_seed(3)
    stft, istft = StreamingSTFT(n_fft, hop), StreamingISTFT(n_fft, hop)
    frames = 37
    x = torch.randn(2, hop * frames, generator=gen)
    spec = stft(x)
    y = istft(spec)
    for _ in range(5):
        sizes = random_partition(frames, 1, gen)
        assert (run_blocks(stft, x, [n * hop for n in sizes]) - spec).abs().max() <= 1e-5
        assert (run_blocks(istft, spec, sizes) - y).abs().max() <= 1e-5


def test_framing_and_block_errors_are_clear():
    with pytest.raises(ValueError, match="hop"):
        StreamingSTFT(512, 200)
    with pytest.raises(ValueError, match="hop"):
        StreamingISTFT(512, 512)
    with pytest.raises(ValueError, match="n_fft"):
        StreamingSTFT(511, 1)
    stft = StreamingSTFT(512, 256)
    with pytest.raises(ValueError, match="block_multiple=256"):
        stft.step(torch.zeros(1, 300), stft.init_state(1))
    with pytest.raises(ValueError, match="batch, samples"):
        stft.step(torch.zeros(1, 1, 256), stft.init_state(1))
    istft = StreamingISTFT(512, 256)
    with pytest.raises(ValueError, match="256 or 257"):
        istft.step(torch.zeros(1, 2, 100, 3), istft.init_state(1))


def test_frame_norm_uses_one_frame_only():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 8, 16, 6, generator=gen)
    for groups, per_row in ((1, False), (4, False), (1, True)):
        norm = FrameNorm(8, groups, per_row)
        with torch.no_grad():
            norm.weight.normal_(generator=gen)
            norm.bias.normal_(generator=gen)
        y = norm(x)
        other = x.clone()
        other[..., :3] *= 100.0  # rescale and shift every frame but 3 and later
        other[..., 4:] = other[..., 4:] * 0.01 + 5.0
        torch.testing.assert_close(norm(other)[..., 3], y[..., 3], atol=1e-5, rtol=1e-5)
        # And it is the normalisation it claims: (x - mean) / std with the frame's statistics.
        mean, std = frame_moments(x, groups, per_row)
        ref = ((x.unflatten(1, (groups, -1)) - mean) / std).flatten(1, 2)
        torch.testing.assert_close(y, ref * norm.weight.view(-1, 1, 1) + norm.bias.view(-1, 1, 1))


def test_frame_norm_of_a_frame_is_zero_mean_unit_variance():
    x = torch.randn(1, 4, 32, 5, generator=torch.Generator().manual_seed(5)) * torch.arange(1.0, 6.0)
    y = FrameNorm(4)(x)
    torch.testing.assert_close(y.mean(dim=(1, 2)), torch.zeros(1, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(1, 2), correction=0), torch.ones(1, 5), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "kernel,dilation,freq_kernel,zero_inputs",
    [(9, 1, 1, 0), (3, 2, 1, 0), (3, 1, 3, 0), (3, 1, 3, 4), (1, 1, 1, 0)],
)
def test_causal_time_conv_is_a_left_padded_conv2d_and_streams_exactly(
    kernel, dilation, freq_kernel, zero_inputs
):
    gen = torch.Generator().manual_seed(6)
    conv = CausalTimeConv(
        6 + zero_inputs, 5, kernel, dilation, freqs=8, freq_kernel=freq_kernel, zero_inputs=zero_inputs
    )
    x = torch.randn(2, 6, 8, 30, generator=gen)
    full_input = torch.cat([torch.zeros(2, zero_inputs, 8, 30), x], dim=1)
    context = (kernel - 1) * dilation
    ref = F.conv2d(
        F.pad(full_input, (context, 0)),
        conv.conv.weight,
        conv.conv.bias,
        padding=(freq_kernel // 2, 0),
        dilation=(1, dilation),
    )
    y = conv(x)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    for _ in range(5):
        assert (run_blocks(conv, x, random_partition(30, 1, gen)) - y).abs().max() <= 1e-5


def test_causal_time_conv_ignores_the_future():
    conv = CausalTimeConv(3, 4, 5, dilation=2, freqs=4)
    x = torch.randn(1, 3, 4, 20, generator=torch.Generator().manual_seed(7))
    changed = x.clone()
    changed[..., 12] += 1.0
    y, y2 = conv(x), conv(changed)
    assert torch.equal(y[..., :12], y2[..., :12])
    assert (y2[..., 12] - y[..., 12]).abs().max() > 0


def test_freq_convs_equal_torch_convs():
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(2, 6, 64, 3, generator=gen)
    for stride, pad in ((4, 2), (2, 3)):
        conv = FreqConv(6, 10, 8, stride, pad)
        ref = F.conv2d(x, conv.weight, conv.bias, (stride, 1), (pad, 0))
        torch.testing.assert_close(conv(x), ref, atol=1e-5, rtol=1e-5)
        tr = FreqConvTranspose(6, 3, 8, stride, pad)
        ref = F.conv_transpose2d(x, tr.weight, tr.bias, (stride, 1), (pad, 0))
        assert tr(x).shape == (2, 3, 64 * stride, 3)
        torch.testing.assert_close(tr(x), ref, atol=1e-5, rtol=1e-5)


def test_causal_time_conv_rejects_wrong_shapes():
    conv = CausalTimeConv(4, 4, 3, freqs=8)
    with pytest.raises(ValueError, match=r"\(batch, 4, 8, frames\)"):
        conv.step(torch.zeros(1, 4, 7, 2), conv.init_state(1))
    with pytest.raises(ValueError, match="freq_kernel"):
        CausalTimeConv(4, 4, 3, freq_kernel=2)
