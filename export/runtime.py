"""OnnxStreamer: an exported generator step run by onnxruntime, on numpy arrays, without torch.

    streamer = OnnxStreamer("speech.onnx")
    state = streamer.init_state(batch=1)
    y, state = streamer.step(x, state)        # x: (batch, streamer.block_size) float32

The graph's I/O layout (written by `export.onnx`): inputs `audio` (batch, block) and one input per
state tensor, named by its State key; outputs `audio_out` and `next.<key>` for every state key.
The metadata (`metadata_props`) carries rates, block sizes, latency and the state shapes.

On the CUDA provider the states stay on the GPU between steps (IOBinding): `init_state` and
`step` then hand back onnxruntime OrtValues on the device instead of numpy arrays; the audio
goes in and comes out as numpy arrays either way. This module must not import torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime as ort

# The I/O and metadata layout shared with the exporter (export/onnx.py).
FORMAT = "livesr-streaming-step/1"
AUDIO_IN = "audio"
AUDIO_OUT = "audio_out"
NEXT_PREFIX = "next."
META_FORMAT = "livesr_format"
META_KEYS = (
    "livesr_version",
    "preset",
    "weights_hash",
    "input_sample_rate",
    "output_sample_rate",
    "block_multiple",
    "block_size",
    "latency",
    "states",
    "scan_backend",
)
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def next_name(key: str) -> str:
    """Graph output name of the new value of state `key`."""
    return NEXT_PREFIX + key


@dataclass(frozen=True)
class StateSpec:
    """One state tensor: its shape for a single stream and the axis that grows with the batch.

    Most states are (batch, ...); a layer that runs one row per frequency bin keeps
    (batch * bins, ...), so the batch axis holds `shape[batch_axis]` rows per stream.
    """

    name: str
    shape: tuple[int, ...]
    batch_axis: int = 0

    def shape_for(self, batch: int) -> tuple[int, ...]:
        out = list(self.shape)
        out[self.batch_axis] *= batch
        return tuple(out)

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "batch_axis": self.batch_axis}

    @staticmethod
    def from_dict(d: dict) -> StateSpec:
        return StateSpec(str(d["name"]), tuple(int(s) for s in d["shape"]), int(d["batch_axis"]))


def parse_metadata(meta: dict[str, str], source: str) -> dict[str, Any]:
    """Typed livesr metadata from a graph's metadata_props; ValueError when it is not a livesr graph."""
    if meta.get(META_FORMAT) != FORMAT:
        found = meta.get(META_FORMAT)
        what = f"format {found!r}, this version reads {FORMAT!r}" if found else "no livesr metadata"
        raise ValueError(
            f"{source}: not a livesr streaming-step graph ({what}); export one with `python -m export`"
        )
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{source}: livesr metadata is missing {', '.join(missing)}")
    try:
        out: dict[str, Any] = {
            k: meta[k] for k in ("livesr_version", "preset", "weights_hash", "scan_backend")
        }
        for k in ("input_sample_rate", "output_sample_rate", "block_multiple", "latency"):
            out[k] = int(meta[k])
        out["block_size"] = None if meta["block_size"] in ("", "none") else int(meta["block_size"])
        out["states"] = tuple(StateSpec.from_dict(d) for d in json.loads(meta["states"]))
        out["config"] = json.loads(meta.get("config") or "null")
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{source}: unreadable livesr metadata ({err})") from None
    return out


def session_options(threads: int = 1) -> ort.SessionOptions:
    """Options for a real-time step: fixed threads, sequential execution, denormals flushed to zero."""
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.set_denormal_as_zero", "1")  # silence must not slow the step
    return so


def _providers(requested: list | None) -> list:
    available = ort.get_available_providers()
    if requested is None:
        return [CUDA, CPU] if CUDA in available else [CPU]
    names = [p[0] if isinstance(p, tuple) else p for p in requested]
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise ValueError(f"providers {names} not available; this onnxruntime offers {available}")
    return list(requested)


