"""Which generator runs: a shipped preset's ONNX graph (no torch needed), or a torch model.

The presets ship their exported streaming step beside their weights (models/weights/NAME.onnx, made by
`python -m export --shipped`), so the base install (numpy, onnxruntime, no torch) runs them at once.
Everything else -- another block length, custom weights, the torch or triton backend, random
weights -- builds the torch model, which needs the `torch` extra.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from models import WEIGHTS_DIR

TORCH_EXTRA = "pip install 'livesr[torch]'"


class GeneratorUnavailable(ValueError):
    """The generator cannot be loaded as asked (missing extra, unknown name, bad weights)."""


def shipped_graph(name: str) -> Path | None:
    """The ONNX graph shipped for preset `name`, if any."""
    if not name.isidentifier():  # a path, not a preset name
        return None
    path = WEIGHTS_DIR / f"{name}.onnx"
    return path if path.is_file() else None


def shipped_presets() -> tuple[str, ...]:
    """The presets that ship a graph beside their weights config: what the base install can run."""
    return tuple(sorted(p.stem for p in WEIGHTS_DIR.glob("*.onnx") if p.with_suffix(".json").is_file()))


def has_module(name: str) -> bool:
    """Whether `name` is installed (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken or blocked install counts as missing
        return False


def load_shipped(name: str, threads: int = 1, block_size: int | None = None) -> Any | None:
    """An `OnnxStreamer` of preset `name`'s shipped graph, or None when there is none, onnxruntime is
    missing, or the graph's block length is not `block_size`."""
    graph = shipped_graph(name)
    if graph is None or not has_module("onnxruntime"):
        return None
    from export.runtime import OnnxStreamer

    try:
        runner = OnnxStreamer(graph, threads=threads)
    except Exception as err:  # a damaged install: say which file
        raise GeneratorUnavailable(f"cannot load the shipped graph {graph}: {err}") from None
    if block_size is not None and block_size != runner.block_size:
        return None
    runner.preset = name
    return runner


def _needs_torch(name: str, backend: str, pretrained: bool) -> str:
    """What asked for the torch model, in words."""
    if backend in ("torch", "triton"):
        return f"the {backend} backend"
    if not pretrained:
        return "random weights"
    if shipped_graph(name) is None:
        return f"model {name!r} (only the shipped presets run without it)"
    if not has_module("onnxruntime"):
        return f"model {name!r} without onnxruntime"
    return "a model block other than the shipped graph's"


def load_generator(
    name: str,
    backend: str = "auto",
    pretrained: bool = True,
    threads: int = 1,
    block_size: int | None = None,
) -> Any:
    """A generator for `realtime.processor.Processor`: preset name or .safetensors path.

    With backend "auto" or "onnx", trained weights and the shipped block length, a preset runs its
    shipped graph (`OnnxStreamer`, torch-free). Otherwise the torch model is built (`pretrained=False`:
    random weights) on `threads` torch threads; the Processor then runs or exports it per `backend`.
    Raises GeneratorUnavailable with the reason (e.g. the torch extra is not installed).
    """
    if pretrained and backend in ("auto", "onnx"):
        runner = load_shipped(name, threads, block_size)
        if runner is not None:
            return runner
    if not has_module("torch"):
        raise GeneratorUnavailable(
            f"{_needs_torch(name, backend, pretrained)} needs torch, which is not installed: {TORCH_EXTRA}"
        )
    import torch

    from models.registry import load_model

    torch.set_num_threads(threads)
    return load_model(name, pretrained=pretrained)
