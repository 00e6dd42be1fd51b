"""Selective-scan and causal-conv primitives: one API, several backends.

`selective_scan` follows mamba-ssm's `selective_scan_fn` layouts and adds an initial state:
u, delta, z: (batch, dim, length); A: (dim, dstate) fp32; B, C: (batch, dstate, length);
D, delta_bias: (dim,) fp32; initial_state / final state: (batch, dim, dstate) fp32.

Backends: "reference" (sequential oracle), "chunked" (chunk-parallel torch, CPU default and
ONNX-exportable), "triton" (CUDA block scan / multi-step state update), "mamba_ssm" (mamba-ssm's
CUDA kernel with the zero-state + correction formula). "auto" picks triton on CUDA tensors when
Triton is importable, chunked otherwise.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

from .conv import causal_conv1d
from .reference import selective_scan_ref
from .validate import validate_scan_args

BACKENDS = ("reference", "chunked", "triton", "mamba_ssm")

__all__ = ["BACKENDS", "available_backends", "causal_conv1d", "selective_scan", "validate_scan_args"]


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Backends that can run on `device` in this installation."""
    device = torch.device(device)
    found = ["reference", "chunked"]
    if device.type == "cuda" and torch.cuda.is_available():
        if importlib.util.find_spec("triton") is not None:
            found.append("triton")
        if importlib.util.find_spec("mamba_ssm") is not None:
            found.append("mamba_ssm")
    return found


def _resolve(backend: str, u: Tensor) -> str:
    if backend not in BACKENDS + ("auto",):
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS + ('auto',))}")
    if backend != "auto":
        return backend
    return "triton" if "triton" in available_backends(u.device) else "chunked"


def selective_scan(
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
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan with an optional initial state; returns out or (out, final_state)."""
    validate_scan_args(u, delta, A, B, C, D, z, delta_bias, initial_state)
    name = _resolve(backend, u)
    if name == "reference":
        fn = selective_scan_ref
    elif name == "chunked":
        from .chunked import selective_scan_chunked as fn
    elif name == "triton":
        from .triton_scan import selective_scan_triton as fn
    else:
        from .mamba_ssm_scan import selective_scan_mamba_ssm as fn
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_final_state)
