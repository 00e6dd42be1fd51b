"""GAN training of a streaming generator: AdamW, gradient clipping, EMA, exact checkpoint/resume, DDP.

One step: the generator (the streaming model's offline `forward`) maps a degraded segment to the
full band; its output is compared with the target `latency` samples earlier (the model's declared
delay). Discriminators (when the preset names any) are trained first on (real, generated.detach()),
then the generator on reconstruction + adversarial + feature-matching losses.

Resume is exact: a checkpoint holds the generator, discriminators, both optimisers, the EMA copy,
the torch/numpy/python RNG states and the step; the data order is a pure function of the seed and
the step (`data.SegmentSampler`) and the learning rate a pure function of the step, so a resumed run
reproduces the uninterrupted one bit for bit (same device and thread count).

With WORLD_SIZE > 1 (torchrun) every rank trains its share of each global batch under
DistributedDataParallel; rank 0 logs, validates, checkpoints and exports.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..atomic import atomic_write
from ..band_level import batch_level_state
from ..config import JsonConfig
from ..dsp.resample import PASSBAND
from ..streaming import StreamingModule
from .augment import AugmentConfig
from .data import BatchStream, SegmentSampler, clips, readable_clips, validation_segments
from .degrade import DegradeConfig, to_model_rate
from .discriminators import Discriminators, split_batch
from .losses import (
    MultiResolutionSTFTLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
    given_band_loss,
    stft_resolutions,
)
from .splits import MANIFEST

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
GENERATOR = "generator"  # exported as RUN_DIR/generator.safetensors + .json
CHECKPOINT_FORMAT = 1


@dataclass
class TrainConfig(JsonConfig):
    """Everything that decides what a run computes (run length and logging live in `RunOptions`)."""

    preset: str = "speech"
    generator: str = "speech"  # registry preset to build
    generator_spec: dict | None = None  # {"family": ..., "config": {...}}: a custom generator instead
    input_rates: tuple[int, ...] = (8000, 12000, 16000, 24000)
    same_rate_prob: float = 0.0
    same_rate_cutoff: tuple[float, float] = (4000.0, 16000.0)
    mp3_prob: float = 0.1
    augment: bool = True  # randomise the target's colouring (data.AugmentConfig defaults) before degrading
    valid_every: int = 10  # one in this many train clips per speaker is for validation (0: no split)
    hold_out: tuple[str, ...] = ()  # train-split speakers left out of training (leave-one-source-out)
    segment_seconds: float = 1.0
    batch_size: int = 16
    lr: float = 2e-4
    betas: tuple[float, float] = (0.8, 0.99)
    weight_decay: float = 0.01
    warmup_steps: int = 1000
    lr_half_life: int = 200_000  # steps for the learning rate to halve after warm-up
    grad_clip_g: float = 3.0
    grad_clip_d: float = 2.0
    ema_decay: float = 0.999  # 0: no EMA
    discriminators: tuple[str, ...] = ("mpd", "msd")
    disc_width: float = 1.0
    adversarial: str = "lsgan"
    adv_start: int = 0  # steps of reconstruction-only training before the discriminators join
    w_stft: float = 1.0
    w_mel: float = 10.0
    w_adv: float = 1.0
    w_fm: float = 100.0  # feature matching is a mean over layers: 100 ~ HiFi-GAN's 2 x sum
    w_band: float = 100.0  # given-band loss (1 / SNR below the cutoff): 0.1 at 30 dB, 1 at 20 dB
    init: str | None = None  # start from these generator weights (.safetensors) instead of random
    stft_scale: float = 1.0  # scales the three linear STFT resolutions
    mel_resolutions: tuple[tuple[int, int, int], ...] = (
        (1024, 256, 1024),
        (2048, 512, 2048),
        (8192, 2048, 8192),
    )
    mel_bins: int = 128
    seed: int = 0
    scan_backend: str | None = None  # selective-scan backend for the generator's Mamba blocks

    def __post_init__(self) -> None:
        self.input_rates = tuple(int(r) for r in self.input_rates)
        self.same_rate_cutoff = tuple(float(c) for c in self.same_rate_cutoff)
        self.betas = tuple(float(b) for b in self.betas)
        self.discriminators = tuple(self.discriminators)
        self.mel_resolutions = tuple(tuple(int(v) for v in r) for r in self.mel_resolutions)
        held = (self.hold_out,) if isinstance(self.hold_out, str) else self.hold_out
        self.hold_out = tuple(sorted({str(s) for s in held}))  # order-free: one run per set of speakers
        if self.valid_every < 0:
            raise ValueError(f"valid_every must be >= 0, got {self.valid_every}")
        if self.batch_size < 1 or self.segment_seconds <= 0:
            raise ValueError(
                f"batch_size and segment_seconds must be positive, got {self.batch_size}, {self.segment_seconds}"
            )
        if self.adversarial not in ("lsgan", "hinge"):
            raise ValueError(f"adversarial must be 'lsgan' or 'hinge', got {self.adversarial!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        # A config saved before these fields existed trained without them: resume it as it ran.
        return super().from_dict({**LEGACY_DEFAULTS, **data})


LEGACY_DEFAULTS = {"augment": False, "valid_every": 0}


PRESETS: dict[str, TrainConfig] = {
    # Wave-U-Mamba's recipe (LSGAN, MPD + MSD, AdamW 2e-4) with the streaming-side data.
    "speech": TrainConfig(),
    # AERO's recipe (hinge, MelGAN multi-scale, feature matching) with the music rates and the
    # same-rate cutoff mode.
    "music": TrainConfig(
        preset="music",
        generator="music",
        input_rates=(11025, 22050),
        same_rate_prob=0.25,
        mp3_prob=0.15,
        segment_seconds=2.0,
        batch_size=8,
        lr=3e-4,
        betas=(0.9, 0.999),
        discriminators=("melgan",),
        adversarial="hinge",
        w_mel=1.0,
    ),
    # MambaWave: DiffWave's epsilon-MSE (min-SNR weighted, lr 2e-4) on short segments (the denoiser runs Mamba
    # at 48 kHz), no discriminators (a diffusion loss, not a GAN).
    "mambawave": TrainConfig(
        preset="mambawave",
        generator="mambawave",
        discriminators=(),
        segment_seconds=0.25,
        batch_size=8,
        warmup_steps=100,
    ),
}


@dataclass
class RunOptions:
    """How long and how loudly a run goes; free to change between a run and its resume."""

    max_steps: int | None = None
    max_minutes: float | None = None
    device: str = "cpu"
    num_workers: int = 2
    log_every: int = 50
    checkpoint_every: int = 1000
    eval_every: int = 2000  # 0: never
    eval_clips: int = 8
    progress: bool = True
    command: str = ""


def lr_factor(step: int, warmup: int, half_life: int) -> float:
    """Linear warm-up over `warmup` steps, then halving every `half_life` steps."""
    ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    return ramp * 0.5 ** (max(0, step - warmup) / half_life)


class EMA:
    """Exponential moving average of a model's parameters (buffers are copied)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for e, p in zip(self.module.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - self.decay)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)


