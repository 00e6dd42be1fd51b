"""Identity of a generator (its weights hash) and the on-disk cache of its exported graphs."""

from __future__ import annotations

import hashlib
import json
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from torch import nn


def livesr_version() -> str:
    """The installed livesr version ("unknown" when running from a bare checkout)."""
    try:
        return version("livesr")
    except PackageNotFoundError:
        return "unknown"


def weights_hash(model: nn.Module) -> str:
    """sha256 (hex) of what makes a model compute what it computes.

    Covers the class name, the config (hyper-parameters that leave no trace in the tensors, such as
    an FFT size) and every state_dict tensor: name, dtype, shape and bytes, in a fixed order.
    """
    h = hashlib.sha256(type(model).__qualname__.encode())
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        h.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_dir() -> Path:
    """Where exported graphs are kept: $LIVESR_CACHE/onnx, else ~/.cache/livesr/onnx."""
    root = os.environ.get("LIVESR_CACHE") or "~/.cache/livesr"
    return Path(root).expanduser() / "onnx"


def cache_path(model: nn.Module, block_size: int, directory: Path | None = None) -> Path:
    """The cache file of `model` exported at `block_size`: keyed by weights hash, block and livesr version."""
    name = str(getattr(model, "preset", type(model).__name__)).replace(os.sep, "_")
    key = f"{name}-{weights_hash(model)[:20]}-b{block_size}-v{livesr_version()}.onnx"
    return (directory if directory is not None else cache_dir()) / key
