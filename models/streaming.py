"""The streaming contract every livesr module follows.

    init_state(batch, device) -> State      # flat dict[str, Tensor], fp32, fixed shapes
    step(x, state) -> (y, new_state)        # pure: the input state is never mutated
    forward(x) == step(x, init_state(...))[0]

`block_multiple`: the lengths `step` accepts are multiples of it (in the module's input samples).
`latency`: algorithmic delay in samples at the module's output rate: an impulse at input sample t
comes out at output sample t + latency (for same-rate modules).
`traceable`: True when the Python code of `step` branches only on the shapes of the block and the
state, never on their values, so a graph traced once per shape is exact (`models.traced`).

Composite modules keep their children's states under dotted prefixes ("down.0.conv.ctx"), so the
state of a whole generator is one flat dict that maps one-to-one onto ONNX graph inputs/outputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

State = dict[str, Tensor]


class StreamingModule(nn.Module):
    """Base class: subclasses implement `init_state` and `step`; `forward` is one big step."""

    block_multiple: int = 1
    latency: int = 0
    traceable: bool = False

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        raise NotImplementedError

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        raise NotImplementedError

    def forward(self, x: Tensor, values: State | None = None) -> Tensor:
        """One step from the initial state, with the entries in `values` (e.g. a host's band level,
        per stream) set first."""
        state = self.init_state(x.shape[0], x.device)
        return self.step(x, {**state, **values} if values else state)[0]

    def check_block(self, length: int) -> None:
        """Raise a clear error when `length` is not an accepted block length."""
        if length % self.block_multiple != 0:
            raise ValueError(
                f"{type(self).__name__}: block length {length} is not a multiple of "
                f"block_multiple={self.block_multiple}"
            )


def substate(state: State, prefix: str) -> State:
    """The part of `state` stored under `prefix.` with the prefix removed."""
    cut = len(prefix) + 1
    head = prefix + "."
    return {k[cut:]: v for k, v in state.items() if k.startswith(head)}


def prefixed(prefix: str, state: State) -> State:
    """`state` with every key moved under `prefix.`."""
    return {f"{prefix}.{k}": v for k, v in state.items()}


def init_children(children: dict[str, StreamingModule], batch: int, device) -> State:
    """The flat initial state of several named children."""
    out: State = {}
    for name, child in children.items():
        out.update(prefixed(name, child.init_state(batch, device)))
    return out


def with_context(x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
    """Prepend the cached left context to `x` (time on the last axis).

    Returns (context ++ x, the new context = the last `context.shape[-1]` samples of it). This is the
    one implementation of "cache the left context" that every causal layer uses.
    """
    keep = context.shape[-1]
    if keep == 0:
        return x, context
    full = torch.cat([context, x], dim=-1)
    return full, full[..., full.shape[-1] - keep :]


class FlatStep(nn.Module):
    """`model.step` with the state dict flattened into positional tensors in the order of `keys`.

    The form graph tracers take (ONNX export, TorchScript): forward(x, *states) -> (y, *new_states).
    """

    def __init__(self, model: StreamingModule, keys: list[str]) -> None:
        super().__init__()
        self.model, self.keys = model, list(keys)

    def forward(self, x: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        y, new = self.model.step(x, dict(zip(self.keys, states)))
        if set(new) != set(self.keys):
            raise ValueError(
                f"step returned state keys {sorted(set(new) ^ set(self.keys))[:5]} it was not given"
            )
        return (y, *(new[k] for k in self.keys))