def build_generator(cfg: TrainConfig) -> StreamingModule:
    """The generator a config names: a registry preset, or a custom family + config."""
    from .. import registry

    if cfg.generator_spec is None:
        model = registry.build_model(cfg.generator)
    else:
        spec = cfg.generator_spec
        if "family" not in spec or "config" not in spec:
            raise ValueError("generator_spec must hold 'family' and 'config'")
        model = registry.build_from_spec(spec["family"], spec["config"], spec.get("preset", "custom"))
    if cfg.scan_backend is not None:
        from ..mamba import Mamba

        for m in model.modules():
            if isinstance(m, Mamba):
                m.backend = cfg.scan_backend
    return model


def load_initial_weights(model: nn.Module, path: Path) -> None:
    """Fine-tuning start: every tensor in `path` must exist in `model` with its shape; parameters the
    file lacks (a head added since) keep their initialisation and are named on stderr."""
    from ..registry import read_weights

    missing, unexpected = model.load_state_dict(read_weights(path), strict=False)
    if unexpected:
        raise ValueError(f"{path}: tensors the generator does not have: {', '.join(unexpected)}")
    if missing:
        print(f"init from {path}: new, untrained: {', '.join(missing)}", file=sys.stderr)


def _normalised_spec(spec: dict) -> dict:
    """A saved generator spec as this version writes it: config fields added since get their defaults."""
    from .. import registry

    try:
        model = registry.build_from_spec(spec["family"], spec["config"], spec.get("preset", "custom"))
    except (KeyError, TypeError, ValueError):
        return spec  # a custom or unknown generator: compared as saved
    return generator_spec(model)


