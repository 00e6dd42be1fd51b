"""Streaming spectral layers: causal STFT, overlap-add iSTFT, per-frame norms, causal time convolutions.

Layout: spectra are real tensors (batch, 2, freq, frames) with the real part in channel 0 and the
imaginary part in channel 1 (complex-as-channels, as AERO uses them; real tensors also export to ONNX
where complex ones do not). Feature maps are (batch, channels, freq, frames); every layer here works
on one frame at a time or looks only backwards in time, so cutting the frame axis into blocks and
carrying the states gives exactly the one-pass result.

Framing: analysis frame j covers input samples [(j + 1)·hop − n_fft, (j + 1)·hop): it ends at the
last sample of the j-th hop (no centring, no reflection padding; the n_fft − hop samples before the
stream start are zeros). The inverse overlap-adds frames at the same positions and emits a sample
once no later frame can touch it, so STFT -> iSTFT is the identity delayed by exactly n_fft − hop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .streaming import State, StreamingModule, with_context

__all__ = [
    "CausalTimeConv",
    "FrameNorm",
    "FreqConv",
    "FreqConvTranspose",
    "conv_freq_time",
    "conv_transpose_freq",
    "StreamingISTFT",
    "StreamingSTFT",
    "check_framing",
    "frame_moments",
    "hann_window",
]


def hann_window(n: int) -> Tensor:
    """Periodic Hann window in float64 (torch.hann_window's default shape)."""
    return torch.hann_window(n, periodic=True, dtype=torch.float64)


def check_framing(n_fft: int, hop: int) -> None:
    """Raise ValueError unless (n_fft, hop) is a framing the streaming STFT pair supports."""
    if n_fft < 2 or n_fft % 2:
        raise ValueError(f"n_fft must be an even integer >= 2, got {n_fft}")
    if hop < 1 or n_fft % hop or hop > n_fft // 2:
        # hop <= n_fft/2 keeps the Hann window-square envelope of the overlap-add above zero
        raise ValueError(f"hop must divide n_fft={n_fft} and be <= n_fft/2, got {hop}")


class StreamingSTFT(StreamingModule):
    """Causal STFT: (batch, samples) blocks of a multiple of `hop` -> (batch, 2, n_fft//2 + 1, frames).

    One frame per hop; the last n_fft − hop input samples are carried in the state ("ctx").
    Hann window, scaled by 1/sqrt(n_fft) like torch.stft(normalized=True). The DFT is a matmul with
    a fixed basis: exact to float32 rounding and free of complex dtypes.
    """

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        check_framing(n_fft, hop)
        self.n_fft, self.hop = n_fft, hop
        self.n_bins = n_fft // 2 + 1
        self.block_multiple = hop
        self.latency = 0
        n = torch.arange(n_fft, dtype=torch.float64)
        k = torch.arange(self.n_bins, dtype=torch.float64)
        phase = 2 * math.pi * torch.outer(n, k) / n_fft
        win = (hann_window(n_fft) / math.sqrt(n_fft)).unsqueeze(1)
        basis = torch.cat([win * torch.cos(phase), -win * torch.sin(phase)], dim=1)  # (n_fft, 2·bins)
        self.register_buffer("basis", basis.float(), persistent=False)

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        device = device if device is not None else self.basis.device
        return {"ctx": torch.zeros(batch, self.n_fft - self.hop, device=device)}

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        if x.dim() != 2:
            raise ValueError(f"StreamingSTFT: x must be (batch, samples), got shape {tuple(x.shape)}")
        self.check_block(x.shape[-1])
        full, ctx = with_context(x, state["ctx"])
        frames = full.unfold(-1, self.n_fft, self.hop)  # (batch, frames, n_fft)
        spec = frames @ self.basis  # (batch, frames, 2·bins)
        spec = spec.unflatten(-1, (2, self.n_bins)).permute(0, 2, 3, 1)
        return spec, {"ctx": ctx}


class StreamingISTFT(StreamingModule):
    """Overlap-add inverse of `StreamingSTFT`: (batch, 2, bins, frames) -> (batch, frames·hop).

    `bins` may be n_fft//2 + 1 or n_fft//2 (Nyquist bin dropped, taken as zero). Imaginary parts of
    the DC and Nyquist bins are ignored (as irfft does). Hann synthesis window; the overlap-added sum
    is divided by the steady-state window-square envelope (period hop), so STFT -> iSTFT is the
    identity. The raw overlap sums of the last n_fft − hop samples, still waiting for later frames,
    are carried in the state ("tail"). `latency` = n_fft − hop: the delay of the STFT -> iSTFT pair.
    `block_multiple` is 1 (frames).
    """

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        check_framing(n_fft, hop)
        self.n_fft, self.hop = n_fft, hop
        self.n_bins = n_fft // 2 + 1
        self.block_multiple = 1
        self.latency = n_fft - hop
        n = torch.arange(n_fft, dtype=torch.float64)
        k = torch.arange(self.n_bins, dtype=torch.float64)
        phase = 2 * math.pi * torch.outer(k, n) / n_fft
        weight = torch.full((self.n_bins, 1), 2.0, dtype=torch.float64)
        weight[0] = weight[-1] = 1.0  # DC and Nyquist appear once in a real signal's spectrum
        win = hann_window(n_fft)
        scale = weight * win / math.sqrt(n_fft)  # irfft's 1/n_fft times normalized=True's sqrt(n_fft)
        basis = torch.cat([scale * torch.cos(phase), -scale * torch.sin(phase)])  # (2·bins, n_fft)
        self.register_buffer("basis", basis.float(), persistent=False)
        envelope = (win**2).reshape(n_fft // hop, hop).sum(0)
        self.register_buffer("inv_envelope", (1.0 / envelope).float(), persistent=False)

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        device = device if device is not None else self.basis.device
        return {"tail": torch.zeros(batch, self.n_fft - self.hop, device=device)}

    def step(self, spec: Tensor, state: State) -> tuple[Tensor, State]:
        if spec.dim() != 4 or spec.shape[1] != 2 or spec.shape[2] not in (self.n_bins - 1, self.n_bins):
            raise ValueError(
                f"StreamingISTFT: spec must be (batch, 2, {self.n_bins - 1} or {self.n_bins}, frames), "
                f"got shape {tuple(spec.shape)}"
            )
        batch, _, bins, frames = spec.shape
        if bins < self.n_bins:
            spec = F.pad(spec, (0, 0, 0, 1))
        seg = (spec.permute(0, 3, 1, 2).reshape(batch, frames, 2 * self.n_bins) @ self.basis).unflatten(
            -1, (self.n_fft // self.hop, self.hop)
        )  # (batch, frames, n_fft/hop, hop)
        parts = self.n_fft // self.hop
        total = F.pad(state["tail"], (0, frames * self.hop))
        for r in range(parts):  # chunk r of frame j lands on output hop j + r
            total = total + F.pad(seg[:, :, r].reshape(batch, -1), (r * self.hop, (parts - 1 - r) * self.hop))
        out = total[:, : frames * self.hop] * self.inv_envelope.repeat(frames)
        return out, {"tail": total[:, frames * self.hop :]}


def frame_moments(
    x: Tensor, groups: int = 1, per_row: bool = False, eps: float = 1e-5
) -> tuple[Tensor, Tensor]:
    """Mean and std of each frame of x (batch, channels, freq, frames), never across frames.

    Statistics over each of `groups` channel groups and, unless `per_row`, all frequency rows of the
    frame; with `per_row` each (frequency row, frame) has its own. std = sqrt(biased var + eps).
    Returns (mean, std), each (batch, groups, 1, freq or 1, frames): they broadcast against
    x.unflatten(1, (groups, channels // groups)).
    """
    if x.dim() != 4:
        raise ValueError(f"x must be (batch, channels, freq, frames), got shape {tuple(x.shape)}")
    if groups < 1 or x.shape[1] % groups:
        raise ValueError(f"groups={groups} must be >= 1 and divide the channel count {x.shape[1]}")
    dims = (2,) if per_row else (2, 3)
    var, mean = torch.var_mean(x.unflatten(1, (groups, -1)), dim=dims, keepdim=True, correction=0)
    return mean, torch.sqrt(var + eps)


class FrameNorm(nn.Module):
    """GroupNorm computed on one frame at a time: the streaming stand-in for GroupNorm over time.

    x: (batch, channels, freq, frames). Statistics as in `frame_moments` (per channel group, over the
    group's channels and, unless `per_row`, all frequency rows of the frame), then a per-channel
    affine (weight 1, bias 0 at init). Stateless: a frame's output never depends on other frames.
    """

    def __init__(self, channels: int, groups: int = 1, per_row: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        if channels < 1 or groups < 1 or channels % groups:
            raise ValueError(f"groups={groups} must be >= 1 and divide channels={channels}")
        if per_row and groups != 1:
            raise ValueError("per_row normalisation takes groups=1 (all channels of a row)")
        self.channels, self.groups, self.per_row, self.eps = channels, groups, per_row, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"FrameNorm: x must be (batch, {self.channels}, freq, frames), got shape {tuple(x.shape)}"
            )
        # Fused kernels, with every frame (and row) moved into the batch so no statistic spans frames.
        if self.per_row:
            y = F.layer_norm(x.permute(0, 2, 3, 1), (self.channels,), self.weight, self.bias, self.eps)
            return y.permute(0, 3, 1, 2)
        batch, channels, freqs, frames = x.shape
        y = x.permute(0, 3, 1, 2).reshape(batch * frames, channels, freqs)
        y = F.group_norm(y, self.groups, self.weight, self.bias, self.eps)
        return y.view(batch, frames, channels, freqs).permute(0, 2, 3, 1)


def conv_freq_time(
    x: Tensor, weight: Tensor, bias: Tensor | None, stride: int = 1, padding: int = 0, dilation: int = 1
) -> Tensor:
    """Conv2d of x (batch, C, freq, frames) with weight (out, C_w, kf, kt), "valid" along frames.

    Frequency: stride `stride`, `padding` zeros on both sides; frames: dilation `dilation`, no padding.
    Computed as im2col views + one matmul: CPU conv2d kernels are several times slower on these thin
    maps. If C_w > C, x holds only the last C input channels (the first C_w − C are known zeros) and
    only their weights are used. Returns (batch, out, freq', frames') (a permuted view).
    """
    out_ch, w_ch, kf, kt = weight.shape
    channels = x.shape[1]
    w = weight.flatten(1)
    if w_ch != channels:
        w = w[:, (w_ch - channels) * kf * kt :]
    if kf == kt == 1 and stride == 1 and not padding:  # pointwise: no patches to gather
        return F.linear(x.permute(0, 2, 3, 1), w, bias).permute(0, 3, 1, 2)
    if padding:
        x = F.pad(x, (0, 0, padding, padding))
    cols = x.unfold(2, kf, stride)  # (B, C, F', T, kf)
    if kt > 1:
        cols = cols.unfold(3, (kt - 1) * dilation + 1, 1)  # (B, C, F', T', kf, span)
        if dilation > 1:
            cols = cols[..., ::dilation]
    else:
        cols = cols.unsqueeze(-1)
    cols = cols.permute(0, 2, 3, 1, 4, 5).flatten(3)  # (B, F', T', C·kf·kt), the weight's order
    return F.linear(cols, w, bias).permute(0, 3, 1, 2)


def conv_transpose_freq(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int) -> Tensor:
    """ConvTranspose2d with kernel (k, 1) along frequency of x (batch, C, freq, frames), as one matmul.

    weight: (C, out, k, 1). Equals F.conv_transpose2d(x, weight, bias, (stride, 1), (padding, 0)).
    """
    in_ch, out_ch, k, _ = weight.shape
    batch, _, freqs, frames = x.shape
    cols = x.permute(0, 3, 2, 1).reshape(batch * frames * freqs, in_ch) @ weight.reshape(in_ch, out_ch * k)
    cols = cols.view(batch * frames, freqs, out_ch * k).transpose(1, 2)
    full = F.fold(cols, ((freqs - 1) * stride + k, 1), (k, 1), stride=(stride, 1))  # overlap-add over freq
    y = full[:, :, padding : full.shape[2] - padding, 0]
    if bias is not None:
        y = y + bias.view(-1, 1)
    return y.view(batch, frames, out_ch, -1).permute(0, 2, 3, 1)


class FreqConv(nn.Conv2d):
    """nn.Conv2d over (batch, C, freq, frames) with a frequency stride and padding, computed by
    `conv_freq_time`; a time kernel > 1 needs earlier frames, see `CausalTimeConv`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        freq_kernel: int = 1,
        stride: int = 1,
        padding: int = 0,
        time_kernel: int = 1,
        dilation: int = 1,
    ) -> None:
        super().__init__(
            in_channels, out_channels, (freq_kernel, time_kernel), (stride, 1), (padding, 0), (1, dilation)
        )

    def forward(self, x: Tensor) -> Tensor:
        return conv_freq_time(x, self.weight, self.bias, self.stride[0], self.padding[0], self.dilation[1])


class FreqConvTranspose(nn.ConvTranspose2d):
    """nn.ConvTranspose2d with kernel (k, 1) and stride (stride, 1), computed by `conv_transpose_freq`."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, padding: int = 0
    ) -> None:
        super().__init__(in_channels, out_channels, (kernel, 1), (stride, 1), (padding, 0))

    def forward(self, x: Tensor) -> Tensor:
        return conv_transpose_freq(x, self.weight, self.bias, self.stride[0], self.padding[0])


class CausalTimeConv(StreamingModule):
    """Conv over (freq, frames) of (batch, channels, freq, frames) maps, causal along frames.

    Kernel (freq_kernel, kernel_size) with time dilation `dilation`; frequency is zero-padded to keep
    its size, time sees only the current and earlier frames: the last (kernel_size − 1)·dilation input
    frames are carried in the state ("ctx", (batch, channels, freqs, context)). With freq_kernel = 1 this
    is a per-row time convolution, the same as a Conv1d on (batch·freq, channels, frames).

    `zero_inputs`: the first that many input channels are known to be zero and are not passed in
    (AERO's innermost decoder concatenates a zero map with the skip); their weights keep the layer's
    AERO shape but are skipped in compute and state.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int = 1,
        freqs: int = 1,
        freq_kernel: int = 1,
        zero_inputs: int = 0,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or dilation < 1:
            raise ValueError(f"kernel_size and dilation must be >= 1, got {kernel_size}, {dilation}")
        if freq_kernel < 1 or freq_kernel % 2 == 0:
            raise ValueError(f"freq_kernel must be odd (centred along frequency), got {freq_kernel}")
        if not 0 <= zero_inputs < in_channels:
            raise ValueError(f"zero_inputs must be in [0, {in_channels}), got {zero_inputs}")
        self.conv = FreqConv(
            in_channels,
            out_channels,
            freq_kernel,
            padding=freq_kernel // 2,
            time_kernel=kernel_size,
            dilation=dilation,
        )
        self.live_inputs = in_channels - zero_inputs
        self.freqs = freqs
        self.context = (kernel_size - 1) * dilation
        self.block_multiple = 1

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        if self.context == 0:
            return {}
        device = device if device is not None else self.conv.weight.device
        return {"ctx": torch.zeros(batch, self.live_inputs, self.freqs, self.context, device=device)}

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        if x.dim() != 4 or x.shape[1] != self.live_inputs or x.shape[2] != self.freqs:
            raise ValueError(
                f"CausalTimeConv: x must be (batch, {self.live_inputs}, {self.freqs}, frames), "
                f"got shape {tuple(x.shape)}"
            )
        if not self.context:
            return self.conv(x), {}
        full, ctx = with_context(x, state["ctx"])
        return self.conv(full), {"ctx": ctx}
