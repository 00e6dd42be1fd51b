"""mamba-ssm's CUDA selective scan with an initial state added exactly, by linearity.

`selective_scan_fn` always starts from h_0 = 0. The recurrence is linear in h_0, so with
S_t = sum_{s<=t} delta'_s * A (<= 0 since A < 0 and delta' >= 0 for a trained Mamba):

    y_t(h0) = y_t(0) + sum_n C_t[n] * exp(S_t[d, n]) * h0[d, n]
    h_L(h0) = h_L(0) + exp(S_L) * h0

Only exp(S_t) appears, never exp(-S_t), so nothing overflows however long the sequence is.
The zero-state scan runs with z=None (the gate is not linear), the correction is added, then
silu(z) is applied.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .reference import prepare_delta
from .validate import validate_scan_args

__all__ = ["ZeroStateScan", "add_initial_state", "selective_scan_mamba_ssm"]

# (u, delta, A, B, C, D, delta_bias, delta_softplus) -> (out, last_state), both from h_0 = 0.
ZeroStateScan = Callable[
    [Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None, bool], tuple[Tensor, Tensor]
]

_INSTALL_HINT = (
    "the mamba_ssm backend needs mamba-ssm and a CUDA GPU; on a CUDA machine run:\n"
    "  MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE \\\n"
    "  pip install --no-build-isolation mamba-ssm==2.3.2.post1"
)

# Bytes of fp32 (batch, dim, chunk, dstate) work the correction may materialise at once.
_CHUNK_BYTES = 64 * 2**20


def add_initial_state(
    zero_state_scan: ZeroStateScan,
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
    chunk_len: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Run `zero_state_scan` (no gate, h_0 = 0) and correct it for `initial_state`.

    The correction walks L in chunks of `chunk_len` steps (default: ~64 MiB of (B, D, chunk, N)
    fp32 work), carrying S_t from one chunk to the next.
    """
    y0, h_last = zero_state_scan(u, delta, A, B, C, D, delta_bias, delta_softplus)
    if initial_state is None:
        y = y0.float()
    else:
        batch, dim, length = u.shape
        dstate = A.shape[1]
        if chunk_len is None:
            chunk_len = max(1, _CHUNK_BYTES // max(1, 4 * batch * dim * dstate))
        elif chunk_len < 1:
            raise ValueError(f"chunk_len must be a positive int, got {chunk_len}")
        dt = prepare_delta(delta, delta_bias, delta_softplus)
        h0 = initial_state.float()
        A = A.float()
        y = y0.float().clone()
        s_prev = torch.zeros(batch, dim, 1, dstate, dtype=torch.float32, device=u.device)
        for t0 in range(0, length, chunk_len):
            t1 = min(t0 + chunk_len, length)
            s = s_prev + torch.cumsum(dt[:, :, t0:t1, None] * A[None, :, None, :], dim=2)
            y[:, :, t0:t1] += torch.einsum("bdln,bnl,bdn->bdl", torch.exp(s), C[:, :, t0:t1].float(), h0)
            s_prev = s[:, :, -1:]
        h_last = h_last.float() + torch.exp(s_prev[:, :, 0]) * h0
    if z is not None:
        y = y * F.silu(z.float())
    out = y.to(u.dtype)
    return (out, h_last.float()) if return_final_state else out


def _selective_scan_fn() -> Callable:
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    return selective_scan_fn


def _mamba_zero_state_scan(u, delta, A, B, C, D, delta_bias, delta_softplus):
    return _selective_scan_fn()(
        u, delta, A, B, C, D, None, delta_bias, delta_softplus, return_last_state=True
    )


def selective_scan_mamba_ssm(
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
    """mamba-ssm's `selective_scan_fn` plus the exact initial-state correction (CUDA only)."""
    validate_scan_args(u, delta, A, B, C, D, z, delta_bias, initial_state)
    if not u.is_cuda:
        raise ValueError(f"the mamba_ssm backend needs CUDA tensors, got tensors on {u.device}")
    if initial_state is None:
        # No state to add: the gate can stay fused in the kernel.
        return _selective_scan_fn()(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_final_state)
    return add_initial_state(
        _mamba_zero_state_scan, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
        initial_state, return_final_state,
    )  # fmt: skip
