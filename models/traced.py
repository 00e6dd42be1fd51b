"""A streaming module's `step` run as TorchScript graphs: the same aten ops without the Python.

A 10 ms block of a compact preset is about a thousand small ops; in eager torch the Python around
them (module calls, state-dict plumbing, shape checks) and the dispatcher cost more than the
arithmetic, and a graph run from C++ takes about half the time. A trace records the one path the
Python code takes, which in livesr's generators depends only on the shapes of the block and the
state, never on their values, so one graph per input shape is exact. Each graph is checked against
the eager step on the block it was traced with before it is used; a model whose trace fails or
disagrees runs eagerly for that shape, with a warning.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .streaming import FlatStep, State, StreamingModule

# Freezing folds parameters into constants, which may reassociate a few float ops (about 1e-6 of a
# tensor's largest value); a graph that differs by more than this is wrong, not rounded differently.
_TOLERANCE = 1e-5


def _agree(graph_out: tuple[Tensor, ...], eager_out: tuple[Tensor, ...]) -> bool:
    """Same shapes and dtypes, values within `_TOLERANCE` of each tensor's scale (at least 1)."""
    for x, y in zip(graph_out, eager_out, strict=True):
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if torch.equal(x, y):
            continue
        scale = max(1.0, float(y.abs().max()))
        if not float((x - y).abs().max()) <= _TOLERANCE * scale:  # NaN compares False: disagree
            return False
    return True


class TracedStep:
    """`step(x, state) -> (y, new_state)` of `model` (eval mode, not modified afterwards), traced per
    shape of `x` on its first block and run as a frozen TorchScript graph from then on.

    Blocks longer than `max_samples` run eagerly: the time a trace takes grows with the block (the
    scan's loops are unrolled) while the per-op overhead it saves does not. Call it under
    `torch.inference_mode()` or `torch.no_grad()`. `eager_shapes` lists the shapes that run eagerly
    because their trace failed or disagreed with the eager step.
    """

    def __init__(self, model: StreamingModule, max_samples: int | None = None) -> None:
        self.model = model
        self.max_samples = max_samples
        self._flat: FlatStep | None = None
        self._graphs: dict[tuple[int, ...], torch.jit.ScriptModule | None] = {}

    @property
    def eager_shapes(self) -> list[tuple[int, ...]]:
        return [shape for shape, graph in self._graphs.items() if graph is None]

    def __call__(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        shape = tuple(x.shape)
        if self.max_samples is not None and shape[-1] > self.max_samples:
            return self.model.step(x, state)
        if shape not in self._graphs:
            return self._trace(x, state)
        graph = self._graphs[shape]
        if graph is None:
            return self.model.step(x, state)
        keys = self._flat.keys
        out = graph(x, *(state[k] for k in keys))
        return out[0], dict(zip(keys, out[1:]))

    def _trace(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """Trace the graph for x's shape; the block itself is computed eagerly (the reference)."""
        y, new_state = self.model.step(x, state)
        if self._flat is None:
            self._flat = FlatStep(self.model, list(state)).eval()
        keys = self._flat.keys
        inputs = (x, *(state[k] for k in keys))
        graph = None
        try:
            with warnings.catch_warnings():
                # Shape checks become constants in a fixed-shape trace: exactly what is wanted here.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                traced = torch.jit.freeze(torch.jit.trace(self._flat, inputs, check_trace=False))
            if _agree(traced(*inputs), (y, *(new_state[k] for k in keys))):
                graph = traced
                # TorchScript profiles a graph's first run and optimises it on the second (~0.1 s):
                # do that here too, so the first block that counts runs at full speed.
                graph(*inputs)
            else:
                warnings.warn(
                    f"the traced step of {type(self.model).__name__} disagrees with the eager one for "
                    f"blocks of shape {tuple(x.shape)}: running those eagerly",
                    stacklevel=3,
                )
        except Exception as exc:  # noqa: BLE001 - any tracer failure means: run eagerly
            warnings.warn(
                f"could not trace the step of {type(self.model).__name__} for blocks of shape "
                f"{tuple(x.shape)} ({type(exc).__name__}: {exc}); running those eagerly",
                stacklevel=3,
            )
        self._graphs[tuple(x.shape)] = graph
        return y, new_state
