"""AEROMamba, streaming: a complex-spectrogram U-Net along frequency with Mamba along time (music).

Layout follows AERO with the working "PAQM" Mamba wiring (Mamba(d_model = C/4) in every DConv branch,
after Snake, before the 1x1 conv). Input: (batch, samples) at 44.1 kHz, the low-resolution signal
already resampled to 44.1 kHz; output: the full-band signal, same rate and length.

    STFT (n_fft 512, hop 256; Nyquist bin dropped -> 256 bins) -> per-frame standardisation
    encoder x4: [1x1 2->C0] FTB -> Conv2d [8,1] freq stride s -> norm -> GELU -> DConv (depth 2) -> 1x1 + GLU
    decoder x4: cat(x, skip) -> Conv2d 3x3 + GLU -> ConvTranspose2d [8,1] freq stride s -> norm -> GELU
                (AERO concatenates the skip, it does not add it; the innermost layer's x is all zeros)
    output spectrum = input spectrum + std_frame * decoder output (residual) -> overlap-add iSTFT

Changes that make it streamable (everything else is AERO's):
- causal framing (`StreamingSTFT`/`StreamingISTFT`): latency = n_fft − hop, nothing else adds delay;
- per-frame statistics everywhere: the input is standardised per frame (AERO: per clip) and every
  GroupNorm/BatchNorm becomes a `FrameNorm` over channels (and frequency) of one frame;
- time convolutions (FTB k9, DConv k3 dilation 1/2, the decoder's 3x3) see only past frames;
- one-directional Mamba along time per frequency row (batch·freq rows); no LSTM, no attention.
The network predicts a residual on the input spectrum (the same-rate input already holds the low
band); the last decoder layer starts at zero, so an untrained model is the identity, delayed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .band_level import BandLevel, correction_gain
from .config import JsonConfig
from .dsp.level import band_edges, check_level_shape, power_law_shape, upgrade_level_fields
from .excitation import NoiseBands
from .mamba import Mamba
from .spectral import (
    CausalTimeConv,
    FrameNorm,
    FreqConv,
    FreqConvTranspose,
    StreamingISTFT,
    StreamingSTFT,
    check_framing,
    frame_moments,
)
from .streaming import State, StreamingModule, init_children, prefixed, substate

__all__ = ["AEROMamba", "AEROMambaConfig", "music_config", "paper_config", "parameter_count"]


@dataclass
class AEROMambaConfig(JsonConfig):
    """Hyper-parameters; defaults are the paper (PAQM) configuration."""

    sample_rate: int = 44100
    n_fft: int = 512
    hop: int = 256
    channels: int = 48  # after the first 1x1 conv; encoder layer i outputs channels·growth**i
    growth: int = 2
    strides: tuple[int, ...] = (4, 4, 2, 2)  # frequency strides, one encoder/decoder layer each
    kernel_size: int = 8  # frequency kernel of the strided (transposed) convs
    ftb_layers: int = 4  # encoder layers 0 .. ftb_layers-1 start with a frequency-transformation block
    ftb_reduce: int = 5
    ftb_kernel: int = 9
    norm_starts: int = 2  # layers with index >= this get FrameNorms (AERO: GroupNorm)
    norm_groups: int = 4
    dconv_depth: int = 2
    dconv_compress: int = 4
    dconv_kernel: int = 3
    dconv_init: float = 1e-3  # LayerScale
    dec_kernel: tuple[int, int] = (3, 3)  # (freq, time) of the decoder's conv before the GLU
    freq_emb: float = 0.2  # weight of the frequency embedding after encoder layer 0 (0: none)
    emb_scale: float = 10.0
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    backend: str = "auto"  # selective-scan backend of the Mamba blocks
    residual: bool = True  # predict a correction of the input spectrum (False: the full spectrum)
    # True: the spectrum passes as the input's and the network only predicts the excitation's bounded
    # level correction, so the rule (models/dsp/level.py) keeps owning the new band (needs noise_bands).
    correction_only: bool = False
    noise_bands: int = 0  # > 0: a noise excitation (models/excitation.py) with this many bands
    noise_low_hz: float = 3500.0  # lowest frequency the excitation can fill
    level_window: int = 512  # samples of input each level frame (one per hop) measures (models/band_level.py)
    # The rule's level above the input's top band (models/band_level.py): (Hz, dB) of a typical
    # spectrum, and a dB offset; the default is noisefill's f ** -2.
    level_shape: tuple[tuple[float, float], ...] = power_law_shape(2.0)
    level_offset_db: float = 0.0

    upgrade = staticmethod(upgrade_level_fields)  # runs that stored one level_slope

    def __post_init__(self) -> None:
        self.level_shape = check_level_shape(self.level_shape)
        self.strides = tuple(int(s) for s in self.strides)
        self.dec_kernel = tuple(int(k) for k in self.dec_kernel)
        check_framing(self.n_fft, self.hop)
        freqs = self.n_fft // 2
        if not self.strides:
            raise ValueError("strides must name at least one layer")
        for i, s in enumerate(self.strides):
            ker = min(self.kernel_size, freqs)
            if s < 1 or freqs % s or ker < s or (ker - s) % 2:
                raise ValueError(
                    f"strides[{i}]={s} does not fit {freqs} bins with kernel_size={ker}: "
                    "need stride | bins, stride <= kernel and kernel - stride even"
                )
            freqs //= s
        if len(self.dec_kernel) != 2 or self.dec_kernel[0] % 2 == 0 or self.dec_kernel[1] < 1:
            raise ValueError(f"dec_kernel must be (odd freq kernel, time kernel >= 1), got {self.dec_kernel}")
        if self.noise_bands < 0:
            raise ValueError(f"noise_bands must be >= 0, got {self.noise_bands}")
        if self.correction_only and not self.noise_bands:
            raise ValueError("correction_only needs a noise excitation (noise_bands > 0)")
        if self.level_window < self.hop:
            raise ValueError(f"level_window must be >= hop ({self.hop}), got {self.level_window}")
        if self.channels < 1 or self.growth < 1:
            raise ValueError(f"channels and growth must be >= 1, got {self.channels}, {self.growth}")
        for c in (self.channels * self.growth**i for i in range(len(self.strides))):
            if c % self.dconv_compress or c % self.norm_groups:
                raise ValueError(
                    f"channel count {c} must be divisible by dconv_compress={self.dconv_compress} "
                    f"and norm_groups={self.norm_groups}"
                )


def paper_config() -> AEROMambaConfig:
    """AEROMamba as published with the PAQM wiring: 18.55 M parameters, nfft 512 / hop 256."""
    return AEROMambaConfig()


def music_config() -> AEROMambaConfig:
    """Compact real-time preset: same framing (n_fft 512, hop 256, latency 256 samples = 5.8 ms).

    Two levels with frequency strides 8, 8 (256 -> 32 -> 4 bins, kernels 16) instead of four, 16/32
    channels, one DConv branch per level (two Mamba blocks, d_model 8 and 16: compression 2), an FTB in
    the first layer only (it keeps the global 256x256 frequency map that carries the low band up), a
    (3 freq x 1 frame) decoder conv. 0.32 M parameters. Cost is dominated by per-operator overhead at
    one to two frames per call, so layers were cut before channels. Sized for 512-sample blocks
    (2 hops, 11.6 ms); see `python -m realtime profile --model music --backend torch --model-block 512`. A 12-band noise
    excitation supplies the unpredictable part of the missing band (see models/excitation.py) at the
    level the input implies, times a correction the network predicts (models/band_level.py).
    """
    return AEROMambaConfig(
        noise_bands=12,
        # `python -m models.train fit-level --preset music --max-seconds 60` on the validation split (docs/TRAINING.md)
        level_shape=(
            (1000, 0),
            (1189.2, -1.04),
            (1414.2, -4.39),
            (1681.8, -5.54),
            (2000, -8.22),
            (2378.4, -10.33),
            (2828.4, -11.93),
            (3363.6, -13.54),
            (4000, -17.05),
            (4756.8, -19.68),
            (5656.9, -23.48),
            (6727.2, -26.98),
            (8000, -29.95),
            (9513.7, -33.66),
            (11313.7, -39.12),
            (13454.3, -43.46),
            (16000, -52.16),
            (19027.3, -66.64),
        ),
        # the fit's -1.83 dB calibrated on the validation split for the shipped weights (docs/TRAINING.md)
        level_offset_db=-0.25,
        channels=16,
        strides=(8, 8),
        kernel_size=16,
        ftb_layers=1,
        norm_starts=1,
        dconv_depth=1,
        dconv_compress=2,
        dec_kernel=(3, 1),
    )


def _streaming_children(module: nn.Module) -> dict[str, StreamingModule]:
    """The nearest StreamingModule descendants by dotted name (looking through ModuleLists)."""
    found: dict[str, StreamingModule] = {}
    for name, child in module.named_children():
        if isinstance(child, StreamingModule):
            found[name] = child
        else:
            found.update(prefixed(name, _streaming_children(child)))
    return found


class _Composite(StreamingModule):
    """A StreamingModule whose state is the union of its streaming children's states."""

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        return init_children(_streaming_children(self), batch, device)

    @staticmethod
    def _run(name: str, child: StreamingModule, x: Tensor, state: State, out: State) -> Tensor:
        y, s = child.step(x, substate(state, name))
        out.update(prefixed(name, s))
        return y


