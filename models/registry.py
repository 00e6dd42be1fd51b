"""Named presets -> configured generators, and safetensors weights with a JSON config beside them.

A weights file `NAME.safetensors` always travels with `NAME.json`:
    {"family": "wave-u-mamba" | "aeromamba" | "mambawave", "preset": str, "config": {...}, "sample_rate": int,
     "block_multiple": int, "latency": int, ...optional training facts}
Weights load from `.safetensors` only (never pickle).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import WEIGHTS_DIR
from .atomic import atomic_write
from .streaming import StreamingModule


class WeightsNotFoundError(FileNotFoundError):
    """A preset or path has no weights file (yet)."""


class WeightsError(ValueError):
    """A weights file or its config is unreadable, corrupt, or does not fit the model."""


@dataclass(frozen=True)
class Preset:
    family: str
    config_factory: str  # name of the module-level config function in the family's module
    description: str


PRESETS: dict[str, Preset] = {
    "speech": Preset(
        "wave-u-mamba", "speech_config", "compact causal Wave-U-Mamba, 8-24 kHz speech -> 48 kHz"
    ),
    "music": Preset("aeromamba", "music_config", "compact streaming AEROMamba, 11-22 kHz music -> 44.1 kHz"),
    "wave-u-mamba-paper": Preset("wave-u-mamba", "paper_config", "Wave-U-Mamba, the paper configuration"),
    "aeromamba-paper": Preset("aeromamba", "paper_config", "AEROMamba, the paper configuration"),
    "mambawave": Preset(
        "mambawave",
        "mambawave_small_config",
        "small streaming MambaWave diffusion (2 sampling steps) + excitation, 8-24 kHz speech -> 48 kHz",
    ),
    "mambawave-paper": Preset("mambawave", "mambawave_paper_config", "MambaWave, the paper configuration"),
}


_FAMILY_CLASSES = {"wave-u-mamba": "WaveUMamba", "aeromamba": "AEROMamba", "mambawave": "MambaWave"}


def _family_module(family: str):
    """The module of a family, imported lazily to keep start-up light."""
    if family == "wave-u-mamba":
        from . import wave_u_mamba as mod
    elif family == "aeromamba":
        from . import aero_mamba as mod
    elif family == "mambawave":
        from . import mamba_wave as mod
    else:
        raise WeightsError(f"unknown model family {family!r}; known: {', '.join(_FAMILY_CLASSES)}")
    return mod


def family_of(model: StreamingModule) -> str:
    """The family name of a generator ("wave-u-mamba", "aeromamba" or "mambawave")."""
    for family, cls_name in _FAMILY_CLASSES.items():
        if type(model).__name__ == cls_name:
            return family
    raise ValueError(f"{type(model).__name__} is not a livesr generator")


def build_from_spec(family: str, config: dict, preset: str = "custom") -> StreamingModule:
    """A randomly initialised generator of `family` built from a config dict (as stored in the JSON)."""
    mod = _family_module(family)
    cls = getattr(mod, _FAMILY_CLASSES[family])
    config_cls = getattr(mod, _FAMILY_CLASSES[family] + "Config")
    model = cls(config_cls.from_dict(config))
    model.preset = preset
    return model


def with_config(model: StreamingModule, **changes: object) -> StreamingModule:
    """A copy of a generator with some config fields changed and the same weights (e.g. level_shape)."""
    config = {**model.config.to_dict(), **changes}
    clone = build_from_spec(family_of(model), config, getattr(model, "preset", "custom"))
    clone.load_state_dict(model.state_dict())
    return clone.train(model.training)


def build_model(name: str) -> StreamingModule:
    """A randomly initialised preset."""
    if name not in PRESETS:
        raise ValueError(
            f"unknown model {name!r}; presets: {', '.join(PRESETS)} (or a path to a .safetensors file)"
        )
    preset = PRESETS[name]
    mod = _family_module(preset.family)
    model = getattr(mod, _FAMILY_CLASSES[preset.family])(getattr(mod, preset.config_factory)())
    model.preset = name
    return model


def weights_path(name_or_path: str | os.PathLike) -> Path:
    """The .safetensors file of a preset name (its shipped weights) or a path, or a clear error."""
    text = str(name_or_path)
    if text in PRESETS:
        path = WEIGHTS_DIR / f"{text}.safetensors"
        if not path.exists():
            raise WeightsNotFoundError(
                f"no trained weights are shipped for preset {text!r} (looked for {path}); "
                "use pretrained=False for a randomly initialised model"
            )
        return path
    path = Path(text)
    if path.suffix != ".safetensors":
        if path.suffix in (".pt", ".pth", ".ckpt", ".bin"):
            raise WeightsError(
                f"{path}: only .safetensors weights are loaded (pickle files are never opened)"
            )
        raise ValueError(
            f"unknown model {text!r}; presets: {', '.join(PRESETS)} (or a path to a .safetensors file)"
        )
    if not path.exists():
        raise WeightsNotFoundError(f"weights file not found: {path}")
    return path


def read_config(weights: Path) -> dict:
    """The JSON config beside a weights file."""
    cfg_path = weights.with_suffix(".json")
    if not cfg_path.exists():
        raise WeightsNotFoundError(f"{weights}: its config {cfg_path.name} is missing beside it")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WeightsError(f"{cfg_path}: not valid JSON ({err})") from None
    for key in ("family", "config"):
        if key not in cfg:
            raise WeightsError(f"{cfg_path}: missing key {key!r}")
    return cfg


def load_model(name_or_path: str | os.PathLike, pretrained: bool = True) -> StreamingModule:
    """A generator by preset name or weights path, in eval mode.

    pretrained=False gives the randomly initialised preset (names only). The model's config, rates,
    block_multiple and latency are its attributes (`model.config`, `model.sample_rate`, ...).
    """
    if not pretrained:
        return build_model(str(name_or_path)).eval()
    weights = weights_path(name_or_path)
    cfg = read_config(weights)
    try:
        model = build_from_spec(cfg["family"], cfg["config"], cfg.get("preset", weights.stem))
    except WeightsError:
        raise
    except (TypeError, ValueError, KeyError) as err:
        raise WeightsError(f"{weights.with_suffix('.json')}: config does not build a model ({err})") from None
    tensors = read_weights(weights)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"{weights}: keys do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    for key, value in tensors.items():
        if value.shape != expected[key].shape:
            raise WeightsError(
                f"{weights}: {key} has shape {tuple(value.shape)}, the model expects {tuple(expected[key].shape)}"
            )
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file; WeightsError when unreadable or not finite."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"{path}: not a readable safetensors file ({err})") from None
    for key, value in tensors.items():
        if not torch.isfinite(value).all():
            raise WeightsError(f"{path}: {key} holds NaN or Inf")
    return tensors


def save_model(model: StreamingModule, path: str | os.PathLike, **extra: object) -> Path:
    """Write `path` (.safetensors) and its .json config atomically; `extra` goes into the JSON."""
    path = Path(path).with_suffix(".safetensors")
    cfg = {
        "family": family_of(model),
        "preset": getattr(model, "preset", path.stem),
        "config": model.config.to_dict(),
        "sample_rate": model.sample_rate,
        "block_multiple": model.block_multiple,
        "latency": model.latency,
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp))
    atomic_write(
        path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(cfg, indent=2) + "\n")
    )
    return path
