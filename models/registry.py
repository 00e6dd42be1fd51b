"""Named presets -> configured generators, and safetensors weights with a JSON config beside them.

A weights file `NAME.safetensors` always travels with `NAME.json`:
    {"family": "wave-u-mamba" | "aeromamba", "preset": str, "config": {...}, "sample_rate": int,
     "block_multiple": int, "latency": int, ...optional training facts}
Weights load from `.safetensors` only (never pickle).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .streaming import StreamingModule

WEIGHTS_DIR = Path(__file__).parent / "weights"


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
}


def _family(name: str) -> tuple[type, Callable[[str], object]]:
    """(model class, config-by-factory-name) for a family; imported lazily to keep start-up light."""
    if name == "wave-u-mamba":
        from . import wave_u_mamba as mod

        return mod.WaveUMamba, lambda factory: getattr(mod, factory)()
    if name == "aeromamba":
        from . import aero_mamba as mod

        return mod.AEROMamba, lambda factory: getattr(mod, factory)()
    raise WeightsError(f"unknown model family {name!r}; known: wave-u-mamba, aeromamba")


def _config_class(family: str) -> type:
    if family == "wave-u-mamba":
        from .wave_u_mamba import WaveUMambaConfig

        return WaveUMambaConfig
    from .aero_mamba import AEROMambaConfig

    return AEROMambaConfig


def build_model(name: str) -> StreamingModule:
    """A randomly initialised preset."""
    if name not in PRESETS:
        raise ValueError(
            f"unknown model {name!r}; presets: {', '.join(PRESETS)} (or a path to a .safetensors file)"
        )
    preset = PRESETS[name]
    cls, make_config = _family(preset.family)
    model = cls(make_config(preset.config_factory))
    model.preset = name
    return model


def _resolve_weights(name_or_path: str | os.PathLike) -> Path:
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
    weights = _resolve_weights(name_or_path)
    cfg = read_config(weights)
    cls, _ = _family(cfg["family"])
    try:
        config = _config_class(cfg["family"]).from_dict(cfg["config"])
        model = cls(config)
    except (TypeError, ValueError, KeyError) as err:
        raise WeightsError(f"{weights.with_suffix('.json')}: config does not build a model ({err})") from None
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"{weights}: not a readable safetensors file ({err})") from None
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
        if not torch.isfinite(value).all():
            raise WeightsError(f"{weights}: {key} holds NaN or Inf")
    model.load_state_dict(tensors, strict=True)
    model.preset = cfg.get("preset", weights.stem)
    return model.eval()


def save_model(model: StreamingModule, path: str | os.PathLike, **extra: object) -> Path:
    """Write `path` (.safetensors) and its .json config atomically; `extra` goes into the JSON."""
    path = Path(path).with_suffix(".safetensors")
    family = {"WaveUMamba": "wave-u-mamba", "AEROMamba": "aeromamba"}.get(type(model).__name__)
    if family is None:
        raise ValueError(f"cannot save a {type(model).__name__}: not a livesr generator")
    cfg = {
        "family": family,
        "preset": getattr(model, "preset", path.stem),
        "config": model.config.to_dict(),
        "sample_rate": model.sample_rate,
        "block_multiple": model.block_multiple,
        "latency": model.latency,
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    _atomic_write(path, lambda tmp: save_file(tensors, tmp))
    _atomic_write(
        path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(cfg, indent=2) + "\n")
    )
    return path


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