class Snake(nn.Module):
    """x + sin²(a·x)/a with one `a` per frequency row (AERO's Snake(freq_dim)); x: (B, F, T, C)."""

    def __init__(self, freqs: int) -> None:
        super().__init__()
        # AERO draws a ~ Exponential(0.1) (a mix of periods); the floor keeps 1/a bounded.
        self.alpha = nn.Parameter(torch.empty(freqs).exponential_(0.1).clamp_(min=0.1))

    def forward(self, x: Tensor) -> Tensor:
        a = self.alpha.view(-1, 1, 1)
        return x + torch.sin(a * x) ** 2 / a


class FTB(_Composite):
    """AERO's frequency-transformation block, with a causal k9 time conv and per-frame norms.

    A time-attention vector (1x1 to `reduce` channels, flatten with frequency, causal time conv back to
    C channels) gates the input, a learnt linear map mixes frequencies, then a 1x1 conv merges with the
    input. x: (B, C, F, T) -> same.
    """

    def __init__(self, channels: int, freqs: int, reduce: int, kernel: int) -> None:
        super().__init__()
        self.reduce_conv = FreqConv(channels, reduce)
        self.reduce_norm = FrameNorm(reduce)
        self.time = CausalTimeConv(reduce * freqs, channels, kernel)
        self.time_norm = FrameNorm(channels)
        self.freq_fc = nn.Linear(freqs, freqs, bias=False)
        self.merge = FreqConv(2 * channels, channels)
        self.merge_norm = FrameNorm(channels)

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        out: State = {}
        a = F.relu(self.reduce_norm(self.reduce_conv(x)))
        a = a.flatten(1, 2).unsqueeze(2)  # (B, reduce·F, 1, T): one row, all bins as channels
        a = F.relu(self.time_norm(self._run("time", self.time, a, state, out)))
        att = self.freq_fc((a * x).transpose(2, 3)).transpose(2, 3)
        return F.relu(self.merge_norm(self.merge(torch.cat([att, x], dim=1)))), out


