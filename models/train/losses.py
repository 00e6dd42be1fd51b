"""Training losses: multi-resolution STFT (linear and mel-scaled), feature matching, LSGAN / hinge.

Adversarial losses take lists of discriminator outputs (one tensor per sub-discriminator) and sum
over them, as HiFi-GAN does; feature matching averages the L1 distance over every layer of every
sub-discriminator, so its scale does not grow with the discriminator count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ADVERSARIAL = ("lsgan", "hinge")
_EPS_POWER = 1e-10  # keeps sqrt and log differentiable on silent bins


def hz_to_mel(f: Tensor | float) -> Tensor:
    """HTK mel scale."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> Tensor:
    """(n_mels, n_fft//2 + 1) triangular filters on the HTK mel scale, each of unit area (Slaney norm)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= {sample_rate / 2}, got f_min={f_min}, f_max={f_max}")
    if n_mels < 1:
        raise ValueError(f"n_mels must be >= 1, got {n_mels}")
    edges = mel_to_hz(
        torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64)
    )
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs - lo) / (mid - lo)
    down = (hi - freqs) / (hi - mid)
    bank = torch.clamp(torch.minimum(up, down), min=0.0) * (2.0 / (hi - lo))
    return bank.float()


class STFTLoss(nn.Module):
    """Spectral convergence + L1 of log magnitudes at one resolution; mel-scaled when n_mels is given."""

    def __init__(
        self, n_fft: int, hop: int, win: int, n_mels: int | None = None, sample_rate: int | None = None
    ):
        super().__init__()
        if not 0 < hop <= win <= n_fft:
            raise ValueError(f"need 0 < hop <= win <= n_fft, got n_fft={n_fft}, hop={hop}, win={win}")
        self.n_fft, self.hop, self.win = n_fft, hop, win
        self.register_buffer("window", torch.hann_window(win), persistent=False)
        if n_mels is not None:
            if sample_rate is None:
                raise ValueError("a mel-scaled STFTLoss needs sample_rate")
            self.register_buffer("mel", mel_filterbank(sample_rate, n_fft, n_mels), persistent=False)
        else:
            self.mel = None

    def magnitude(self, x: Tensor) -> Tensor:
        spec = torch.stft(x, self.n_fft, self.hop, self.win, self.window, return_complex=True)
        power = spec.real**2 + spec.imag**2
        if self.mel is not None:
            power = torch.matmul(self.mel, power)
        return torch.sqrt(power.clamp(min=_EPS_POWER))

    def forward(self, estimate: Tensor, reference: Tensor) -> Tensor:
        est, ref = self.magnitude(estimate), self.magnitude(reference)
        convergence = torch.linalg.norm(ref - est, dim=(-2, -1)) / torch.linalg.norm(ref, dim=(-2, -1)).clamp(
            min=1e-7
        )
        return convergence.mean() + F.l1_loss(torch.log(est), torch.log(ref))


class MultiResolutionSTFTLoss(nn.Module):
    """Mean of `STFTLoss` over resolutions given as (n_fft, hop, win) triples."""

    def __init__(
        self, resolutions: Sequence[Sequence[int]], n_mels: int | None = None, sample_rate: int | None = None
    ) -> None:
        super().__init__()
        if not resolutions:
            raise ValueError("resolutions must name at least one (n_fft, hop, win)")
        self.losses = nn.ModuleList(
            STFTLoss(*map(int, r), n_mels=n_mels, sample_rate=sample_rate) for r in resolutions
        )

    def forward(self, estimate: Tensor, reference: Tensor) -> Tensor:
        if estimate.shape != reference.shape:
            raise ValueError(
                f"estimate {tuple(estimate.shape)} and reference {tuple(reference.shape)} differ"
            )
        return sum(loss(estimate, reference) for loss in self.losses) / len(self.losses)


GIVEN_BAND_FRACTION = 0.8  # share of an example's cutoff below which its input is taken as intact


def given_band_loss(
    estimate: Tensor,
    reference: Tensor,
    cutoff_hz: Tensor,
    sample_rate: int,
    n_fft: int = 1024,
    fraction: float = GIVEN_BAND_FRACTION,
) -> Tensor:
    """Error energy over reference energy of the complex STFT below `fraction` x each example's cutoff.

    Unlike the magnitude losses it sees phase: it is 1 / SNR restricted to the band the input already
    held, so a generator that invents the missing band is also taught to leave the given one alone.
    """
    if estimate.shape != reference.shape or cutoff_hz.shape != estimate.shape[:1]:
        raise ValueError(
            f"need estimate and reference (batch, samples) and cutoff_hz (batch,), got "
            f"{tuple(estimate.shape)}, {tuple(reference.shape)}, {tuple(cutoff_hz.shape)}"
        )
    window = torch.hann_window(n_fft, device=estimate.device)
    est, ref = (
        torch.stft(x, n_fft, n_fft // 4, window=window, return_complex=True) for x in (estimate, reference)
    )
    freqs = torch.arange(n_fft // 2 + 1, device=estimate.device) * (sample_rate / n_fft)
    mask = (freqs[None, :] < fraction * cutoff_hz[:, None].to(freqs.dtype)).unsqueeze(-1)
    error = torch.sum((est - ref).abs().square() * mask)
    return error / torch.sum(ref.abs().square() * mask).clamp(min=1e-8)


def _check_kind(kind: str) -> None:
    if kind not in ADVERSARIAL:
        raise ValueError(f"adversarial loss must be one of {ADVERSARIAL}, got {kind!r}")


def discriminator_loss(real: Sequence[Tensor], fake: Sequence[Tensor], kind: str = "lsgan") -> Tensor:
    """Loss of the discriminators: real outputs pushed to 1 (LSGAN) / above 1 (hinge), fake to 0 / below -1."""
    _check_kind(kind)
    total = real[0].new_zeros(())
    for r, f in zip(real, fake):
        if kind == "lsgan":
            total = total + torch.mean((1 - r) ** 2) + torch.mean(f**2)
        else:
            total = total + torch.mean(F.relu(1 - r)) + torch.mean(F.relu(1 + f))
    return total


def generator_loss(fake: Sequence[Tensor], kind: str = "lsgan") -> Tensor:
    """Adversarial loss of the generator on the discriminators' outputs for its samples."""
    _check_kind(kind)
    total = fake[0].new_zeros(())
    for f in fake:
        total = total + (torch.mean((1 - f) ** 2) if kind == "lsgan" else -torch.mean(f))
    return total


def feature_matching_loss(real: Sequence[Sequence[Tensor]], fake: Sequence[Sequence[Tensor]]) -> Tensor:
    """Mean L1 distance between discriminator features of real and generated audio (real detached)."""
    pairs = [(r.detach(), f) for rs, fs in zip(real, fake) for r, f in zip(rs, fs)]
    if not pairs:
        raise ValueError("no discriminator features to match")
    return sum(F.l1_loss(f, r) for r, f in pairs) / len(pairs)


def stft_resolutions(sample_rate: int, scale: float = 1.0) -> list[tuple[int, int, int]]:
    """Three resolutions around 10/21/43 ms (n_fft 512/1024/2048 at 48 kHz), hop n_fft/4, scaled by `scale`."""
    out = []
    for n in (512, 1024, 2048):
        n_fft = 1 << max(4, round(math.log2(n * scale * sample_rate / 48000)))
        out.append((n_fft, n_fft // 4, n_fft))
    return out
