"""MambaWave: a DiffWave-style conditional diffusion denoiser with Mamba blocks, and a streaming sampler.

The denoiser eps_theta(x_t, c, t) predicts the noise in x_t, a noised 48 kHz waveform, given c, the
band-limited input already resampled to 48 kHz, and the diffusion step t. DiffWave's wiring with each
dilated convolution replaced by a causal, streaming Mamba block:

    input:      causal conv(x_t) -> ReLU                                  (C channels)
    condition:  causal conv(c) -> LayerNorm over channels -> SiLU -> one 1x1 projection to 2C per layer
    step:       sinusoidal(t) -> FC -> SiLU -> FC -> SiLU -> one projection to C per layer
    layer i:    h = x + step_i;  z = 1x1(Mamba(LayerNorm(h))) + cond_i;  g = tanh(z_a) * sigmoid(z_b)
                res, skip = 1x1(g);  x = (x + res) / sqrt(2)
    output:     sum(skips) / sqrt(N) -> 1x1 -> ReLU -> 1x1 (zero-initialised, as DiffWave) -> net
                eps = (x_t - sqrt(abar_t) c) / sqrt(1 - abar_t) + net   (zero net: x_0 = c)

Every part is causal and per-sample apart from the convolutions' context and the Mamba states, so the
denoiser streams at latency 0 with any block length.

`MambaWave` is the generator: each block runs all K steps of a deterministic DDIM sampler (eta = 0)
from x_K = sqrt(abar) guess + sqrt(1 - abar) noise (the forward process at the first pass's step
applied to the best estimate of x_0 before any pass) to x_0. Each sampling step runs the shared
denoiser weights with its own carried state ("k<j>." holds the state of the pass that produces x_j),
and the conditioning features, which do not depend on the step, are computed once per block
("cond."). The noise is a pure function of the stream's seed and the absolute sample index
(`counter_noise`), so any partition of a signal into blocks gives the one-pass output.

Two domains. The paper's model (no `noise_bands`) diffuses the waveform: x_0 is the 48 kHz output.
There a few per cent of the denoiser's error is louder than the whole missing band, which sits 30-60
dB below the given one, so the new band's level is whatever the error makes it (CPU training
measured +7 to +60 dB). The `mambawave` preset diffuses the new band in the band-normalised domain:
x_0 is the part of the signal above the crossover divided by the amplitude the level rule gives it
(models/band_level.py, the one owner of the new band's level), so unit RMS is the rule's level, the
denoiser's error is measured against the band it makes, and the sampler starts from the rule-level
noise excitation in those units: an untrained model plays the input plus noisefill's band, and what
training can add is the structure the input predicts (harmonics, the band's shape) and a level
correction bounded by the targets' clamp.

Training (`diffusion_loss`) is DiffWave's epsilon-MSE on whole segments, run offline from the initial
state; the sampler reuses the training schedule at K of its steps (`sampling_timesteps`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .band_level import BandLevel
from .config import JsonConfig
from .dsp.level import check_level_shape, power_law_shape
from .excitation import NoiseBands
from .layers import StreamingConv1d
from .mamba import Mamba
from .streaming import State, StreamingModule, prefixed, substate

__all__ = [
    "MambaWave",
    "MambaWaveConfig",
    "MambaWaveConditioner",
    "MambaWaveDenoiser",
    "MAX_SEED",
    "alpha_bars",
    "counter_noise",
    "diffusion_loss",
    "mambawave_paper_config",
    "mambawave_small_config",
    "sampling_timesteps",
]

# Seeds and stream positions live in fp32 state tensors (the export path feeds every state as float32),
# so each stored number must be an integer below 2**24 to be exact.
MAX_SEED = 1 << 24
# The position is stored as (high, low) with low < 2**20: exact in fp32 for 2**44 samples (11 years at
# 48 kHz), and low + a block of up to 2**23 samples stays exact before it is carried into high.
_POS_SPLIT = 1 << 20
MIN_SNR_GAMMA = 5.0  # the training loss weights a step by min(SNR, gamma) / SNR (`diffusion_loss`)
# The band-normalised domain (noise_bands > 0) divides the new band by the rule's amplitude. Where the
# rule is silent the scale stops at this floor (-100 dB) instead of dividing by zero.
SCALE_FLOOR = 1e-5
# Clean estimates are clamped to audio's range in the waveform domain, and to this in the normalised
# one: a band up to about 12 dB louder than the rule (RMS 4, peaks near 16) passes unclipped.
NORMALISED_CLIP = 16.0


@dataclass
class MambaWaveConfig(JsonConfig):
    """Hyper-parameters; defaults are the paper configuration (`mambawave_paper_config`).

    Noise schedule: DiffWave's base schedule, `train_steps` linear betas from `beta_start` to
    `beta_end` (T = 50, 1e-4 .. 0.05). Sampling: DDIM with eta = 0 at `sampling_steps` (K) of those
    steps (see `sampling_timesteps`). `seed`: the per-stream noise seed `init_state` gives every row
    unless told otherwise.
    """

    channels: int = 32  # residual channels C
    layers: int = 11  # residual layers N
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    input_kernel: int = 3  # causal conv of x_t
    cond_kernel: int = 7  # causal conv of the conditioning waveform
    step_embed_dim: int = 128  # sinusoidal embedding of t (DiffWave: 128)
    step_hidden: int = 512  # width of the step MLP (DiffWave: 512)
    train_steps: int = 50  # T
    beta_start: float = 1e-4
    beta_end: float = 0.05
    sampling_steps: int = 4  # K
    clip: bool = True  # clamp each step's x_0 estimate (to [-1, 1], or +-NORMALISED_CLIP)
    seed: int = 0
    sample_rate: int = 48000
    backend: str = "auto"  # selective-scan backend (kernels.selective_scan)
    # > 0: diffuse the new band in the band-normalised domain, from the noise excitation at the rule's
    # level (models/band_level.py); 0: diffuse the waveform (the paper's model)
    noise_bands: int = 0
    noise_low_hz: float = 3500.0  # lowest frequency the excitation can fill
    level_hop: int = 16  # samples per level frame: the generator's block multiple when noise_bands > 0
    level_window: int = 512  # samples of input each level frame measures
    level_shape: tuple[tuple[float, float], ...] = power_law_shape(2.0)
    level_offset_db: float = 0.0

    def __post_init__(self) -> None:
        self.level_shape = check_level_shape(self.level_shape)
        if self.noise_bands < 0:
            raise ValueError(f"MambaWaveConfig.noise_bands must be >= 0, got {self.noise_bands}")
        if self.level_hop < 1 or self.level_window < self.level_hop:
            raise ValueError(
                f"MambaWaveConfig needs 1 <= level_hop <= level_window, got {self.level_hop}, {self.level_window}"
            )
        for name in ("channels", "layers", "d_state", "expand", "input_kernel", "cond_kernel", "step_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"MambaWaveConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_conv < 2:
            raise ValueError(f"MambaWaveConfig.d_conv must be >= 2, got {self.d_conv}")
        if self.step_embed_dim < 2 or self.step_embed_dim % 2:
            raise ValueError(
                f"MambaWaveConfig.step_embed_dim must be even and >= 2 (sin and cos halves), got "
                f"{self.step_embed_dim}"
            )
        if self.train_steps < 1:
            raise ValueError(f"MambaWaveConfig.train_steps must be >= 1, got {self.train_steps}")
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError(
                f"MambaWaveConfig needs 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}"
            )
        if not 1 <= self.sampling_steps <= self.train_steps:
            raise ValueError(
                f"MambaWaveConfig.sampling_steps (K) must be in 1..train_steps={self.train_steps}, got "
                f"{self.sampling_steps}"
            )
        if not 0 <= self.seed < MAX_SEED:
            raise ValueError(f"MambaWaveConfig.seed must be in 0..{MAX_SEED - 1}, got {self.seed}")
        if self.sample_rate < 1:
            raise ValueError(f"MambaWaveConfig.sample_rate must be >= 1, got {self.sample_rate}")


def mambawave_paper_config() -> MambaWaveConfig:
    """The paper's size: 32 residual channels, 11 residual layers."""
    return MambaWaveConfig()