class DConvBranch(_Composite):
    """One residual DConv layer: causal time conv to C/4, norm, Snake, Mamba per row, 1x1 + GLU, scale."""

    def __init__(self, channels: int, freqs: int, dilation: int, cfg: AEROMambaConfig) -> None:
        super().__init__()
        hidden = channels // cfg.dconv_compress
        self.freqs = freqs
        self.conv1 = CausalTimeConv(channels, hidden, cfg.dconv_kernel, dilation, freqs=freqs)
        # Channels-last inside the branch: the 1x1 conv is a Linear and the norms are LayerNorms over the
        # channels of one (row, frame), AERO's per-row GroupNorm(1) without its statistics over time.
        self.norm1 = nn.LayerNorm(hidden)
        self.act = Snake(freqs)
        self.mamba = Mamba(hidden, cfg.d_state, cfg.d_conv, cfg.expand, backend=cfg.backend)
        self.conv2 = nn.Linear(hidden, 2 * channels)
        self.norm2 = nn.LayerNorm(2 * channels)
        self.scale = nn.Parameter(torch.full((channels,), cfg.dconv_init))

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        state = prefixed("conv1", self.conv1.init_state(batch, device))
        state.update(prefixed("mamba", self.mamba.init_state(batch * self.freqs, device)))  # one row per bin
        return state

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        out: State = {}
        y = self._run("conv1", self.conv1, x, state, out).permute(0, 2, 3, 1)  # (B, F, T, hidden)
        y = self.act(self.norm1(y))
        b, f, t, hidden = y.shape
        y = self._run("mamba", self.mamba, y.reshape(b * f, t, hidden), state, out)  # one row per bin
        y = F.glu(self.norm2(self.conv2(y)), dim=-1) * self.scale
        return x + y.view(b, f, t, -1).permute(0, 3, 1, 2), out


