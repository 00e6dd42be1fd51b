"""Sequential fp32 selective scan: the oracle every backend is tested against.

Same layouts and semantics as mamba-ssm's `selective_scan_ref`, plus an initial state:

    delta' = softplus(delta + delta_bias) if delta_softplus else delta + delta_bias
    h_t = exp(delta'_t * A) * h_{t-1} + delta'_t * B_t * u_t        (h_0 = initial_state or 0)
    y_t = sum_n C_t[n] * h_t[:, n] + D * u_t ;  y_t *= silu(z_t)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def prepare_delta(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool) -> Tensor:
    """delta in fp32 with the bias added and softplus applied (threshold 20, as mamba-ssm)."""
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def finish_output(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    """Add the D skip and apply the silu(z) gate, then cast back to the input dtype."""
    if D is not None:
        y = y + u.float() * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(u.dtype)


def selective_scan_ref(
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
    """One time step at a time, in fp32, exactly as the recurrence is written above."""
    batch, dim, length = u.shape
    delta = prepare_delta(delta, delta_bias, delta_softplus)
    A = A.float()
    Bf, Cf, uf = B.float(), C.float(), u.float()
    h = (
        initial_state.float().clone()
        if initial_state is not None
        else u.new_zeros(batch, dim, A.shape[1], dtype=torch.float32)
    )
    delta_a = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    delta_b_u = torch.einsum("bdl,bnl,bdl->bdln", delta, Bf, uf)
    ys = []
    for t in range(length):
        h = delta_a[:, :, t] * h + delta_b_u[:, :, t]
        ys.append(torch.einsum("bdn,bn->bd", h, Cf[:, :, t]))
    y = torch.stack(ys, dim=2) if ys else u.new_zeros(batch, dim, 0, dtype=torch.float32)
    out = finish_output(y, u, D, z)
    return (out, h) if return_final_state else out
