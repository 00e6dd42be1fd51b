"""Streaming layers: streaming == offline, latency, causality, and equality with the original layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.layers import (
    AvgPool1d,
    ChannelLayerNorm,
    Delay,
    LeakyReLU,
    Residual,
    Sequential,
    Snake,
    StreamingConv1d,
    StreamingConvTranspose1d,
    output_delay,
    stride_alignment,
)
from models.streaming import StreamingModule

TOL = 1e-5


def signal(channels: int, length: int, seed: int = 0) -> Tensor:
    """A sweep plus noise per channel, batch of 2."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / length
    sweep = torch.sin(2 * torch.pi * (3 + 40 * t) * t * 8)
    noise = 0.3 * torch.randn(2, channels, length, generator=g)
    return sweep + noise


def partition(total: int, multiple: int, seed: int) -> list[int]:
    """Random block lengths (multiples of `multiple`, the smallest included) summing to `total`."""
    g = torch.Generator().manual_seed(seed)
    sizes, left = [multiple], total - multiple
    while left > 0:
        n = multiple * int(torch.randint(1, 6, (1,), generator=g))
        n = min(n, left)
        sizes.append(n)
        left -= n
    return sizes


def stream(module: StreamingModule, x: Tensor, sizes: list[int]) -> Tensor:
    state = module.init_state(x.shape[0])
    outs, pos = [], 0
    for n in sizes:
        y, new_state = module.step(x[..., pos : pos + n], state)
        assert set(new_state) == set(state)
        for key, value in new_state.items():
            assert value.shape == state[key].shape, key
        state, pos = new_state, pos + n
        outs.append(y)
    return torch.cat(outs, dim=-1)


def delayed(x: Tensor, samples: int) -> Tensor:
    """x shifted right by `samples` (zeros in front), same length."""
    return F.pad(x, (samples, 0))[..., : x.shape[-1]]


def assert_streams_like_offline(module: StreamingModule, x: Tensor, trials: int = 5) -> None:
    with torch.no_grad():
        offline = module(x)
        for seed in range(trials):
            sizes = partition(x.shape[-1], module.block_multiple, seed)
            assert (stream(module, x, sizes) - offline).abs().max() <= TOL


def conv_original(layer: StreamingConv1d) -> nn.Module:
    """The non-causal nn.Conv1d the streaming layer was converted from, with the same weights."""
    conv = layer.conv
    original = nn.Conv1d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size[0],
        conv.stride[0],
        0,
        conv.dilation[0],
        conv.groups,
    )
    with torch.no_grad():
        original.weight.copy_(conv.weight)
        original.bias.copy_(conv.bias)
    span = (conv.kernel_size[0] - 1) * conv.dilation[0]
    return nn.Sequential(nn.ConstantPad1d((span - layer.lookahead, layer.lookahead), 0.0), original)


def convt_original(layer: StreamingConvTranspose1d) -> nn.ConvTranspose1d:
    conv = layer.conv
    original = nn.ConvTranspose1d(
        conv.in_channels, conv.out_channels, layer.kernel_size, layer.up, layer.padding
    )
    with torch.no_grad():
        original.weight.copy_(conv.weight)
        original.bias.copy_(conv.bias)
    return original


def measured_latency(module: StreamingModule, original: nn.Module, channels: int, max_shift: int = 40) -> int:
    """The shift that aligns the streamed impulse response with the original layer's."""
    x = torch.zeros(1, channels, 64 * module.block_multiple)
    # The newest tap of an original window sits at n * stride + lookahead: the impulse is always seen.
    x[..., 5 * module.block_multiple + getattr(module, "lookahead", 0)] = 1.0
    with torch.no_grad():
        y, ref = module(x), original(x)
    length = min(y.shape[-1], ref.shape[-1])
    hits = [
        shift
        for shift in range(max_shift)
        if (y[..., shift:length] - ref[..., : length - shift]).abs().max() <= TOL
    ]
    assert len(hits) == 1, hits
    return hits[0]


