"""Wave-U-Mamba: a time-domain U-Net with Mamba blocks (arXiv 2409.09337), streamable block by block.

Wiring (the reference implementation's): the low-resolution signal, already resampled to 48 kHz,
goes through down blocks (conv + LayerNorm + leaky ReLU, a second such conv with a residual, average
pooling by 2, pre-norm Mamba blocks), a bottleneck (two such convs and Mamba blocks), then up blocks
(leaky ReLU + skip, weight-normed transposed conv, Mamba blocks, HiFi-GAN residual block), and a
final leaky ReLU -> conv -> tanh correction added to the input. Skips are the down blocks' outputs
before the inter-block LayerNorm; the bottleneck's output is not a skip.

The paper's convolutions look ahead (right padding, 'same' padding, transposed-conv padding). Streamed,
each of them is causal and its look-ahead becomes delay; the skips and the global residual are delayed
to match, and every pooling is kept in phase with the offline one, so the streamed output is the
offline model's output delayed by `latency` samples. With `causal=True` all look-ahead is removed
(latency 0): a different model, to be trained as such.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .band_level import BandLevel, correction_gain
from .config import JsonConfig
from .dsp.level import check_level_shape, power_law_shape, upgrade_level_fields
from .excitation import NoiseBands
from .layers import (
    AvgPool1d,
    ChannelLayerNorm,
    Delay,
    LeakyReLU,
    Residual,
    Sequential,
    StreamingConv1d,
    StreamingConvTranspose1d,
    output_delay,
    remove_weight_norm,
)
from .mamba import Mamba
from .streaming import State, StreamingModule, init_children, prefixed, substate

__all__ = ["MambaStack", "WaveUMamba", "WaveUMambaConfig", "paper_config", "speech_config"]


@dataclass
class WaveUMambaConfig(JsonConfig):
    """Hyper-parameters; defaults are the paper configuration.

    Up stage i goes from level len(channels) - 1 - i up to the next finer level (stage 0 starts at the
    bottleneck); `up_kernels` and `up_mambas` are indexed by stage.
    """

    channels: tuple[int, ...] = (32, 64, 128, 256)  # per down level, finest first
    final_channels: int = 16  # channels of the last up stage (48 kHz)
    down_kernel: int = 4
    down_convs: int = 2  # conv-norm-act layers per down/bottleneck block; the 2nd onwards residual
    down_mambas: tuple[int, ...] = (2, 2, 2, 2)
    bottleneck_kernel: int = 3
    bottleneck_mambas: int = 3
    up_kernels: tuple[int, ...] = (4, 4, 8, 8)
    up_mambas: tuple[int, ...] = (2, 2, 2, 2)
    resblock_kernel: int = 3
    resblock_dilations: tuple[int, ...] = (1, 3)
    post_kernel: int = 7
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    slope: float = 0.1  # leaky ReLU slope everywhere but before the output conv
    post_slope: float = 0.01  # torch's default, as in HiFi-GAN's output stage
    causal: bool = False  # True: every convolution causal, latency 0
    noise_bands: int = 0  # > 0: a noise-excitation head (models/excitation.py) with this many bands
    noise_low_hz: float = 3500.0  # lowest frequency the excitation can fill
    level_hop: int = 16  # samples per level frame (models/band_level.py); divides 2**levels
    level_window: int = 512  # samples of input each level frame measures
    # The rule's level above the input's top band (models/band_level.py): (Hz, dB) of a typical
    # spectrum, and a dB offset; the default is noisefill's f ** -2.
    level_shape: tuple[tuple[float, float], ...] = power_law_shape(2.0)
    level_offset_db: float = 0.0
    sample_rate: int = 48000
    backend: str = "auto"  # selective-scan backend (kernels.selective_scan)

    upgrade = staticmethod(upgrade_level_fields)  # runs that stored one level_slope

    def __post_init__(self) -> None:
        self.level_shape = check_level_shape(self.level_shape)
        for name in ("channels", "down_mambas", "up_kernels", "up_mambas", "resblock_dilations"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        levels = len(self.channels)
        if levels < 1:
            raise ValueError("channels must name at least one level")
        for name in ("down_mambas", "up_kernels", "up_mambas"):
            if len(getattr(self, name)) != levels:
                raise ValueError(
                    f"{name} must have one entry per level ({levels}), got {getattr(self, name)}"
                )
        if self.down_convs < 1:
            raise ValueError(f"down_convs must be >= 1, got {self.down_convs}")
        if any(k < 2 for k in self.up_kernels):
            raise ValueError(f"up_kernels must be >= 2 (stride 2), got {self.up_kernels}")
        if any(v < 0 for v in self.down_mambas + self.up_mambas) or self.bottleneck_mambas < 0:
            raise ValueError("Mamba block counts must be >= 0")
        if self.noise_bands < 0:
            raise ValueError(f"noise_bands must be >= 0, got {self.noise_bands}")
        bad_hop = self.level_hop < 1 or (2**levels) % self.level_hop or self.level_window < self.level_hop
        if self.noise_bands and bad_hop:
            raise ValueError(
                f"level_hop must divide {2**levels} and level_window must be >= level_hop, got "
                f"{self.level_hop}, {self.level_window}"
            )
        for name in ("resblock_kernel", "post_kernel"):
            if getattr(self, name) % 2 == 0:
                raise ValueError(f"{name} must be odd ('same' padding), got {getattr(self, name)}")


def paper_config() -> WaveUMambaConfig:
    """The reference layout: ~4.2 M parameters, right-padded convolutions (look-ahead -> latency)."""
    return WaveUMambaConfig()


# `python -m models.train fit-level --preset speech` on the validation split of the fifteen speech
# readers: the level shape and the offset that centres the rule alone (docs/TRAINING.md).
SPEECH_LEVEL_SHAPE: tuple[tuple[float, float], ...] = (
    (1000, 0),
    (1189.2, -1.81),
    (1414.2, -2.07),
    (1681.8, -4.28),
    (2000, -6.35),
    (2378.4, -8.1),
    (2828.4, -9.05),
    (3363.6, -9.46),
    (4000, -9.91),
    (4756.8, -11.74),
    (5656.9, -14),
    (6727.2, -15.51),
    (8000, -17.45),
    (9513.7, -19.22),
    (11313.7, -23.18),
    (13454.3, -26.14),
    (16000, -28.85),
    (19027.3, -39.88),
)
SPEECH_LEVEL_FIT_OFFSET_DB = -2.21


def speech_config() -> WaveUMambaConfig:
    """Compact and causal (latency 0): a 10 ms block (480 samples) in about 3.5 ms on one CPU core.

    A streamed block costs mostly per-op overhead, so the preset trims layers rather than channels:
    one conv per down block, one-dilation ResBlocks, and Mamba only where a block is short (3 and
    6 kHz: 30 and 60 steps per 10 ms), where it adds long context at little cost. A 12-band noise
    excitation supplies the unpredictable part of the missing band (see models/excitation.py) at the
    level the input implies, times a correction the network predicts (models/band_level.py).
    """
    return WaveUMambaConfig(
        noise_bands=12,
        channels=(8, 16, 32, 48),
        final_channels=8,
        down_convs=1,
        down_mambas=(0, 0, 0, 1),
        bottleneck_mambas=1,
        up_mambas=(1, 0, 0, 0),
        resblock_dilations=(1,),
        causal=True,
        level_shape=SPEECH_LEVEL_SHAPE,
        # the fit's offset calibrated on the validation split for the trained correction (docs/TRAINING.md)
        level_offset_db=SPEECH_LEVEL_FIT_OFFSET_DB - 1.35,
    )


# A pooled sample summarises a pair [2m, 2m + 1] and is complete only at 2m + 1, but upsampling puts
# it back at 2m: even causal convolutions would leave one sample of look-ahead per level. The causal
# wiring therefore shifts every upsampled path by one sample; the shift is part of that model (its
# offline form has it too), not a lag behind it, so the model stays causal at latency 0.
_CAUSAL_SHIFT = 1


class MambaStack(StreamingModule):
    """`x + Mamba(LayerNorm(x))`, repeated, on (batch, channels, time); states under "0.", "1.", ..."""

    def __init__(self, channels: int, count: int, config: WaveUMambaConfig) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(count))
        self.mambas = nn.ModuleList(
            Mamba(channels, config.d_state, config.d_conv, config.expand, backend=config.backend)
            for _ in range(count)
        )

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        return init_children({str(i): m for i, m in enumerate(self.mambas)}, batch, device)

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        if not self.mambas:
            return x, {}
        h = x.transpose(1, 2)
        new_state: State = {}
        for i, (norm, mamba) in enumerate(zip(self.norms, self.mambas)):
            normed = F.layer_norm(h, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
            y, sub = mamba.step(normed, substate(state, str(i)))
            h = h + y
            new_state.update(prefixed(str(i), sub))
        return h.transpose(1, 2), new_state


def _conv_norm_act(cin: int, cout: int, kernel: int, causal: bool, slope: float) -> Sequential:
    """Right-padded conv (look-ahead kernel - 1, or causal) -> LayerNorm over channels -> leaky ReLU."""
    conv = StreamingConv1d(cin, cout, kernel, lookahead=0 if causal else kernel - 1)
    return Sequential(conv, ChannelLayerNorm(cout), LeakyReLU(slope))


def _encoder_block(
    cin: int, cout: int, kernel: int, mambas: int, pool: bool, input_delay: int, config: WaveUMambaConfig
) -> Sequential:
    """conv-norm-act, residual conv-norm-acts, [average pool by 2 kept in phase], Mamba blocks."""
    layers: list[StreamingModule] = [_conv_norm_act(cin, cout, kernel, config.causal, config.slope)]
    for _ in range(config.down_convs - 1):
        layers.append(Residual(_conv_norm_act(cout, cout, kernel, config.causal, config.slope), cout))
    if pool:
        pool_delay = input_delay
        for layer in layers:
            pool_delay = output_delay(layer, pool_delay)
        layers.append(AvgPool1d(cout, 2, 2, input_delay=pool_delay))
    layers.append(MambaStack(cout, mambas, config))
    return Sequential(*layers, input_delay=input_delay)


def _resblock(channels: int, config: WaveUMambaConfig) -> Sequential:
    """HiFi-GAN ResBlock: per dilation d, x + conv_1(lrelu(conv_d(lrelu(x)))), 'same' padding."""
    k = config.resblock_kernel

    def conv(dilation: int) -> StreamingConv1d:
        lookahead = 0 if config.causal else (k - 1) * dilation // 2
        return StreamingConv1d(
            channels, channels, k, dilation=dilation, lookahead=lookahead, weight_norm=True
        )

    return Sequential(
        *(
            Residual(Sequential(LeakyReLU(config.slope), conv(d), LeakyReLU(config.slope), conv(1)), channels)
            for d in config.resblock_dilations
        )
    )


class WaveUMamba(StreamingModule):
    """(batch, samples) at 48 kHz -> (batch, samples) at 48 kHz; blocks of multiples of 2**levels."""

    traceable = True  # step branches on shapes only (checked in tests/test_traced.py)

    def __init__(self, config: WaveUMambaConfig | None = None) -> None:
        super().__init__()
        self.config = config = config if config is not None else paper_config()
        self.sample_rate = config.sample_rate
        channels = config.channels
        levels = len(channels)
        self.block_multiple = 2**levels

        # Encoder. `delay`: lag of the stream behind the offline model at the current point and rate.
        delay, cin = 0, 1
        skip_delays = []
        self.down = nn.ModuleList()
        self.down_norms = nn.ModuleList()
        for level, cout in enumerate(channels):
            block = _encoder_block(
                cin, cout, config.down_kernel, config.down_mambas[level], True, delay, config
            )
            delay = output_delay(block, delay)
            skip_delays.append(delay)
            self.down.append(block)
            self.down_norms.append(Sequential(ChannelLayerNorm(cout), LeakyReLU(config.slope)))
            cin = cout
        self.bottleneck = _encoder_block(
            cin, cin, config.bottleneck_kernel, config.bottleneck_mambas, False, delay, config
        )
        delay = output_delay(self.bottleneck, delay)
        self.bottleneck_norm = ChannelLayerNorm(cin)

        # Decoder: each skip is delayed to meet the main path.
        self.act = LeakyReLU(config.slope)
        self.skips = nn.ModuleList()
        self.up = nn.ModuleList()
        up_channels = list(channels[-2::-1]) + [config.final_channels]
        for stage, (cout, kernel) in enumerate(zip(up_channels, config.up_kernels)):
            level = levels - 1 - stage
            self.skips.append(Delay(delay - skip_delays[level], cin))
            padding = 0 if config.causal else (kernel - 2) // 2
            upsample: list[StreamingModule] = [
                StreamingConvTranspose1d(cin, cout, kernel, 2, padding, weight_norm=True)
            ]
            if config.causal:
                upsample.append(Delay(_CAUSAL_SHIFT, cout))
            block = Sequential(
                *upsample, MambaStack(cout, config.up_mambas[stage], config), _resblock(cout, config)
            )
            delay = output_delay(block, delay) - (_CAUSAL_SHIFT if config.causal else 0)
            self.up.append(block)
            cin = cout

        post_lookahead = 0 if config.causal else (config.post_kernel - 1) // 2
        post_conv = StreamingConv1d(cin, 1, config.post_kernel, lookahead=post_lookahead, weight_norm=True)
        self.post = Sequential(LeakyReLU(config.post_slope), post_conv)
        self.noise_head: Sequential | None = None
        self.noise: NoiseBands | None = None
        if config.noise_bands:
            # Per-band level corrections from the same features and window as the waveform correction.
            # Zero-initialised: an untrained model plays the rule's level (models/band_level.py).
            head = StreamingConv1d(cin, config.noise_bands, config.post_kernel, lookahead=post_lookahead)
            nn.init.zeros_(head.conv.weight)
            nn.init.zeros_(head.conv.bias)
            self.noise_head = Sequential(LeakyReLU(config.post_slope), head)
            self.noise = NoiseBands(
                config.noise_bands,
                config.noise_low_hz,
                config.sample_rate,
                hop=config.level_hop,
                shape=config.level_shape,
            )
            self.level = BandLevel(
                config.noise_bands, config.sample_rate, config.level_hop, config.level_window
            )
        delay = output_delay(self.post, delay)
        self.latency = delay
        self.residual_delay = Delay(delay, 1)

    def remove_weight_norm(self) -> WaveUMamba:
        """Fold weight norm into plain weights for inference (after loading trained weights)."""
        remove_weight_norm(self)
        return self

    def _children(self) -> dict[str, StreamingModule]:
        named: dict[str, StreamingModule] = {}
        for i, (down, norm) in enumerate(zip(self.down, self.down_norms)):
            named[f"down.{i}"], named[f"down_norms.{i}"] = down, norm
        named["bottleneck"], named["bottleneck_norm"] = self.bottleneck, self.bottleneck_norm
        for i, (skip, up) in enumerate(zip(self.skips, self.up)):
            named[f"skips.{i}"], named[f"up.{i}"] = skip, up
        named["post"], named["residual_delay"] = self.post, self.residual_delay
        if self.noise is not None:
            named["noise_head"], named["noise"] = self.noise_head, self.noise
            named["level"] = self.level
        return named

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        device = device if device is not None else next(self.parameters()).device
        return init_children(self._children(), batch, device)

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        if x.dim() != 2:
            raise ValueError(f"WaveUMamba expects (batch, samples), got shape {tuple(x.shape)}")
        self.check_block(x.shape[-1])
        new_state: State = {}

        def run(name: str, module: StreamingModule, h: Tensor) -> Tensor:
            y, sub = module.step(h, substate(state, name))
            new_state.update(prefixed(name, sub))
            return y

        h = x.unsqueeze(1)
        skips = []
        for i, (down, norm) in enumerate(zip(self.down, self.down_norms)):
            h = run(f"down.{i}", down, h)
            skips.append(h)
            h = run(f"down_norms.{i}", norm, h)
        h = run("bottleneck_norm", self.bottleneck_norm, run("bottleneck", self.bottleneck, h))
        for i, (skip, up) in enumerate(zip(self.skips, self.up)):
            h = self.act.apply_pointwise(h) + run(f"skips.{i}", skip, skips[-1 - i])
            h = run(f"up.{i}", up, h)
        correction = torch.tanh(run("post", self.post, h))
        delayed = run("residual_delay", self.residual_delay, x.unsqueeze(1))
        y = correction + delayed
        if self.noise is not None:
            hop = self.level.hop
            level = run("level", self.level, delayed.squeeze(1))  # per frame, aligned with the output
            logits = run("noise_head", self.noise_head, h)[..., hop - 1 :: hop]  # each frame's last sample
            y = y + run("noise", self.noise, level * correction_gain(logits)).unsqueeze(1)
        return y.squeeze(1), new_state
