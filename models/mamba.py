"""Mamba-1 block with a streaming step, weight-compatible with `mamba_ssm.Mamba`.

Parameter names and shapes are mamba-ssm's (`in_proj`, `conv1d`, `x_proj`, `dt_proj`, `A_log`, `D`,
`out_proj`), so a mamba-ssm state_dict loads with strict=True. Unlike mamba-ssm, `step` takes a block of
any length and carries the conv and SSM states across blocks, so any partition of a sequence gives the
one-pass output. The SSM state is always fp32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kernels import causal_conv1d, selective_scan

from .streaming import State, StreamingModule


class Mamba(StreamingModule):
    """x (batch, length, d_model) -> y (batch, length, d_model); state {"conv", "ssm"}."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        self.backend = backend
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        # mamba-ssm's initialisation: dt in [dt_min, dt_max] log-uniformly, A[d, n] = -(n + 1).
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner))

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        device = device if device is not None else self.A_log.device
        return {
            "conv": torch.zeros(batch, self.d_inner, self.d_conv - 1, device=device),
            "ssm": torch.zeros(batch, self.d_inner, self.d_state, device=device),
        }

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"Mamba expects (batch, length, {self.d_model}), got {tuple(x.shape)}")
        xz = self.in_proj(x).transpose(1, 2)  # (b, 2*d_inner, L)
        xs, z = xz.chunk(2, dim=1)
        xs, conv_state = causal_conv1d(
            xs, self.conv1d.weight.squeeze(1), self.conv1d.bias, state["conv"], activation="silu"
        )
        x_dbl = self.x_proj(xs.transpose(1, 2))  # (b, L, dt_rank + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # bias goes in as delta_bias
        y, ssm_state = selective_scan(
            xs,
            delta,
            -torch.exp(self.A_log.float()),
            B.transpose(1, 2),
            C.transpose(1, 2),
            self.D.float(),
            z,
            self.dt_proj.bias.float(),
            delta_softplus=True,
            initial_state=state["ssm"],
            return_final_state=True,
            backend=self.backend,
        )
        return self.out_proj(y.transpose(1, 2)), {"conv": conv_state, "ssm": ssm_state}