def assert_causal(module: StreamingModule, channels: int, at: int) -> None:
    """Changing the input at sample `at` leaves every output computed before `at` unchanged."""
    x = signal(channels, 48 * module.block_multiple, seed=3)
    x2 = x.clone()
    x2[..., at] += 1.0
    with torch.no_grad():
        y, y2 = module(x), module(x2)
    down, up = getattr(module, "down", 1), getattr(module, "up", 1)
    before = at // down * up  # outputs whose inputs all precede `at`
    assert torch.equal(y[..., :before], y2[..., :before])
    assert (y[..., before:] - y2[..., before:]).abs().max() > 0


def test_stride_alignment_rounds_up_to_multiples() -> None:
    assert [stride_alignment(d, 2) for d in range(-2, 4)] == [0, 1, 0, 1, 0, 1]
    assert [stride_alignment(d, 3) for d in range(0, 4)] == [0, 2, 1, 0]
    assert stride_alignment(7, 1) == 0
    with pytest.raises(ValueError, match="stride"):
        stride_alignment(1, 0)


CONV_CASES = [
    # kernel, stride, dilation, groups, lookahead, weight_norm
    (3, 1, 1, 1, 0, False),
    (4, 1, 1, 1, 3, False),
    (3, 1, 3, 1, 3, True),
    (5, 1, 2, 2, 4, False),
    (7, 1, 1, 1, 3, True),
    (4, 2, 1, 1, 3, False),
    (4, 2, 1, 1, 0, False),
    (5, 3, 1, 1, 2, False),
    (1, 2, 1, 1, 0, False),
    (3, 4, 2, 1, 1, False),
]


@pytest.mark.parametrize("kernel,stride,dilation,groups,lookahead,wn", CONV_CASES)
def test_conv_streams_like_the_original_layer_delayed(
    kernel, stride, dilation, groups, lookahead, wn
) -> None:
    torch.manual_seed(kernel * 10 + stride)
    for input_delay in range(2 * stride):
        layer = StreamingConv1d(4, 6, kernel, stride, dilation, groups, True, lookahead, wn, input_delay)
        assert layer.block_multiple == stride and layer.down == stride
        x = signal(4, 40 * stride)
        assert_streams_like_offline(layer, x)
        # Input lagging by input_delay -> output lags by output_delay: the original layer, shifted.
        lag = output_delay(layer, input_delay)
        with torch.no_grad():
            y = layer(delayed(x, input_delay))
            ref = conv_original(layer)(x)
        assert y.shape == ref.shape
        assert (y[..., lag:] - ref[..., : ref.shape[-1] - lag]).abs().max() <= TOL
    layer = StreamingConv1d(4, 6, kernel, stride, dilation, groups, True, lookahead, wn)
    assert measured_latency(layer, conv_original(layer), 4) == layer.latency
    assert_causal(layer, 4, at=17 * stride + lookahead)


def test_conv_latency_figures() -> None:
    assert StreamingConv1d(1, 1, 4, lookahead=3).latency == 3
    assert StreamingConv1d(1, 1, 3, dilation=3, lookahead=3).latency == 3
    assert StreamingConv1d(1, 1, 4, lookahead=0).latency == 0
    # A stride-2 window ending on the newest sample of its pair: a right-padded k4 conv lags 1 output sample.
    assert StreamingConv1d(1, 1, 4, stride=2, lookahead=3).latency == 1
    assert StreamingConv1d(1, 1, 4, stride=2, lookahead=0).latency == 0


@pytest.mark.parametrize("kernel,stride", [(2, 2), (4, 2), (3, 3)])
def test_avgpool_streams_like_torch_avgpool_delayed(kernel, stride) -> None:
    for input_delay in range(2 * stride):
        pool = AvgPool1d(3, kernel, stride, input_delay=input_delay)
        x = signal(3, 30 * stride)
        assert_streams_like_offline(pool, x)
        lag = output_delay(pool, input_delay)
        with torch.no_grad():
            y, ref = pool(delayed(x, input_delay)), F.avg_pool1d(x, kernel, stride)
        n = ref.shape[-1]
        assert (y[..., lag:n] - ref[..., : n - lag]).abs().max() <= TOL
    pool = AvgPool1d(3, kernel, stride)
    assert measured_latency(pool, nn.AvgPool1d(kernel, stride), 3) == pool.latency
    assert_causal(pool, 3, at=9 * stride + 1)


