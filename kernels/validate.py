"""Argument checks shared by every selective-scan backend: one error message per misfit."""

from __future__ import annotations

import torch
from torch import Tensor

_FLOAT_TYPES = (torch.float32, torch.float16, torch.bfloat16)


def _expect(name: str, t: Tensor | None, shape: tuple, dtypes: tuple = _FLOAT_TYPES) -> None:
    if t is None:
        return
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    if t.dtype not in dtypes:
        names = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise ValueError(f"{name} has dtype {t.dtype}, expected one of: {names}")


def validate_scan_args(u, delta, A, B, C, D=None, z=None, delta_bias=None, initial_state=None) -> None:
    """Raise ValueError naming the first argument whose shape or dtype does not fit the others."""
    if not isinstance(u, Tensor) or u.dim() != 3:
        raise ValueError(f"u must be a 3-D tensor (batch, dim, length), got {getattr(u, 'shape', u)}")
    _expect("u", u, u.shape)
    batch, dim, length = u.shape
    if not isinstance(A, Tensor) or A.dim() != 2:
        raise ValueError(
            f"A must be a 2-D fp32 tensor (dim, dstate) = ({dim}, N), got {getattr(A, 'shape', A)}"
        )
    dstate = A.shape[1]
    fp32 = (torch.float32,)
    _expect("A", A, (dim, dstate), fp32)
    _expect("delta", delta, (batch, dim, length), (u.dtype,))
    _expect("B", B, (batch, dstate, length))
    _expect("C", C, (batch, dstate, length))
    _expect("z", z, (batch, dim, length), (u.dtype,))
    _expect("D", D, (dim,), fp32)
    _expect("delta_bias", delta_bias, (dim,), fp32)
    _expect("initial_state", initial_state, (batch, dim, dstate), fp32)
    devices = {t.device for t in (u, delta, A, B, C, D, z, delta_bias, initial_state) if t is not None}
    if len(devices) > 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(map(str, devices))}")
