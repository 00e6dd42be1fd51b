"""Discriminators: HiFi-GAN's multi-period and multi-scale, and MelGAN's multi-scale (AERO's choice).

Every discriminator maps a waveform batch (batch, samples) to a list of logits tensors (one per
sub-discriminator) and a list of feature lists (every hidden activation, for feature matching).
`width` scales every channel count (rounded to the group count) for small or fast variants.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

KINDS = ("mpd", "msd", "melgan")
_SLOPE = 0.1
Outputs = tuple[list[Tensor], list[list[Tensor]]]


def _width(channels: int, width: float, groups: int = 1) -> int:
    return max(groups, round(channels * width / groups) * groups)


class PeriodDiscriminator(nn.Module):
    """HiFi-GAN's DiscriminatorP: the waveform folded into `period` columns, 2-D convs along time."""

    def __init__(self, period: int, width: float = 1.0, kernel: int = 5, stride: int = 3) -> None:
        super().__init__()
        self.period = period
        chans = [1] + [_width(c, width) for c in (32, 128, 512, 1024, 1024)]
        pad = (kernel - 1) // 2
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(a, b, (kernel, 1), (stride if i < 4 else 1, 1), (pad, 0)))
            for i, (a, b) in enumerate(zip(chans[:-1], chans[1:]))
        )
        self.post = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, (1, 0)))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        b, t = x.shape
        if t % self.period:
            x = F.pad(x, (0, self.period - t % self.period), mode="reflect")
        h = x.view(b, 1, -1, self.period)
        feats = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), _SLOPE)
            feats.append(h)
        h = self.post(h)
        feats.append(h)
        return h.flatten(1), feats


class ScaleDiscriminator(nn.Module):
    """A strided, grouped 1-D conv stack; `layers` are (in, out, kernel, stride, groups)."""

    def __init__(self, layers: Sequence[tuple[int, int, int, int, int]], spectral: bool = False) -> None:
        super().__init__()
        norm = spectral_norm if spectral else weight_norm
        self.convs = nn.ModuleList(
            norm(nn.Conv1d(a, b, k, s, (k - 1) // 2, groups=g)) for a, b, k, s, g in layers
        )
        self.post = norm(nn.Conv1d(layers[-1][1], 1, 3, 1, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        h, feats = x.unsqueeze(1), []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), _SLOPE)
            feats.append(h)
        h = self.post(h)
        feats.append(h)
        return h.flatten(1), feats


def hifigan_scale_layers(width: float = 1.0) -> list[tuple[int, int, int, int, int]]:
    """HiFi-GAN's DiscriminatorS."""
    c = [_width(n, width, 16) for n in (128, 128, 256, 512, 1024, 1024, 1024)]
    return [
        (1, c[0], 15, 1, 1),
        (c[0], c[1], 41, 2, 4),
        (c[1], c[2], 41, 2, 16),
        (c[2], c[3], 41, 4, 16),
        (c[3], c[4], 41, 4, 16),
        (c[4], c[5], 41, 1, 16),
        (c[5], c[6], 5, 1, 1),
    ]


def melgan_scale_layers(
    width: float = 1.0, ndf: int = 16, n_layers: int = 4
) -> list[tuple[int, int, int, int, int]]:
    """MelGAN's NLayerDiscriminator (ndf 16, 4 stride-4 layers, kernel 41, groups = channels / 4)."""
    out, prev = [(1, _width(ndf, width, 4), 15, 1, 1)], _width(ndf, width, 4)
    for _ in range(n_layers):
        nxt = min(_width(prev * 4, 1.0, 4), _width(1024, width, 4))
        out.append((prev, nxt, 41, 4, prev // 4))
        prev = nxt
    out.append((prev, min(prev * 2, _width(1024, width, 4)), 5, 1, 1))
    return out


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), width: float = 1.0) -> None:
        super().__init__()
        self.discs = nn.ModuleList(PeriodDiscriminator(p, width) for p in periods)

    def forward(self, x: Tensor) -> Outputs:
        outs = [d(x) for d in self.discs]
        return [o[0] for o in outs], [o[1] for o in outs]


class MultiScaleDiscriminator(nn.Module):
    """Sub-discriminators on the waveform and on 2x / 4x average-pooled copies of it."""

    def __init__(self, kind: str = "msd", scales: int = 3, width: float = 1.0) -> None:
        super().__init__()
        if kind == "msd":  # HiFi-GAN: spectral norm on the full-rate one
            self.discs = nn.ModuleList(
                ScaleDiscriminator(hifigan_scale_layers(width), spectral=i == 0) for i in range(scales)
            )
        elif kind == "melgan":
            self.discs = nn.ModuleList(ScaleDiscriminator(melgan_scale_layers(width)) for _ in range(scales))
        else:
            raise ValueError(f"kind must be 'msd' or 'melgan', got {kind!r}")
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, x: Tensor) -> Outputs:
        logits, feats = [], []
        for i, d in enumerate(self.discs):
            if i:
                x = self.pool(x.unsqueeze(1)).squeeze(1)
            y, f = d(x)
            logits.append(y)
            feats.append(f)
        return logits, feats


class Discriminators(nn.Module):
    """Several discriminator families side by side; outputs are concatenated lists."""

    def __init__(self, kinds: Sequence[str], width: float = 1.0) -> None:
        super().__init__()
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown or not kinds:
            raise ValueError(f"discriminator kinds must be a non-empty subset of {KINDS}, got {list(kinds)}")
        self.kinds = tuple(kinds)
        self.members = nn.ModuleList(
            MultiPeriodDiscriminator(width=width) if k == "mpd" else MultiScaleDiscriminator(k, width=width)
            for k in kinds
        )

    def forward(self, x: Tensor) -> Outputs:
        if x.dim() != 2:
            raise ValueError(f"discriminators take (batch, samples), got {tuple(x.shape)}")
        logits, feats = [], []
        for m in self.members:
            y, f = m(x)
            logits += y
            feats += f
        return logits, feats


def split_batch(outputs: Outputs, n: int) -> tuple[Outputs, Outputs]:
    """Outputs of a batch of 2n (first n real, then n generated) split into (real, fake) outputs."""
    logits, feats = outputs
    real = ([y[:n] for y in logits], [[f[:n] for f in fs] for fs in feats])
    fake = ([y[n:] for y in logits], [[f[n:] for f in fs] for fs in feats])
    return real, fake


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "KINDS",
    "Discriminators",
    "MultiPeriodDiscriminator",
    "MultiScaleDiscriminator",
    "PeriodDiscriminator",
    "ScaleDiscriminator",
    "count_parameters",
    "split_batch",
]