def test_avgpool_phase_bookkeeping() -> None:
    # k = s = 2 uses both samples of a pair as soon as both are in: no latency for an in-phase input.
    assert AvgPool1d(1).latency == 0
    # An odd input lag is rounded up to the next pair: 9 -> 10 input samples = 5 output samples.
    assert output_delay(AvgPool1d(1, input_delay=9), 9) == 5
    assert output_delay(AvgPool1d(1, input_delay=6), 6) == 3
    with pytest.raises(ValueError, match="input_delay=9"):
        output_delay(AvgPool1d(1, input_delay=0), 9)


CONVT_CASES = [
    # kernel, stride, padding, weight_norm
    (4, 2, 1, True),
    (8, 2, 3, True),
    (3, 2, 0, False),
    (2, 3, 0, False),
    (5, 1, 2, False),
    (6, 3, 2, False),
]


@pytest.mark.parametrize("kernel,stride,padding,wn", CONVT_CASES)
def test_conv_transpose_streams_like_the_original_layer_delayed(kernel, stride, padding, wn) -> None:
    torch.manual_seed(kernel + stride)
    layer = StreamingConvTranspose1d(5, 3, kernel, stride, padding, weight_norm=wn)
    assert layer.latency == padding and layer.up == stride
    x = signal(5, 50)
    assert_streams_like_offline(layer, x)
    original = convt_original(layer)
    for input_delay in (0, 1, 3):
        lag = output_delay(layer, input_delay)
        assert lag == stride * input_delay + padding
        with torch.no_grad():
            y, ref = layer(delayed(x, input_delay)), original(x)
        n = min(y.shape[-1], ref.shape[-1])
        assert (y[..., lag:n] - ref[..., : n - lag]).abs().max() <= TOL
    assert measured_latency(layer, original, 5) == padding
    assert_causal(layer, 5, at=13)


def test_pointwise_layers_match_torch_per_step() -> None:
    x = signal(6, 160)
    norm = ChannelLayerNorm(6)
    with torch.no_grad():
        norm.norm.weight.uniform_(0.5, 1.5)
        norm.norm.bias.uniform_(-0.5, 0.5)
    snake = Snake(6, alpha=0.7)
    cases = [
        (norm, F.layer_norm(x.transpose(1, 2), (6,), norm.norm.weight, norm.norm.bias).transpose(1, 2)),
        (LeakyReLU(0.1), F.leaky_relu(x, 0.1)),
        (snake, x + torch.sin(0.7 * x) ** 2 / 0.7),
    ]
    for layer, ref in cases:
        assert layer.latency == 0 and layer.init_state(2) == {}
        assert_streams_like_offline(layer, x)
        with torch.no_grad():
            assert (layer(x) - ref).abs().max() <= TOL
        assert_causal(layer, 6, at=40)


def test_layer_norm_is_per_step() -> None:
    """A loud burst later in the signal does not change the normalisation of earlier steps."""
    norm = ChannelLayerNorm(4)
    x = signal(4, 64)
    x2 = x.clone()
    x2[..., 40:] *= 100.0
    with torch.no_grad():
        assert torch.equal(norm(x)[..., :40], norm(x2)[..., :40])


def test_delay_shifts_an_impulse_exactly() -> None:
    delay = Delay(7, 2)
    x = torch.zeros(1, 2, 40)
    x[0, 1, 3] = 1.0
    assert_streams_like_offline(delay, signal(2, 60))
    with torch.no_grad():
        y = delay(x)
    assert torch.equal(y, delayed(x, 7))
    assert Delay(0, 2).init_state(1) == {}