class OnnxStreamer:
    """The streaming step contract (init_state / step) of an exported livesr graph."""

    def __init__(self, path: str | os.PathLike, providers: list | None = None, threads: int = 1) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {self.path}")
        so, chosen = session_options(threads), _providers(providers)
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=chosen)
        except Exception as err:  # onnxruntime raises its own types for unreadable or invalid files
            raise ValueError(
                f"{self.path}: not a readable ONNX model ({type(err).__name__}: {err})"
            ) from None
        meta = parse_metadata(self.session.get_modelmeta().custom_metadata_map, str(self.path))
        self.metadata = meta
        self.preset: str = meta["preset"]
        self.weights_hash: str = meta["weights_hash"]
        self.sample_rate: int = meta["output_sample_rate"]
        self.input_sample_rate: int = meta["input_sample_rate"]
        self.block_multiple: int = meta["block_multiple"]
        self.block_size: int | None = meta["block_size"]
        self.latency: int = meta["latency"]
        self.state_specs: tuple[StateSpec, ...] = meta["states"]
        # The generator's config as exported (attribute access, like a torch model's), so a host
        # reads what it needs from a graph alone, e.g. the band merge's calibrated level.
        self.config = SimpleNamespace(**meta["config"]) if isinstance(meta["config"], dict) else None
        self._keys = [s.name for s in self.state_specs]
        self._key_set = frozenset(self._keys)
        self._out_names = [AUDIO_OUT, *map(next_name, self._keys)]
        self._check_graph_io()
        self.providers_in_use: list[str] = self.session.get_providers()
        self._device = "cuda" if self.providers_in_use[0] == CUDA else "cpu"
        self._device_id = int(self.session.get_provider_options().get(CUDA, {}).get("device_id", 0))

    def _check_graph_io(self) -> None:
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        want_in, want_out = {AUDIO_IN, *self._keys}, set(self._out_names)
        if inputs != want_in or outputs != want_out:
            raise ValueError(
                f"{self.path}: graph I/O does not match its metadata "
                f"(inputs differ by {sorted(inputs ^ want_in)[:5]}, outputs by {sorted(outputs ^ want_out)[:5]})"
            )

    def state_shapes(self, batch: int = 1) -> dict[str, tuple[int, ...]]:
        """Shape of every state tensor for `batch` streams."""
        return {s.name: s.shape_for(batch) for s in self.state_specs}

    def init_state(self, batch: int = 1) -> dict[str, Any]:
        """Zero states for `batch` streams: numpy arrays, or OrtValues on the GPU with CUDA."""
        if not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        zeros = {s.name: np.zeros(s.shape_for(int(batch)), np.float32) for s in self.state_specs}
        if self._device == "cpu":
            return zeros
        return {k: ort.OrtValue.ortvalue_from_numpy(v, "cuda", self._device_id) for k, v in zeros.items()}

    def with_state_values(self, state: dict[str, Any], values: dict[str, np.ndarray]) -> dict[str, Any]:
        """`state` with the named entries set to `values` (broadcast over the batch)."""
        out = dict(state)
        for key, value in values.items():
            if key not in state:
                raise ValueError(f"{self.path}: the graph has no state {key!r}")
            old = state[key]
            shape = tuple(old.shape()) if isinstance(old, ort.OrtValue) else old.shape
            array = np.ascontiguousarray(np.broadcast_to(np.asarray(value, np.float32), shape))
            out[key] = (
                array
                if self._device == "cpu"
                else ort.OrtValue.ortvalue_from_numpy(array, "cuda", self._device_id)
            )
        return out

    def stack_states(self, states: list[dict[str, Any]]) -> dict[str, Any]:
        """One state holding the given states' streams in order (each along its batch axis), to run them
        as one batch. CPU (numpy) states only."""
        return {
            spec.name: np.concatenate([np.asarray(st[spec.name]) for st in states], axis=spec.batch_axis)
            for spec in self.state_specs
        }

    def split_state(self, state: dict[str, Any], batches: list[int]) -> list[dict[str, Any]]:
        """The inverse of `stack_states`: one state per part, part i holding `batches[i]` streams."""
        parts: list[dict[str, Any]] = [{} for _ in batches]
        for spec in self.state_specs:
            cuts = np.cumsum(batches[:-1]) * spec.shape[spec.batch_axis]
            for part, value in zip(parts, np.split(np.asarray(state[spec.name]), cuts, axis=spec.batch_axis)):
                part[spec.name] = value
        return parts

    def _check(self, x: Any, state: dict[str, Any]) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[0] < 1 or not np.issubdtype(x.dtype, np.floating):
            raise ValueError(
                f"x must be a float32 array (batch, {self.block_size or 'samples'}), got {x.dtype} {x.shape}"
            )
        if self.block_size is not None and x.shape[1] != self.block_size:
            raise ValueError(
                f"x has shape {x.shape}; this graph takes blocks of exactly {self.block_size} samples: "
                f"expected ({x.shape[0]}, {self.block_size})"
            )
        if not isinstance(state, dict):
            raise ValueError(f"state must be the dict from init_state(), got {type(state).__name__}")
        missing = [k for k in self._keys if k not in state]
        unexpected = [k for k in state if k not in self._key_set]
        if missing or unexpected:
            raise ValueError(
                f"state keys do not match the graph: missing {missing[:4]}, unexpected {unexpected[:4]}"
            )
        batch = x.shape[0]
        for spec in self.state_specs:
            value = state[spec.name]
            shape = tuple(value.shape()) if isinstance(value, ort.OrtValue) else np.shape(value)
            if shape != spec.shape_for(batch):
                raise ValueError(
                    f"state[{spec.name!r}] has shape {shape}, expected {spec.shape_for(batch)} for batch {batch}"
                )
        return np.ascontiguousarray(x, dtype=np.float32)

    def step(self, x: np.ndarray, state: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """One block: (y (batch, block) float32, new state). The given state is left untouched."""
        x = self._check(x, state)
        if self._device == "cpu":
            feed = {AUDIO_IN: x}
            for k in self._keys:
                feed[k] = np.asarray(state[k], dtype=np.float32)
            outs = self.session.run(self._out_names, feed)
            return outs[0], dict(zip(self._keys, outs[1:]))
        return self._step_bound(x, state)

    def _step_bound(self, x: np.ndarray, state: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """CUDA: states bound on the device in and out; only the audio crosses to the host."""
        io = self.session.io_binding()
        io.bind_cpu_input(AUDIO_IN, x)
        for k in self._keys:
            value = state[k]
            if isinstance(value, ort.OrtValue):
                io.bind_ortvalue_input(k, value)
            else:
                io.bind_cpu_input(k, np.ascontiguousarray(value, dtype=np.float32))
        io.bind_output(AUDIO_OUT, "cpu")
        for k in self._keys:
            io.bind_output(next_name(k), "cuda", self._device_id)
        self.session.run_with_iobinding(io)
        outs = io.get_outputs()
        return outs[0].numpy(), dict(zip(self._keys, outs[1:]))
