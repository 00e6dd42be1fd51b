"""Chunk-parallel selective scan in plain torch: the CPU fast path, exportable to ONNX.

The sequence is cut into chunks of `T` steps. Pass 1 runs the recurrence inside every chunk at once
(vectorised over chunks) from a zero state, keeping only each chunk's final state and its total decay
(a running product of per-step decays <= 1 — never an exp of a cumulative sum, so nothing can overflow
for any length or decay). A short loop over chunks turns those into each chunk's true initial state,
and pass 2 reruns the recurrence inside every chunk from it, contracting each state with C as it is
made. Sequential depth is 2*T + L/T instead of L.

To stay in cache (fresh multi-megabyte allocations page-fault and dominate on CPU), long sequences
are processed in super-blocks of about `_PIECE_ELEMENTS` state elements, carrying the state between them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .reference import finish_output, prepare_delta

_PIECE_ELEMENTS = 1 << 18  # state elements per stream per super-block: ~1 MB in fp32, fits in L2
_SEQUENTIAL_MAX = 24  # up to this length a plain sequential pass has the fewest ops


def _chunk_len(length: int) -> int:
    """Chunk length minimising the sequential depth (2*T + L/T ops; one plain pass for short blocks)."""
    if length <= _SEQUENTIAL_MAX:
        return max(1, length)
    return max(1, round(math.sqrt(length / 2)))


def _scan_piece(delta_a: Tensor, delta_u: Tensor, B: Tensor, C: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """Scan one super-block.

    delta_a: (b, d, nc, T, n) = delta * A (<= 0), consumed (exponentiated in place); delta_u: (b, d, nc, T);
    B, C: (b, nc, T, n); h: (b, d, n) state before the block. Returns y (b, d, nc*T) and the state after.
    """
    b, d, nc, T, n = delta_a.shape
    decay = delta_a.exp_().unbind(3)  # T x (b, d, nc, n), each in (0, 1]
    inject = (delta_u.unsqueeze(-1) * B.unsqueeze(1)).unbind(3)
    readout = C.unsqueeze(1).unbind(3)  # T x (b, 1, nc, n)
    if nc == 1:
        state = h.unsqueeze(2)
    else:
        # Pass 1: chunks 0..nc-2 from a zero state; only their final states and total decays are needed.
        local, across = inject[0][:, :, :-1], decay[0][:, :, :-1]
        for t in range(1, T):
            local = torch.addcmul(inject[t][:, :, :-1], decay[t][:, :, :-1], local)
            across = across * decay[t][:, :, :-1]  # a product of factors <= 1: underflows, never overflows
        # Carry: each chunk's true initial state, from its predecessor's.
        starts = [h]
        for c_local, c_decay in zip(local.unbind(2), across.unbind(2)):
            starts.append(torch.addcmul(c_local, c_decay, starts[-1]))
        state = torch.stack(starts, dim=2)  # (b, d, nc, n)
    # Pass 2: every chunk from its true initial state; each state is read out while still in cache.
    ys = []
    for t in range(T):
        state = torch.addcmul(inject[t], decay[t], state)
        ys.append((state * readout[t]).sum(-1))
    return torch.stack(ys, dim=-1).reshape(b, d, nc * T), state[:, :, -1]


def _pad_end(x: Tensor, pad: int, time_dim: int) -> Tensor:
    """Zero-pad `x` at the end of its time axis (`time_dim` counted from the end); free when pad == 0."""
    if pad == 0:
        return x
    return torch.nn.functional.pad(x, (0, 0) * (-1 - time_dim) + (0, pad))


def selective_scan_chunked(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Same contract as `kernels.reference.selective_scan_ref`, chunk-parallel."""
    batch, dim, length = u.shape
    dstate = A.shape[1]
    delta = prepare_delta(delta, delta_bias, delta_softplus)
    A = A.float()
    delta_u = delta * u.float()
    Bt = B.float().transpose(1, 2)  # (b, L, n)
    Ct = C.float().transpose(1, 2)
    h = (
        initial_state.float()
        if initial_state is not None
        else u.new_zeros(batch, dim, dstate, dtype=torch.float32)
    )
    # Independent of the batch size, so an exported graph keeps a dynamic batch axis.
    piece = max(1, _PIECE_ELEMENTS // max(1, dim * dstate))
    ys = []
    for start in range(0, length, piece):
        stop = min(length, start + piece)
        span = stop - start
        T = _chunk_len(span)
        nc = -(-span // T)
        pad = nc * T - span  # padded steps have delta = 0: decay 1, no input, outputs dropped
        sl = slice(start, stop)
        d_p, du_p = _pad_end(delta[:, :, sl], pad, -1), _pad_end(delta_u[:, :, sl], pad, -1)
        B_p, C_p = _pad_end(Bt[:, sl], pad, -2), _pad_end(Ct[:, sl], pad, -2)
        delta_a = (d_p.unsqueeze(-1) * A.unsqueeze(1)).reshape(batch, dim, nc, T, dstate)
        y, h = _scan_piece(
            delta_a,
            du_p.reshape(batch, dim, nc, T),
            B_p.reshape(batch, nc, T, dstate),
            C_p.reshape(batch, nc, T, dstate),
            h,
        )
        ys.append(y[:, :, :span] if pad else y)
    if not ys:
        y = u.new_zeros(batch, dim, 0, dtype=torch.float32)
    else:
        y = ys[0] if len(ys) == 1 else torch.cat(ys, dim=-1)
    out = finish_output(y, u, D, z)
    return (out, h) if return_final_state else out