def generator_spec(model: StreamingModule) -> dict:
    from ..registry import family_of

    try:
        family = family_of(model)
    except ValueError:  # a custom generator class: recorded by name
        family = type(model).__name__
    config = model.config.to_dict() if hasattr(model, "config") else {}
    return {"family": family, "preset": getattr(model, "preset", "custom"), "config": config}


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _rng_state() -> dict:
    name, key, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


class CsvLog:
    """Append-only CSV; on resume the rows after the checkpoint's step are dropped first."""

    def __init__(self, path: Path, fields: list[str], keep_until: int | None) -> None:
        self.path, self.fields = path, fields
        rows = []
        if keep_until is not None and path.exists():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until]
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fields)
            w.writeheader()
            w.writerows(rows)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow({k: row.get(k, "") for k in self.fields})


LOG_FIELDS = [
    "step",
    "seconds",
    "lr",
    "loss_g",
    "stft",
    "mel",
    "band",
    "adv",
    "fm",
    "loss_d",
    "grad_g",
    "grad_d",
]
VALID_FIELDS = ["step", "rate", "lsd_input", "lsd_hf_input", "lsd_hf_noisefill", "lsd_model", "lsd_hf_model"]


class Trainer:
    """Builds everything from a config and a prepared data folder; `fit()` runs, resuming if it can."""

    def __init__(
        self,
        cfg: TrainConfig,
        data: Path,
        out: Path,
        options: RunOptions | None = None,
        generator: StreamingModule | None = None,
    ) -> None:
        self.cfg, self.data, self.out = cfg, Path(data), Path(out)
        self.opt = options or RunOptions()
        self._setup_distributed()
        torch.manual_seed(cfg.seed)
        self.generator = (generator if generator is not None else build_generator(cfg)).to(self.device)
        if cfg.init is not None:
            load_initial_weights(self.generator, Path(cfg.init))
        self.sample_rate = int(self.generator.sample_rate)
        self.latency = int(self.generator.latency)
        bm = int(self.generator.block_multiple)
        self.segment = int(round(cfg.segment_seconds * self.sample_rate)) // bm * bm
        if self.segment <= self.latency:
            raise ValueError(
                f"segment_seconds={cfg.segment_seconds} gives {self.segment} samples, not more than the "
                f"generator's latency ({self.latency})"
            )
        self.discriminators = (
            Discriminators(cfg.discriminators, cfg.disc_width).to(self.device) if cfg.discriminators else None
        )
        res = stft_resolutions(self.sample_rate, cfg.stft_scale)
        self.stft_loss = MultiResolutionSTFTLoss(res).to(self.device)
        self.mel_loss = MultiResolutionSTFTLoss(cfg.mel_resolutions, cfg.mel_bins, self.sample_rate).to(
            self.device
        )
        self.opt_g = torch.optim.AdamW(
            self.generator.parameters(), cfg.lr, cfg.betas, weight_decay=cfg.weight_decay
        )
        self.opt_d = (
            torch.optim.AdamW(
                self.discriminators.parameters(), cfg.lr, cfg.betas, weight_decay=cfg.weight_decay
            )
            if self.discriminators is not None
            else None
        )
        self.ema = EMA(self.generator, cfg.ema_decay) if cfg.ema_decay > 0 and self.rank == 0 else None
        # A diffusion generator (MambaWave) trains its denoiser on the noise-prediction loss instead of
        # the reconstruction + adversarial losses of a one-pass generator.
        self.denoiser: nn.Module | None = getattr(self.generator, "denoiser", None)
        if self.denoiser is not None and (self.discriminators is not None or self.world > 1):
            raise ValueError(
                "a diffusion generator trains on its noise-prediction loss alone, on one process: "
                "pass --no-discriminators and run without torchrun"
            )
        self.g_run: nn.Module = self.generator
        self.d_run: nn.Module | None = self.discriminators
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g_run = DistributedDataParallel(self.generator, device_ids=ids)
            if self.discriminators is not None:
                self.d_run = DistributedDataParallel(self.discriminators, device_ids=ids)
        degrade = DegradeConfig(
            self.sample_rate, cfg.input_rates, cfg.same_rate_prob, cfg.same_rate_cutoff, mp3_prob=cfg.mp3_prob
        )
        train_clips, dropped = readable_clips(
            clips(self.data, "train", self.sample_rate, hold_out=cfg.hold_out, valid_every=cfg.valid_every)
        )
        if dropped:
            print(
                f"skipping {len(dropped)} unreadable training file(s) of {len(train_clips) + len(dropped)}, "
                f"e.g. {dropped[0]}",
                file=sys.stderr,
            )
        if not train_clips:
            raise ValueError(f"{self.data}: no training file can be read; run `prepare` again")
        self.sampler = SegmentSampler(
            train_clips,
            self.sample_rate,
            self.segment,
            degrade,
            cfg.seed,
            augment=AugmentConfig() if cfg.augment else None,
        )
        self.manifest_digest = _file_digest(self.data / MANIFEST)
        self.step = 0
        self._elapsed_base = 0.0  # training seconds of earlier runs (from the checkpoint)
        self._started: float | None = None
        self.commands: list[str] = []  # the `fit` invocations of this run, first to last

    # ---- setup ----------------------------------------------------------------------------------
    def _setup_distributed(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        device = torch.device(self.opt.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
        if self.world > 1:
            if self.cfg.batch_size % self.world:
                raise ValueError(
                    f"batch_size {self.cfg.batch_size} must be divisible by WORLD_SIZE={self.world}"
                )
            if device.type == "cuda":
                device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        self.device = device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- one step -------------------------------------------------------------------------------
    def _set_lr(self) -> float:
        lr = self.cfg.lr * lr_factor(self.step, self.cfg.warmup_steps, self.cfg.lr_half_life)
        for opt in (self.opt_g, self.opt_d):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = lr
        return lr

    def _level(self, band_edge_hz: Sequence[float]) -> dict[str, Tensor]:
        """The band-level state a host gives each example: its band edge, the crossover at the live
        resampler's passband edge below it (models/band_level.py)."""
        return batch_level_state(self.generator.config, band_edge_hz, PASSBAND, self.device)

    def train_step(
        self, lowres: Tensor, target: Tensor, cutoff_hz: Tensor, band_edge_hz: Tensor
    ) -> dict[str, Tensor]:
        """One optimisation step on a batch (cutoff_hz: each example's low-pass cutoff; band_edge_hz:
        where a host knows its band ends, the input's Nyquist frequency or a same-rate cutoff);
        returns detached loss terms."""
        cfg, lat = self.cfg, self.latency
        lr = self._set_lr()
        self.generator.train()
        if self.denoiser is not None:
            return self._diffusion_step(lowres, target, band_edge_hz, lr)
        fake = self.g_run(lowres, self._level(band_edge_hz.tolist()))[:, lat:]
        real = target[:, : target.shape[1] - lat]
        logs: dict[str, Tensor] = {"lr": torch.tensor(lr)}
        adversarial = self.d_run is not None and self.step >= cfg.adv_start
        n = real.shape[0]
        if adversarial:
            self.discriminators.train()
            (r, _), (f, _) = split_batch(self.d_run(torch.cat([real, fake.detach()])), n)
            loss_d = discriminator_loss(r, f, cfg.adversarial)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            logs["grad_d"] = nn.utils.clip_grad_norm_(self.discriminators.parameters(), cfg.grad_clip_d)
            self.opt_d.step()
            logs["loss_d"] = loss_d.detach()
        loss_stft = self.stft_loss(fake, real)
        loss_mel = self.mel_loss(fake, real)
        loss_band = given_band_loss(fake, real, cutoff_hz, self.sample_rate)
        loss_g = cfg.w_stft * loss_stft + cfg.w_mel * loss_mel + cfg.w_band * loss_band
        if adversarial:
            (r, r_feats), (f, f_feats) = split_batch(self.d_run(torch.cat([real, fake])), n)
            loss_adv = generator_loss(f, cfg.adversarial)
            loss_fm = feature_matching_loss(r_feats, f_feats)
            loss_g = loss_g + cfg.w_adv * loss_adv + cfg.w_fm * loss_fm
            logs.update(adv=loss_adv.detach(), fm=loss_fm.detach())
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        logs["grad_g"] = nn.utils.clip_grad_norm_(self.generator.parameters(), cfg.grad_clip_g)
        self.opt_g.step()
        if self.ema is not None:
            self.ema.update(self.generator)
        logs.update(
            loss_g=loss_g.detach(), stft=loss_stft.detach(), mel=loss_mel.detach(), band=loss_band.detach()
        )
        self.step += 1
        return logs

    def _diffusion_step(
        self, lowres: Tensor, target: Tensor, band_edge_hz: Tensor, lr: float
    ) -> dict[str, Tensor]:
        """One step of the denoiser on epsilon-MSE (`models.mamba_wave.diffusion_loss`), each example
        with the level state and crossover a host would give it."""
        from ..mamba_wave import diffusion_loss

        level = self._level(band_edge_hz.tolist())
        loss = diffusion_loss(self.generator, target, lowres, band_edge_hz * PASSBAND, level)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        logs = {"lr": torch.tensor(lr), "loss_g": loss.detach()}
        logs["grad_g"] = nn.utils.clip_grad_norm_(self.generator.parameters(), self.cfg.grad_clip_g)
        self.opt_g.step()
        if self.ema is not None:
            self.ema.update(self.generator)
        self.step += 1
        return logs

    # ---- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "elapsed": self.elapsed(),
            "config": self.cfg.to_dict(),
            "generator_spec": generator_spec(self.generator),
            "manifest": self.manifest_digest,
            "generator": self.generator.state_dict(),
            "discriminators": self.discriminators.state_dict() if self.discriminators is not None else {},
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d is not None else {},
            "ema": self.ema.module.state_dict() if self.ema is not None else {},
            "rng": _rng_state(),
            "commands": self.commands,
        }

    def save_checkpoint(self, path: Path | None = None) -> Path:
        """Write the checkpoint atomically (temporary file, then rename)."""
        path = Path(path) if path is not None else self.out / CHECKPOINT
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, lambda tmp: torch.save(self.state_dict(), tmp))

    def load_checkpoint(self, path: Path | None = None) -> None:
        path = Path(path) if path is not None else self.out / CHECKPOINT
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: unknown checkpoint format {ckpt.get('format')!r}")
        saved = TrainConfig.from_dict(ckpt["config"]).to_dict()
        differ = sorted(k for k, v in self.cfg.to_dict().items() if saved[k] != v)
        if differ:
            raise ValueError(
                f"{path} was trained with different settings ({', '.join(differ)}); use a new run folder"
            )
        if ckpt["manifest"] != self.manifest_digest:
            raise ValueError(f"{path} was trained on different data ({self.data / MANIFEST} changed)")
        if _normalised_spec(ckpt["generator_spec"]) != generator_spec(self.generator):
            raise ValueError(f"{path} holds a different generator ({ckpt['generator_spec']['family']})")
        self.generator.load_state_dict(ckpt["generator"])
        if self.discriminators is not None:
            self.discriminators.load_state_dict(ckpt["discriminators"])
            self.opt_d.load_state_dict(ckpt["opt_d"])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        if self.ema is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
        _set_rng_state(ckpt["rng"])
        self.step, self._elapsed_base = int(ckpt["step"]), float(ckpt["elapsed"])
        self.commands = list(ckpt["commands"])

    def export(self, path: Path | None = None) -> Path:
        """The final generator (the EMA copy when there is one) as safetensors + JSON via the registry."""
        from ..registry import save_model

        model = self.ema.module if self.ema is not None else self.generator
        commands = self.commands or [self.opt.command]
        info = {
            "command": commands[0],
            "resumed_with": commands[1:],
            "steps": self.step,
            "preset": self.cfg.preset,
            "ema": self.ema is not None,
            "segment_seconds": self.cfg.segment_seconds,
            "batch_size": self.cfg.batch_size,
            "input_rates": list(self.cfg.input_rates),
            "train_seconds": round(self.elapsed(), 1),
        }
        return save_model(model, Path(path) if path is not None else self.out / GENERATOR, training=info)

    # ---- validation -----------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, segments: list[np.ndarray]) -> list[dict]:
        """LSD / LSD-HF of the input, noisefill and the model on fixed dev crops, per input rate.

        The input is the dev crop cut with soxr (as `models.evaluate` does) and brought back by the
        live resampler; the model's output is compared `latency` samples later.
        """
        from ..evaluate import downsample, lsd, lsd_hf, noisefill

        model = self.ema.module if self.ema is not None else self.generator
        model.eval()
        rows, sr, lat = [], self.sample_rate, self.latency
        for rate in self.cfg.input_rates:
            inputs = [to_model_rate(downsample(s, sr, rate), rate, sr, s.size) for s in segments]
            out = (
                model(
                    torch.tensor(np.stack(inputs), dtype=torch.float32, device=self.device),
                    self._level([rate / 2] * len(inputs)),
                )
                .cpu()
                .double()
                .numpy()
            )
            vals: dict[str, list[float]] = {k: [] for k in VALID_FIELDS[2:]}
            for ref, inp, est in zip(segments, inputs, out):
                ref, inp, est = ref[: ref.size - lat], inp[: inp.size - lat], est[lat:]
                if np.max(np.abs(ref)) == 0:
                    continue
                vals["lsd_input"].append(lsd(ref, inp, sr))
                vals["lsd_hf_input"].append(lsd_hf(ref, inp, sr, rate))
                vals["lsd_hf_noisefill"].append(lsd_hf(ref, noisefill(inp, sr, rate), sr, rate))
                vals["lsd_model"].append(lsd(ref, est, sr))
                vals["lsd_hf_model"].append(lsd_hf(ref, est, sr, rate))
            rows.append(
                {
                    "step": self.step,
                    "rate": rate,
                    **{k: round(float(np.mean(v)), 4) for k, v in vals.items() if v},
                }
            )
        return rows

    # ---- the loop -------------------------------------------------------------------------------
    def _batches(self, stop: int | None) -> Iterator[tuple[int, Tensor, Tensor, Tensor, Tensor]]:
        stream = BatchStream(self.sampler, self.cfg.batch_size, self.step, stop, self.rank, self.world)
        loader = torch.utils.data.DataLoader(
            stream,
            batch_size=None,
            num_workers=self.opt.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            generator=torch.Generator().manual_seed(self.cfg.seed),  # leaves the global torch RNG alone
        )
        for step, *batch in loader:
            yield step, *(t.to(self.device, non_blocking=True) for t in batch)

    def fit(self, resume: bool = True) -> int:
        """Train until `max_steps` (total) or `max_minutes` (this run); checkpoint and export at the end.

        Resumes from RUN_DIR/checkpoint.pt when it exists and `resume` is set. Returns the final step.
        An interrupted run (Ctrl-C) saves its checkpoint before it stops.
        """
        opt = self.opt
        self.out.mkdir(parents=True, exist_ok=True)
        if resume and (self.out / CHECKPOINT).exists():
            self.load_checkpoint()
        if opt.command:
            self.commands.append(opt.command)
        if opt.max_steps is not None and self.step >= opt.max_steps:
            return self.step
        log = valid = bar = None
        val_segments: list[np.ndarray] = []
        if self.is_main:
            (self.out / CONFIG).write_text(json.dumps(self.cfg.to_dict(), indent=2) + "\n")
            log = CsvLog(self.out / "train.csv", LOG_FIELDS, self.step)
            valid = CsvLog(self.out / "valid.csv", VALID_FIELDS, self.step)
            if opt.eval_every > 0:
                # Settings are chosen on "valid", never on the reported test split; a run made before
                # the split existed keeps validating on test so its valid.csv stays one series.
                split = "valid" if self.cfg.valid_every > 0 else "test"
                found = clips(
                    self.data,
                    split,
                    self.sample_rate,
                    hold_out=self.cfg.hold_out,
                    valid_every=self.cfg.valid_every,
                )
                val_segments = validation_segments(found, self.segment, opt.eval_clips)
            if opt.progress:
                from tqdm import tqdm

                bar = tqdm(total=opt.max_steps, initial=self.step, desc="train", dynamic_ncols=True)
        start = self.step
        self._started = time.monotonic()
        acc: dict[str, list[Tensor]] = {}
        try:
            for step, *batch in self._batches(opt.max_steps):
                if step != self.step:
                    raise RuntimeError(f"data loader delivered step {step}, expected {self.step}")
                for k, v in self.train_step(*batch).items():
                    acc.setdefault(k, []).append(v.detach().float())
                out_of_time = self._out_of_time()
                row = self._mean_logs(acc) if self.step % opt.log_every == 0 or out_of_time else None
                if row is not None:
                    acc = {}
                if self.is_main:
                    if bar is not None:
                        bar.update(1)
                    if row is not None:
                        log.write({"step": self.step, "seconds": round(self.elapsed(), 1), **row})
                        if bar is not None:
                            bar.set_postfix(loss_g=row.get("loss_g"), loss_d=row.get("loss_d", "-"))
                    if opt.eval_every > 0 and self.step % opt.eval_every == 0:
                        for r in self.validate(val_segments):
                            valid.write(r)
                    if self.step % opt.checkpoint_every == 0:
                        self.save_checkpoint()
                if out_of_time:
                    break
        except KeyboardInterrupt:
            if self.is_main and self.step > start:
                self.save_checkpoint()
            raise
        finally:
            if bar is not None:
                bar.close()
        if self.is_main and self.step > start:
            self.save_checkpoint()
            self.export()
        self._elapsed_base, self._started = self.elapsed(), None
        if self.world > 1:
            dist.barrier()
        return self.step

    def _mean_logs(self, acc: dict[str, list[Tensor]]) -> dict[str, str]:
        """Mean of each logged value since the last row, over steps and (under DDP) over ranks."""
        keys = sorted(acc)
        means = torch.stack([torch.stack([v.to(self.device) for v in acc[k]]).mean() for k in keys])
        if self.world > 1:
            dist.all_reduce(means)
            means = means / self.world
        return {k: f"{float(v):.5g}" for k, v in zip(keys, means.cpu())}

    def elapsed(self) -> float:
        """Training seconds over every run of this RUN_DIR."""
        running = time.monotonic() - self._started if self._started is not None else 0.0
        return self._elapsed_base + running

    def _out_of_time(self) -> bool:
        if self.opt.max_minutes is None:
            return False
        late = time.monotonic() - self._started >= 60 * self.opt.max_minutes
        if self.world > 1:  # every rank must stop at the same step
            flag = torch.tensor([float(late)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            late = bool(flag.item())
        return late

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