def mambawave_small_config() -> MambaWaveConfig:
    """A CPU-friendly preset: 16 channels, 4 layers, a small step MLP and 2 sampling steps, diffusing
    in the band-normalised domain of the speech preset's 12-band rule (shape and offset fitted on the
    speech validation split, docs/TRAINING.md)."""
    from .wave_u_mamba import SPEECH_LEVEL_FIT_OFFSET_DB, SPEECH_LEVEL_SHAPE

    return MambaWaveConfig(
        channels=16,
        layers=4,
        d_state=8,
        step_embed_dim=32,
        step_hidden=64,
        sampling_steps=2,
        noise_bands=12,
        level_shape=SPEECH_LEVEL_SHAPE,
        level_offset_db=SPEECH_LEVEL_FIT_OFFSET_DB,
    )


# --- diffusion schedule ------------------------------------------------------------------------------


def alpha_bars(config: MambaWaveConfig) -> Tensor:
    """abar[t] = prod_{i <= t} (1 - beta_i) for t = 0..T-1 (float64): x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps."""
    betas = torch.linspace(config.beta_start, config.beta_end, config.train_steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def sampling_timesteps(train_steps: int, steps: int) -> list[int]:
    """The K training steps the sampler visits, smallest first: t_j = ceil((j + 1) T / K) - 1.

    "Trailing" spacing: the first pass always starts at the last training step t = T - 1, the noisiest
    level the denoiser was trained on, and the steps are evenly spread down from there (for T = 50:
    K = 1 -> [49], K = 4 -> [12, 24, 37, 49]). The last pass goes from t_0 to the clean signal.
    """
    if not 1 <= steps <= train_steps:
        raise ValueError(f"steps must be in 1..{train_steps}, got {steps}")
    return [-(-(j + 1) * train_steps // steps) - 1 for j in range(steps)]


# --- counter-based noise -----------------------------------------------------------------------------

# Integer hash over the prime field Z_P, P = 2**31 - 1: every value stays below 2**33 between
# reductions and every product below 2**62, so int64 arithmetic never overflows, and only Add, Mul and
# Mod are used (ONNX-exportable, identical on every backend; no bitwise ops, no torch.Generator).
_P = (1 << 31) - 1
_ROUND = (0x2545F491, 0x4F6CDD1D, 0x1B873593, 0x68E31DA4, 0x38495AB5)
_INDEX_SPLIT = 1 << 22
# Every integer divided here is >= 0, so truncating division is floor division; it exports as one
# integer Div where floor division adds sign fix-ups.


def _round(h: Tensor, constant: int) -> Tensor:
    """x -> (x + constant)^5 mod P: a non-linear permutation of Z_P (gcd(5, P - 1) = 1), as in MiMC."""
    h = torch.remainder(h + constant, _P)
    h2 = torch.remainder(h * h, _P)
    h4 = torch.remainder(h2 * h2, _P)
    return torch.remainder(h4 * h, _P)


def _uniform(h: Tensor) -> Tensor:
    """A hash value in [0, P) -> a float32 uniform in (0, 1): its top 23 bits, centred in their cell."""
    top = torch.div(h, 256, rounding_mode="trunc")  # < 2**23
    return (top * 2 + 1).to(torch.float32) * (1.0 / (1 << 24))  # exact: integers < 2**24, a power of 2


def counter_noise(seed: Tensor, index: Tensor) -> Tensor:
    """Standard normal noise that depends only on (seed, absolute sample index).

    seed: int64, broadcastable to `index` (e.g. (batch, 1)), values in 0..MAX_SEED-1; index: int64
    sample indices >= 0, e.g. (batch, length). Returns float32 noise of `index`'s shape.
    The seed and the index (in two 22-bit halves) are absorbed into a hash state one round at a time,
    two more rounds with different constants give two uniforms, and Box-Muller makes one normal.
    """
    high = torch.div(index, _INDEX_SPLIT, rounding_mode="trunc")
    low = torch.remainder(index, _INDEX_SPLIT)
    h = _round(seed, _ROUND[0])
    h = _round(h + high, _ROUND[1])
    h = _round(h + low, _ROUND[2])
    u1 = _uniform(_round(h, _ROUND[3]))
    u2 = _uniform(_round(h, _ROUND[4]))
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)


# --- denoiser ----------------------------------------------------------------------------------------


class MambaWaveConditioner(StreamingModule):
    """c (batch, samples) -> per-layer conditioning (batch, samples, layers * 2C), time-major.

    A causal conv, then LayerNorm over channels at each sample (per-sample statistics: streaming-safe)
    and SiLU, then every layer's 1x1 projection at once (one matmul instead of N). State: the conv's
    context under "conv.".
    """

    def __init__(self, config: MambaWaveConfig) -> None:
        super().__init__()
        c = config.channels
        self.conv = StreamingConv1d(1, c, config.cond_kernel)
        self.norm = nn.LayerNorm(c)
        self.proj = nn.Linear(c, config.layers * 2 * c)

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        device = device if device is not None else self.proj.weight.device
        return prefixed("conv", self.conv.init_state(batch, device))

    def step(self, c: Tensor, state: State) -> tuple[Tensor, State]:
        h, conv_state = self.conv.step(c.unsqueeze(1), substate(state, "conv"))
        h = F.layer_norm(h.transpose(1, 2), self.norm.normalized_shape, self.norm.weight, self.norm.bias)
        return self.proj(F.silu(h)), prefixed("conv", conv_state)


class _ResidualLayer(nn.Module):
    """One DiffWave residual layer with a streaming Mamba block in place of the dilated conv."""

    def __init__(self, config: MambaWaveConfig) -> None:
        super().__init__()
        c = config.channels
        self.norm = nn.LayerNorm(c)
        self.mamba = Mamba(c, config.d_state, config.d_conv, config.expand, backend=config.backend)
        self.mid = nn.Linear(c, 2 * c)
        self.out = nn.Linear(c, 2 * c)

    def step(self, x: Tensor, step_bias: Tensor, cond: Tensor, state: State) -> tuple[Tensor, Tensor, State]:
        """x (b, L, C), step_bias (b or 1, 1, C), cond (b, L, 2C) -> (x', skip, state)."""
        h = x + step_bias
        h = F.layer_norm(h, self.norm.normalized_shape, self.norm.weight, self.norm.bias)
        m, mamba_state = self.mamba.step(h, state)
        a, b = (self.mid(m) + cond).chunk(2, dim=-1)
        res, skip = self.out(torch.tanh(a) * torch.sigmoid(b)).chunk(2, dim=-1)
        return (x + res) * (1.0 / math.sqrt(2.0)), skip, mamba_state


class MambaWaveDenoiser(StreamingModule):
    """eps_theta(x_t, c, t): x_t and c (batch, samples) at the model rate, t (batch,) or a scalar.

    The diffusion step enters as a tensor of integer training steps 0..T-1, so
    `step(x_t, c, t, state)` is the three-input form of the streaming contract: `forward(x_t, c, t)`
    equals `step(x_t, c, t, init_state(...))[0]` and any partition of a sequence into blocks (same t)
    gives the one-pass output. Latency 0, any block length.

    State: the conditioner's under "cond.", the input conv's under "input." and each layer's Mamba
    state under "layers.<i>.". The sampler shares one conditioner state across its K passes, so the
    trunk (`denoise`) takes precomputed conditioning and only the "input."/"layers." part of a state.
    """

    traceable = True  # branches on shapes only

    def __init__(self, config: MambaWaveConfig | None = None) -> None:
        super().__init__()
        self.config = config = config if config is not None else mambawave_paper_config()
        self.sample_rate = config.sample_rate
        c = config.channels
        self.cond = MambaWaveConditioner(config)
        self.input = StreamingConv1d(1, c, config.input_kernel)
        # DiffWave's step embedding: 10**(4 i / (half - 1)) frequencies, sin and cos halves.
        half = config.step_embed_dim // 2
        freqs = 10.0 ** (torch.arange(half, dtype=torch.float64) * 4.0 / max(half - 1, 1))
        self.register_buffer("freqs", freqs.float(), persistent=False)
        self.step_mlp = nn.Sequential(
            nn.Linear(config.step_embed_dim, config.step_hidden),
            nn.SiLU(),
            nn.Linear(config.step_hidden, config.step_hidden),
            nn.SiLU(),
        )
        self.step_proj = nn.Linear(config.step_hidden, config.layers * c)  # every layer's projection
        self.layers = nn.ModuleList(_ResidualLayer(config) for _ in range(config.layers))
        self.skip_out = nn.Linear(c, c)
        self.eps_out = nn.Linear(c, 1)
        nn.init.zeros_(self.eps_out.weight)  # an untrained model predicts eps = 0 (DiffWave)
        nn.init.zeros_(self.eps_out.bias)
        abar = alpha_bars(config)
        self.register_buffer("sqrt_abar", abar.sqrt().float(), persistent=False)
        self.register_buffer("sqrt_one_minus_abar", (1.0 - abar).sqrt().float(), persistent=False)

    def init_trunk_state(self, batch: int, device: torch.device | str | None = None) -> State:
        """The state of `denoise`: everything but the conditioner's."""
        device = device if device is not None else self.step_proj.weight.device
        state = prefixed("input", self.input.init_state(batch, device))
        for i, layer in enumerate(self.layers):
            state.update(prefixed(f"layers.{i}", layer.mamba.init_state(batch, device)))
        return state

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        return {
            **prefixed("cond", self.cond.init_state(batch, device)),
            **self.init_trunk_state(batch, device),
        }

    def step_embedding(self, t: Tensor) -> Tensor:
        """t (batch,) or scalar -> every layer's step bias, (batch or 1, 1, layers * C)."""
        angles = t.reshape(-1, 1).to(self.freqs.dtype) * self.freqs
        emb = self.step_mlp(torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1))
        return self.step_proj(emb).unsqueeze(1)

    def denoise(
        self, x_t: Tensor, guess: Tensor, cond: Tensor, t: Tensor, state: State
    ) -> tuple[Tensor, State]:
        """eps from x_t and the sampler's clean estimate before any pass, `guess` (batch, L), the
        conditioning from `self.cond` (batch, L, N * 2C) and t (integer steps); trunk state.

        eps = (x_t - sqrt(abar_t) guess) / sqrt(1 - abar_t) + net: the noise x_t would hold if x_0
        were the guess (the band-limited input c in the waveform domain), plus what the network adds.
        The network is zero-initialised, so an untrained sampler returns the guess rather than noise;
        predicting eps outright, an untrained or young network's error at the noisiest steps comes out
        as loud broadband noise (x_0's error is sqrt(1 - abar) / sqrt(abar) times eps's, 1.6x at
        T = 50)."""
        if x_t.dim() != 2 or cond.shape[:2] != x_t.shape:
            raise ValueError(
                f"MambaWaveDenoiser: x_t must be (batch, samples) and match the conditioning, got "
                f"{tuple(x_t.shape)} and {tuple(cond.shape)}"
            )
        if t.numel() not in (1, x_t.shape[0]):
            raise ValueError(f"t must be a scalar or one step per batch row, got shape {tuple(t.shape)}")
        channels = self.config.channels
        h, input_state = self.input.step(x_t.unsqueeze(1), substate(state, "input"))
        x = F.relu(h).transpose(1, 2)  # (b, L, C): time-major for Mamba and the 1x1 layers
        step_bias = self.step_embedding(t).split(channels, dim=-1)
        conds = cond.split(2 * channels, dim=-1)
        new_state = prefixed("input", input_state)
        skips = None
        for i, layer in enumerate(self.layers):
            name = f"layers.{i}"
            x, skip, sub = layer.step(x, step_bias[i], conds[i], substate(state, name))
            skips = skip if skips is None else skips + skip
            new_state.update(prefixed(name, sub))
        h = F.relu(self.skip_out(skips * (1.0 / math.sqrt(len(self.layers)))))
        index = t.reshape(-1, 1).long()
        eps_if_guess = (x_t - self.sqrt_abar[index] * guess) / self.sqrt_one_minus_abar[index]
        return eps_if_guess + self.eps_out(h).squeeze(-1), new_state

    def step(  # type: ignore[override]
        self, x_t: Tensor, c: Tensor, t: Tensor, state: State, guess: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """`guess` defaults to c (the waveform domain)."""
        guess = c if guess is None else guess
        if c.shape != x_t.shape or guess.shape != x_t.shape or c.dim() != 2:
            raise ValueError(
                f"MambaWaveDenoiser expects x_t, c and guess as (batch, samples) of one shape, got "
                f"{tuple(x_t.shape)}, {tuple(c.shape)} and {tuple(guess.shape)}"
            )
        cond, cond_state = self.cond.step(c, substate(state, "cond"))
        eps, trunk_state = self.denoise(x_t, guess, cond, t, state)
        return eps, {**prefixed("cond", cond_state), **trunk_state}

    def forward(self, x_t: Tensor, c: Tensor, t: Tensor, guess: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """Whole segments from the initial state (training)."""
        return self.step(x_t, c, t, self.init_state(x_t.shape[0], x_t.device), guess)[0]


def diffusion_loss(
    model: MambaWave,
    target: Tensor,
    cond: Tensor,
    crossover_hz: Tensor | None = None,
    level: State | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DiffWave's epsilon-MSE with min-SNR weighting on the model's denoiser: t ~ U{0..T-1} per row,
    x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps with x_0 = `model.clean_target(...)`, each row's MSE
    between eps and its prediction weighted by min(SNR_t, MIN_SNR_GAMMA) / SNR_t (SNR_t = abar /
    (1 - abar); Hang et al. 2023).

    The eps of a nearly clean step is the guess-implied noise plus sqrt(abar) / sqrt(1 - abar) times
    what the guess lacks (see `MambaWaveDenoiser.denoise`), up to 100x at t = 0: unweighted, those
    steps, which a few-step sampler never visits, would decide every gradient. target, cond: (batch,
    samples) whole segments (offline, from the initial state). In the band-normalised domain each row
    needs its crossover (Hz, (batch,)) and `level`, the "level.top" / "level.rule" state a host gives
    it (`models.band_level.batch_level_state`). `generator` makes t and eps reproducible (a
    training-mode excitation draws its start from torch's global generator)."""
    if target.dim() != 2 or cond.shape != target.shape:
        raise ValueError(
            f"diffusion_loss: target and cond must be (batch, samples) of one shape, got "
            f"{tuple(target.shape)} and {tuple(cond.shape)}"
        )
    batch = target.shape[0]
    state = {**model.init_state(batch, target.device), **(level or {})}
    guess, scale, _ = model.prior(cond, state)
    x0 = model.clean_target(target, cond, scale, crossover_hz)
    denoiser = model.denoiser
    t = torch.randint(0, denoiser.config.train_steps, (batch,), generator=generator, device=target.device)
    eps = torch.randn(target.shape, generator=generator, device=target.device, dtype=target.dtype)
    a, s = denoiser.sqrt_abar[t, None], denoiser.sqrt_one_minus_abar[t, None]
    x_t = a * x0 + s * eps
    snr = (a / s).square().squeeze(1)
    weight = snr.clamp(max=MIN_SNR_GAMMA) / snr
    per_row = (denoiser(x_t, cond, t, guess) - eps).square().mean(dim=1)
    return (weight * per_row).mean()


# --- streaming sampler -------------------------------------------------------------------------------


def _seed_tensor(seed: int | Sequence[int] | Tensor | None, default: int, batch: int, device) -> Tensor:
    """Per-row seeds as a (batch, 1) fp32 state tensor, checked to be integers in 0..MAX_SEED-1."""
    values = torch.as_tensor(default if seed is None else seed, dtype=torch.float64).reshape(-1)
    if values.numel() == 1:
        values = values.expand(batch)
    if values.numel() != batch:
        raise ValueError(f"seed must be one integer or one per batch row ({batch}), got {values.numel()}")
    if bool(((values < 0) | (values >= MAX_SEED) | (values != values.round())).any()):
        raise ValueError(f"seeds must be integers in 0..{MAX_SEED - 1}, got {values.tolist()}")
    return values.to(device=device, dtype=torch.float32).reshape(batch, 1)


class MambaWave(StreamingModule):
    """The generator: band-limited c (batch, samples) at 48 kHz -> (batch, samples) at 48 kHz.

    Each block runs every DDIM step (eta = 0): x_K = sqrt(abar_{K-1}) g + sqrt(1 - abar_{K-1}) z with
    g `prior`'s guess and z = counter_noise(seed, sample index), then for j = K-1 .. 0,
    eps = eps_theta(x_{j+1}, g, c, t_j) with the state "k<j>." and
    x_j = sqrt(abar_{j-1}) x0_hat + sqrt(1 - abar_{j-1}) eps_hat (abar_{-1} = 1, so x_0 = x0_hat), where
    x0_hat = (x_{j+1} - sqrt(1 - abar_j) eps) / sqrt(abar_j), clamped when `config.clip` (eps_hat
    then recomputed from the clamped estimate, as diffusers' DDIM does).

    In the waveform domain (no `config.noise_bands`) x_0 is the output and the guess x_0 starts from
    is c. In the band-normalised domain the sample is the new band divided by the rule's amplitude
    (`prior`), the guess is the rule-level excitation in those units, and the output is
    c + scale * x_0: the new band's level is the rule's by construction, and training moves it only
    as far as the normalised target differs from unit RMS (states "level." and "excitation."; the
    host sets "level.top" and "level.rule" from the band edge, as for the other generators; blocks of
    multiples of `level_hop`).

    State: "seed" (batch, 1), the stream's noise seed (an integer < 2**24; set it with
    `init_state(batch, seed=...)` or `forward(c, values={"seed": ...})`); "pos" (batch, 2), the absolute
    index of the next sample as (high, low) = (index // 2**20, index % 2**20), exact in fp32; "cond."
    the shared conditioner state; "k<j>." the denoiser trunk state of the pass that produces x_j.
    """

    traceable = True  # branches on shapes only
    latency = 0

    def __init__(self, config: MambaWaveConfig | None = None) -> None:
        super().__init__()
        self.config = config = config if config is not None else mambawave_paper_config()
        self.sample_rate = config.sample_rate
        self.denoiser = MambaWaveDenoiser(config)
        self.excitation: NoiseBands | None = None
        self.level: BandLevel | None = None
        self.block_multiple = 1
        self.clip_bound = NORMALISED_CLIP if config.noise_bands else 1.0
        if config.noise_bands:
            hop = config.level_hop
            self.excitation = NoiseBands(
                config.noise_bands, config.noise_low_hz, config.sample_rate, hop=hop, shape=config.level_shape
            )
            self.level = BandLevel(config.noise_bands, config.sample_rate, hop, config.level_window)
            self.block_multiple = hop
        self.timesteps = sampling_timesteps(config.train_steps, config.sampling_steps)
        abar = alpha_bars(config).tolist()
        # Per pass j, at t = t_j: (sqrt(abar_t), sqrt(1 - abar_t), sqrt(abar_prev), sqrt(1 - abar_prev)),
        # Python floats computed in float64 (constants of a traced graph).
        self._coefs: list[tuple[float, float, float, float]] = []
        for j, t in enumerate(self.timesteps):
            prev = abar[self.timesteps[j - 1]] if j > 0 else 1.0
            self._coefs.append(
                (math.sqrt(abar[t]), math.sqrt(1 - abar[t]), math.sqrt(prev), math.sqrt(1 - prev))
            )
        self.register_buffer(
            "step_values", torch.tensor(self.timesteps, dtype=torch.float32), persistent=False
        )

    def init_state(
        self,
        batch: int,
        device: torch.device | str | None = None,
        seed: int | Sequence[int] | Tensor | None = None,
    ) -> State:
        """`seed`: one integer for every row, or one per row; default `config.seed`."""
        device = device if device is not None else self.step_values.device
        state: State = {
            "seed": _seed_tensor(seed, self.config.seed, batch, device),
            "pos": torch.zeros(batch, 2, device=device),
            **prefixed("cond", self.denoiser.cond.init_state(batch, device)),
        }
        trunk = self.denoiser.init_trunk_state(batch, device)
        for j in range(len(self.timesteps)):
            state.update(prefixed(f"k{j}", {k: v.clone() for k, v in trunk.items()}))
        if self.excitation is not None:
            state.update(prefixed("level", self.level.init_state(batch, device)))
            state.update(prefixed("excitation", self.excitation.init_state(batch, device)))
        return state

    def start_noise(self, state: State, length: int) -> tuple[Tensor, Tensor]:
        """The noise of x_K for the next `length` samples of the stream and the advanced "pos"."""
        pos = state["pos"].to(torch.int64)
        start = pos[:, :1] * _POS_SPLIT + pos[:, 1:]  # (batch, 1)
        index = start + torch.arange(length, device=pos.device)
        x = counter_noise(state["seed"].to(torch.int64), index)
        end = start + length
        high = torch.div(end, _POS_SPLIT, rounding_mode="trunc")
        new_pos = torch.cat([high, end - high * _POS_SPLIT], dim=1).to(state["pos"].dtype)
        return x, new_pos

    def prior(self, c: Tensor, state: State) -> tuple[Tensor, Tensor | None, State]:
        """The sampler's domain for the band-limited c: (guess, scale, level and excitation states).

        Waveform domain: the guess is c and there is no scale. Band-normalised domain: the scale is
        the rule-level excitation's RMS envelope (`NoiseBands.render`, floored at SCALE_FLOOR), the
        amplitude the rule gives the new band at each sample, and the guess is the excitation divided
        by it: unit RMS where the rule is right."""
        if self.excitation is None:
            return c, None, {}
        level, level_state = self.level.step(c, substate(state, "level"))
        fill, envelope, fill_state = self.excitation.render(level, substate(state, "excitation"))
        scale = envelope.clamp(min=SCALE_FLOOR)
        return fill / scale, scale, {**prefixed("level", level_state), **prefixed("excitation", fill_state)}

    def clean_target(
        self, target: Tensor, c: Tensor, scale: Tensor | None, crossover_hz: Tensor | None
    ) -> Tensor:
        """What x_0 is for a full-band `target` (batch, samples) in `prior`'s domain: the target
        itself, or the part of target - c above each row's crossover (an FFT brick wall: training is
        offline) divided by the scale and clamped to +-NORMALISED_CLIP (the host takes the model's
        output above the crossover only, so below it there is nothing to learn)."""
        if scale is None:
            return target
        if crossover_hz is None or crossover_hz.shape != target.shape[:1]:
            raise ValueError("the band-normalised domain needs one crossover frequency per row")
        freqs = torch.fft.rfftfreq(target.shape[-1], 1.0 / self.sample_rate, device=target.device)
        keep = freqs[None, :] >= crossover_hz.to(target.device, freqs.dtype)[:, None]
        band = torch.fft.irfft(torch.fft.rfft(target - c, dim=-1) * keep, n=target.shape[-1], dim=-1)
        return (band / scale).clamp(-NORMALISED_CLIP, NORMALISED_CLIP)

    def _ddim(self, x: Tensor, eps: Tensor, j: int) -> Tensor:
        a_t, s_t, a_prev, s_prev = self._coefs[j]
        x0 = (x - s_t * eps) * (1.0 / a_t)
        if self.config.clip:
            x0 = x0.clamp(-self.clip_bound, self.clip_bound)
            if j > 0:  # the noise direction consistent with the clamped estimate
                eps = (x - a_t * x0) * (1.0 / s_t)
        if j == 0:  # abar_prev = 1: the clean estimate itself
            return x0
        return a_prev * x0 + s_prev * eps

    def step(self, c: Tensor, state: State) -> tuple[Tensor, State]:
        if c.dim() != 2:
            raise ValueError(f"MambaWave expects (batch, samples), got shape {tuple(c.shape)}")
        self.check_block(c.shape[-1])
        noise, pos = self.start_noise(state, c.shape[-1])
        guess, scale, prior_state = self.prior(c, state)
        # x_K: the forward process at the first pass's step applied to the guess, the best estimate of
        # x_0 before any pass, so the first pass sees what training showed it at that step.
        a_first, s_first = self._coefs[-1][:2]
        x = a_first * guess + s_first * noise
        cond, cond_state = self.denoiser.cond.step(c, substate(state, "cond"))
        new_state: State = {"seed": state["seed"], "pos": pos, **prefixed("cond", cond_state), **prior_state}
        for j in reversed(range(len(self.timesteps))):
            name = f"k{j}"
            eps, sub = self.denoiser.denoise(x, guess, cond, self.step_values[j], substate(state, name))
            x = self._ddim(x, eps, j)
            new_state.update(prefixed(name, sub))
        return (x if scale is None else c + scale * x), new_state