def _freq_conv_geometry(freqs: int, stride: int, kernel_size: int) -> tuple[int, int]:
    """(kernel, padding) of a strided frequency conv that maps `freqs` bins to freqs / stride."""
    ker = min(kernel_size, freqs)
    return ker, (ker - stride) // 2


class EncoderLayer(_Composite):
    """[1x1] -> FTB -> strided freq conv -> norm -> GELU -> DConv branches -> 1x1 + GLU; (B, C, F, T)."""

    def __init__(
        self, chin: int, chout: int, freqs: int, stride: int, index: int, cfg: AEROMambaConfig, first: bool
    ) -> None:
        super().__init__()
        self.pre = FreqConv(chin, chout) if first else None
        c = chout if first else chin
        self.ftb = FTB(c, freqs, cfg.ftb_reduce, cfg.ftb_kernel) if index < cfg.ftb_layers else None
        ker, pad = _freq_conv_geometry(freqs, stride, cfg.kernel_size)
        self.conv = FreqConv(c, chout, ker, stride, pad)
        norm = index >= cfg.norm_starts
        self.norm1 = FrameNorm(chout, cfg.norm_groups) if norm else nn.Identity()
        self.dconv = nn.ModuleList(
            DConvBranch(chout, freqs // stride, 2**d, cfg) for d in range(cfg.dconv_depth)
        )
        self.rewrite = FreqConv(chout, 2 * chout)
        self.norm2 = FrameNorm(2 * chout, cfg.norm_groups) if norm else nn.Identity()

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        out: State = {}
        if self.pre is not None:
            x = self.pre(x)
        if self.ftb is not None:
            x = self._run("ftb", self.ftb, x, state, out)
        x = F.gelu(self.norm1(self.conv(x)))
        for d, branch in enumerate(self.dconv):
            x = self._run(f"dconv.{d}", branch, x, state, out)
        return F.glu(self.norm2(self.rewrite(x)), dim=1), out


class DecoderLayer(_Composite):
    """cat(x, skip) -> causal (freq x time) conv + GLU -> transposed freq conv -> norm -> GELU.

    Input: cat(x, skip), or the skip alone for the innermost layer (AERO feeds it zeros there).
    """

    def __init__(
        self,
        channels: int,
        chout: int,
        freqs: int,
        stride: int,
        index: int,
        cfg: AEROMambaConfig,
        innermost: bool,
        last: bool,
    ) -> None:
        super().__init__()
        kf, kt = cfg.dec_kernel
        self.rewrite = CausalTimeConv(
            2 * channels,
            4 * channels,
            kt,
            freqs=freqs,
            freq_kernel=kf,
            zero_inputs=channels if innermost else 0,
        )
        norm = index >= cfg.norm_starts
        self.norm1 = FrameNorm(4 * channels, cfg.norm_groups) if norm else nn.Identity()
        ker, pad = _freq_conv_geometry(freqs * stride, stride, cfg.kernel_size)
        self.conv_tr = FreqConvTranspose(2 * channels, chout, ker, stride, pad)
        self.norm2 = FrameNorm(chout, cfg.norm_groups) if norm and not last else nn.Identity()
        self.last = last

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        out: State = {}
        y = F.glu(self.norm1(self._run("rewrite", self.rewrite, x, state, out)), dim=1)
        z = self.norm2(self.conv_tr(y))
        return (z if self.last else F.gelu(z)), out


class AEROMamba(_Composite):
    """Streaming AEROMamba: (batch, samples) at `sample_rate` -> (batch, samples), same rate.

    `block_multiple` = hop; `latency` = n_fft − hop samples (the causal framing; every layer is
    causal in frames, so an impulse at sample t reappears at t + latency through the identity path).
    An input sample can change outputs from the start of its own hop onwards, never earlier.
    """

    traceable = True  # step branches on shapes only (checked in tests/test_traced.py)

    def __init__(self, config: AEROMambaConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else AEROMambaConfig()
        self.config = cfg
        self.sample_rate = cfg.sample_rate
        self.block_multiple = cfg.hop
        self.stft = StreamingSTFT(cfg.n_fft, cfg.hop)
        self.istft = StreamingISTFT(cfg.n_fft, cfg.hop)
        self.latency = self.istft.latency
        self.encoder = nn.ModuleList()
        decoder = []
        freqs, chin, chout = cfg.n_fft // 2, 2, cfg.channels
        for i, stride in enumerate(cfg.strides):
            self.encoder.append(EncoderLayer(chin, chout, freqs, stride, i, cfg, first=i == 0))
            innermost, last = i == len(cfg.strides) - 1, i == 0
            # The outermost layer predicts the complex correction, plus a noise-gain map when asked.
            out_channels = chin if i else 2 + (1 if cfg.noise_bands else 0)
            decoder.append(
                DecoderLayer(chout, out_channels, freqs // stride, stride, i, cfg, innermost, last)
            )
            freqs //= stride
            if i == 0 and cfg.freq_emb:
                # AERO's smooth ScaledEmbedding: cumulative Gaussian walk over bins, stored / emb_scale.
                walk = torch.randn(freqs, chout).cumsum(0) / torch.arange(1, freqs + 1).sqrt()[:, None]
                self.freq_embedding = nn.Parameter(walk / cfg.emb_scale)
            chin, chout = chout, chout * cfg.growth
        self.decoder = nn.ModuleList(reversed(decoder))  # innermost first, in call order
        if cfg.residual:
            nn.init.zeros_(self.decoder[-1].conv_tr.weight)
            nn.init.zeros_(self.decoder[-1].conv_tr.bias)
        self.noise: NoiseBands | None = None
        if cfg.noise_bands:
            # Band k's gain logit: the mean of the gain map over its bins, plus a learnt offset.
            edges = band_edges(cfg.noise_bands, cfg.noise_low_hz, cfg.sample_rate)
            bins = torch.arange(cfg.n_fft // 2) * cfg.sample_rate / cfg.n_fft
            member = torch.stack(
                [(bins >= lo) & (bins < hi) for lo, hi in zip(edges[:-1], edges[1:])]
            ).float()
            if (member.sum(1) == 0).any():
                raise ValueError(f"noise_bands={cfg.noise_bands} leaves a band without an STFT bin")
            self.register_buffer("band_average", member / member.sum(1, keepdim=True), persistent=False)
            self.noise_bias = nn.Parameter(torch.zeros(cfg.noise_bands))  # zero correction untrained
            # Per-frame gains, interpolated linearly over each hop.
            self.noise = NoiseBands(
                cfg.noise_bands, cfg.noise_low_hz, cfg.sample_rate, hop=cfg.hop, shape=cfg.level_shape
            )
            self.level = BandLevel(cfg.noise_bands, cfg.sample_rate, cfg.hop, cfg.level_window)

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        if x.dim() != 2:
            raise ValueError(f"AEROMamba: x must be (batch, samples), got shape {tuple(x.shape)}")
        self.check_block(x.shape[-1])
        cfg, out = self.config, {}
        full = self._run("stft", self.stft, x, state, out)
        spec = full[:, :, :-1]  # the network sees and predicts 2^k bins: the Nyquist bin is left out
        mean, std = (m.squeeze(1) for m in frame_moments(spec))  # (B, 1, 1, frames)
        h = (spec - mean) / std
        skips = []
        for i, layer in enumerate(self.encoder):
            h = self._run(f"encoder.{i}", layer, h, state, out)
            if i == 0 and cfg.freq_emb:
                h = h + cfg.freq_emb * cfg.emb_scale * self.freq_embedding.t()[None, :, :, None]
            skips.append(h)
        h = None
        for i, layer in enumerate(self.decoder):
            skip = skips.pop()
            h = self._run(f"decoder.{i}", layer, skip if h is None else torch.cat([h, skip], 1), state, out)
        if self.noise is not None:
            h, gain_map = h[:, :2], h[:, 2]
        # Residual: the input's Nyquist bin passes through untouched; otherwise it is zero, as in AERO.
        if cfg.correction_only:
            spec = full
        elif cfg.residual:
            spec = full + F.pad(h * std, (0, 0, 0, 1))
        else:
            spec = h * std + mean
        y = self._run("istft", self.istft, spec, state, out)
        if self.noise is not None:
            # The rule's level per band and frame (models/band_level.py) times the predicted correction.
            level = self._run("level", self.level, x, state, out)
            logits = torch.matmul(self.band_average, gain_map) + self.noise_bias[:, None]
            y = y + self._run("noise", self.noise, level * correction_gain(logits), state, out)
        return y, out


def parameter_count(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