def build_chain(input_delay: int) -> tuple[Sequential, list[nn.Module]]:
    """right-padded conv -> LN -> lrelu -> residual conv -> pool -> conv transpose, and its originals."""
    conv1 = StreamingConv1d(2, 4, 4, lookahead=3)
    norm = ChannelLayerNorm(4)
    act = LeakyReLU(0.1)
    conv2 = StreamingConv1d(4, 4, 3, dilation=3, lookahead=3)
    res = Residual(conv2, 4)
    pool_delay = input_delay + conv1.latency + res.latency
    pool = AvgPool1d(4, 2, input_delay=pool_delay)
    up = StreamingConvTranspose1d(4, 3, 4, 2, 1)
    chain = Sequential(conv1, norm, act, res, pool, up, input_delay=input_delay)
    # Outputs a look-ahead layer gives before its latency belong to negative times, which the original
    # replaces by zero padding. With zero biases and a signal that starts with silence longer than the
    # look-ahead those outputs are zeros too, so the comparison is exact (else the first few differ).
    with torch.no_grad():
        for name, param in chain.named_parameters():
            if name.endswith("bias"):
                param.zero_()
    originals = [conv_original(conv1), norm, act, conv_original(conv2), nn.AvgPool1d(2), convt_original(up)]
    return chain, originals


def chain_original(originals: list[nn.Module], x: Tensor) -> Tensor:
    conv1, norm, act, conv2, pool, up = originals
    h = act(norm(conv1(x)))
    return up(pool(h + conv2(h)))


@pytest.mark.parametrize("input_delay", [0, 1, 2, 5])
def test_chain_streams_like_its_original_delayed(input_delay) -> None:
    torch.manual_seed(1)
    chain, originals = build_chain(input_delay)
    assert chain.block_multiple == 2 and chain.down == 2 and chain.up == 2
    x = signal(2, 120)
    x[..., :8] = 0.0
    assert_streams_like_offline(chain, x, trials=20)
    lag = output_delay(chain, input_delay)
    with torch.no_grad():
        y, ref = chain(delayed(x, input_delay)), chain_original(originals, x)
    assert (y[..., lag:] - ref[..., : ref.shape[-1] - lag]).abs().max() <= TOL
    if input_delay == 0:
        # conv k4 right-padded (3) + residual conv (3) = 6 -> pool 3 -> transposed conv 2 * 3 + 1.
        assert chain.latency == 7
        assert_causal(chain, 2, at=31)


def test_sequential_rejects_a_stride_built_for_another_phase() -> None:
    conv = StreamingConv1d(1, 1, 4, lookahead=3)
    with pytest.raises(ValueError, match="input_delay=3"):
        Sequential(conv, AvgPool1d(1))
    assert Sequential(conv, AvgPool1d(1, input_delay=3)).latency == 2


def test_sequential_block_multiple_follows_the_rates() -> None:
    pools = [AvgPool1d(1) for _ in range(4)]
    assert Sequential(*pools).block_multiple == 16
    up = StreamingConvTranspose1d(1, 1, 4, 2, 1)
    # The transposed conv's padding (1) reaches the next pool as an odd input delay.
    assert Sequential(AvgPool1d(1), up, AvgPool1d(1, input_delay=1)).block_multiple == 2
    assert Sequential(up, AvgPool1d(1, 4, input_delay=1)).block_multiple == 2
    assert Sequential(up, AvgPool1d(1, 8, input_delay=1)).block_multiple == 4


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="lookahead"):
        StreamingConv1d(1, 1, 3, lookahead=3)
    with pytest.raises(ValueError, match="padding"):
        StreamingConvTranspose1d(1, 1, 4, 2, padding=4)
    with pytest.raises(ValueError, match="samples"):
        Delay(-1, 1)
    pool = AvgPool1d(2)
    with pytest.raises(ValueError, match="block_multiple=2"):
        pool.step(torch.zeros(1, 2, 5), pool.init_state(1))
    conv = StreamingConv1d(2, 2, 3)
    with pytest.raises(ValueError, match="expects 2 channels"):
        conv.step(torch.zeros(1, 3, 8), conv.init_state(1))
    with pytest.raises(ValueError, match="batch, channels, time"):
        conv.step(torch.zeros(2, 8), conv.init_state(1))
    with pytest.raises(ValueError, match="same-rate"):
        Residual(AvgPool1d(1), 1)
