"""ONNX export of a generator's streaming step: state in, state out, one fixed block length.

The graph (see `export.runtime` for the runner):
    inputs   audio (batch, block) float32, and every state tensor named by its State key
    outputs  audio_out (batch, block), and `next.<key>` for every state key
The batch axis is dynamic (states that keep one row per frequency bin have bins x batch rows); the
block length is fixed, so the Python loops of the chunked scan unroll into a flat graph.
metadata_props: livesr_format, livesr_version, preset, weights_hash, input/output_sample_rate,
block_multiple, block_size, latency, states (JSON: name, shape for one stream, batch axis), config.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from models.atomic import atomic_write
from models.dsp import blocking
from models.mamba import Mamba
from models.streaming import FlatStep, StreamingModule

from .cache import cache_path, livesr_version, weights_hash
from .runtime import AUDIO_IN, AUDIO_OUT, FORMAT, META_FORMAT, OnnxStreamer, StateSpec, next_name

log = logging.getLogger(__name__)

# Model block when none is given: about 10 ms rounded to block_multiple (the realtime Processor's rule).
# The scan backend baked into exported graphs: at a 10 ms block the chunked scan's unrolled graph is
# smaller, exports faster and runs faster in onnxruntime than the step-by-step reference.
EXPORT_SCAN_BACKEND = "chunked"
# ONNX vs torch agreement checked right after an export.
VERIFY_ATOL = 1e-4


def default_block_size(model: StreamingModule) -> int:
    """The Processor's default model block for `model` (about 10 ms)."""
    return blocking.default_block_size(int(model.sample_rate), int(model.block_multiple))


def state_specs(model: StreamingModule) -> list[StateSpec]:
    """Each state's shape for one stream and the axis that grows with the batch."""
    one, two = model.init_state(1, "cpu"), model.init_state(2, "cpu")
    specs = []
    for name, t in one.items():
        grow = [i for i, (a, b) in enumerate(zip(t.shape, two[name].shape)) if a != b]
        if len(grow) != 1 or two[name].shape[grow[0]] != 2 * t.shape[grow[0]]:
            raise ValueError(
                f"state {name!r} must grow with the batch along exactly one axis: "
                f"{tuple(t.shape)} for 1 stream, {tuple(two[name].shape)} for 2"
            )
        specs.append(StateSpec(name, tuple(t.shape), grow[0]))
    return specs


@contextlib.contextmanager
def scan_backend(model: nn.Module, backend: str) -> Iterator[None]:
    """Run every Mamba block of `model` with `backend` inside the block, restoring the old ones after."""
    mambas = [m for m in model.modules() if isinstance(m, Mamba)]
    before = [m.backend for m in mambas]
    try:
        for m in mambas:
            m.backend = backend
        yield
    finally:
        for m, b in zip(mambas, before):
            m.backend = b


@contextlib.contextmanager
def _inference_mode_for_export(model: nn.Module, backend: str) -> Iterator[None]:
    """eval(), no autograd and the export scan backend inside; the model's own settings restored after."""
    training = model.training
    try:
        with torch.no_grad(), scan_backend(model.eval(), backend):
            yield
    finally:
        model.train(training)


def _check_block(model: StreamingModule, block_size: int | None) -> int:
    block = default_block_size(model) if block_size is None else block_size
    if not isinstance(block, int) or block <= 0 or block % model.block_multiple:
        raise ValueError(f"block_size must be a positive multiple of {model.block_multiple}, got {block!r}")
    return block


