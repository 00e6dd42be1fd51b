"""Run a streaming module block by block, checking that every step keeps the state's layout."""

from __future__ import annotations

import torch
from torch import Tensor

from models.streaming import State, StreamingModule


def stream_blocks(model: StreamingModule, x: Tensor, sizes: list[int], state: State | None = None) -> Tensor:
    """`model.step` over consecutive blocks of `x` (time last) of the given sizes; the outputs joined.
    Every new state must have the same keys, shapes and float32 dtype as the one it replaces."""
    state = model.init_state(x.shape[0]) if state is None else state
    outs, pos = [], 0
    for n in sizes:
        y, new_state = model.step(x[:, pos : pos + n], state)
        assert new_state.keys() == state.keys()
        assert all(
            new_state[k].shape == state[k].shape and new_state[k].dtype == torch.float32 for k in state
        )
        outs.append(y)
        state, pos = new_state, pos + n
    return torch.cat(outs, dim=-1)