def _metadata(model: StreamingModule, block: int, specs: list[StateSpec], backend: str) -> dict[str, str]:
    config = getattr(model, "config", None)
    return {
        META_FORMAT: FORMAT,
        "livesr_version": livesr_version(),
        "preset": str(getattr(model, "preset", type(model).__name__)),
        "weights_hash": weights_hash(model),
        "input_sample_rate": str(int(model.sample_rate)),
        "output_sample_rate": str(int(model.sample_rate)),
        "block_multiple": str(int(model.block_multiple)),
        "block_size": str(block),
        "latency": str(int(model.latency)),
        "states": json.dumps([s.to_dict() for s in specs]),
        "config": json.dumps(config.to_dict() if hasattr(config, "to_dict") else None, default=str),
        "scan_backend": backend,
    }


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Only errors from `logger_name` while inside (the exporter warns about optional packages)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _trace(model: StreamingModule, block: int, specs: list[StateSpec]) -> onnx.ModelProto:
    """torch.export -> ONNX with a dynamic batch axis; returns the model proto.

    The onnxscript optimiser roughly quarters the node count (constant folding, shape-op cleanup):
    it makes the export several times slower, and the step ~15% faster in onnxruntime.
    """
    keys = [s.name for s in specs]
    example_batch = 2  # torch.export treats sizes 0 and 1 as constants: trace with 2 streams
    audio = torch.randn(example_batch, block)
    states = tuple(torch.zeros(s.shape_for(example_batch)) for s in specs)
    batch = torch.export.Dim("batch")
    dynamic = {
        "x": {0: batch},  # FlatStep.forward(x, *states)
        "states": tuple(
            {s.batch_axis: batch if s.shape[s.batch_axis] == 1 else s.shape[s.batch_axis] * batch}
            for s in specs
        ),
    }
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr), _quiet("torch.onnx"):
        # The exporter's own progress lines go to stderr; its deprecation chatter is dropped.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
        program = torch.onnx.export(
            FlatStep(model, keys).eval(),
            (audio, *states),
            dynamo=True,
            external_data=False,
            input_names=[AUDIO_IN, *keys],
            output_names=[AUDIO_OUT, *map(next_name, keys)],
            dynamic_shapes=dynamic,
            optimize=True,
            verbose=False,
        )
    return program.model_proto


def export_onnx(
    model: StreamingModule,
    path: str | os.PathLike,
    block_size: int | None = None,
    backend: str = EXPORT_SCAN_BACKEND,
) -> Path:
    """Export `model.step` at a fixed block length to `path` (written atomically); returns the path.

    block_size: samples per block (default ~10 ms, see `default_block_size`); backend: the scan
    backend baked into the graph ("chunked" or "reference").
    """
    if backend not in ("chunked", "reference"):
        raise ValueError(
            f"backend must be 'chunked' or 'reference' (pure torch, exportable), got {backend!r}"
        )
    block = _check_block(model, block_size)
    devices = {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()}
    if devices - {"cpu"}:
        raise ValueError(f"export a model on the CPU (this one is on {sorted(devices)}): model.cpu() first")
    path = Path(path)
    specs = state_specs(model)
    name = getattr(model, "preset", type(model).__name__)
    log.info(
        "exporting %s: block %d samples at %d Hz, %d state tensors",
        name,
        block,
        model.sample_rate,
        len(specs),
    )
    start = time.perf_counter()
    with _inference_mode_for_export(model, backend):
        proto = _trace(model, block, specs)
    onnx.helper.set_model_props(proto, _metadata(model, block, specs, backend))
    proto.doc_string = f"livesr streaming step of {name}"
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: onnx.save_model(proto, tmp))  # temp file + os.replace
    log.info(
        "wrote %s: %d nodes, %.1f MB in %.1f s",
        path,
        len(proto.graph.node),
        path.stat().st_size / 1e6,
        time.perf_counter() - start,
    )
    return path


def verify_export(model: StreamingModule, path: str | os.PathLike, blocks: int = 4, batch: int = 2) -> float:
    """Max abs difference between onnxruntime and torch over `blocks` consecutive blocks of noise + sine."""
    runner = OnnxStreamer(path, providers=["CPUExecutionProvider"])
    block = runner.block_size
    rng = np.random.default_rng(0)
    t = np.arange(blocks * block) / model.sample_rate
    signal = 0.3 * np.sin(2 * np.pi * 440.0 * t)[None] + 0.05 * rng.standard_normal((batch, blocks * block))
    signal = signal.astype(np.float32)
    ort_state, torch_state = runner.init_state(batch), model.init_state(batch, "cpu")
    worst = 0.0
    with _inference_mode_for_export(model, runner.metadata["scan_backend"]):
        for i in range(blocks):
            x = signal[:, i * block : (i + 1) * block]
            y_ort, ort_state = runner.step(x, ort_state)
            y_torch, torch_state = model.step(torch.from_numpy(x), torch_state)
            worst = max(worst, float(np.abs(y_ort - y_torch.numpy()).max()))
    return worst


def cached_export(
    model: StreamingModule, block_size: int | None = None, directory: Path | None = None
) -> Path:
    """The model's graph at `block_size`, exported on first use into the cache (see `export.cache`)."""
    block = _check_block(model, block_size)
    path = cache_path(model, block, directory)
    if path.is_file():
        return path
    # Seconds for the compact presets, minutes for the paper ones: say why the start is slow.
    print(
        f"exporting {getattr(model, 'preset', type(model).__name__)} to ONNX for the onnx backend "
        f"(first use; cached in {path.parent}; --backend torch skips this)",
        file=sys.stderr,
    )
    export_onnx(model, path, block)
    return path
