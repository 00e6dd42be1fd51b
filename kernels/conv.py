"""Causal depthwise conv1d with a carried state (mamba's conv1d, one block at a time)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    conv_state: Tensor | None = None,
    activation: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Depthwise causal convolution of a block with the previous block's tail.

    x: (batch, dim, length); weight: (dim, width); bias: (dim,);
    conv_state: (batch, dim, width - 1), the last inputs before this block (zeros at the start).
    Returns (y (batch, dim, length), new conv_state (batch, dim, width - 1)).
    Splitting a sequence into blocks and carrying conv_state gives exactly the one-pass output.
    """
    if x.dim() != 3:
        raise ValueError(f"x must be (batch, dim, length), got shape {tuple(x.shape)}")
    batch, dim, length = x.shape
    if weight.dim() != 2 or weight.shape[0] != dim:
        raise ValueError(f"weight has shape {tuple(weight.shape)}, expected ({dim}, width)")
    width = weight.shape[1]
    if bias is not None and tuple(bias.shape) != (dim,):
        raise ValueError(f"bias has shape {tuple(bias.shape)}, expected ({dim},)")
    if conv_state is None:
        conv_state = x.new_zeros(batch, dim, width - 1)
    elif tuple(conv_state.shape) != (batch, dim, width - 1):
        raise ValueError(
            f"conv_state has shape {tuple(conv_state.shape)}, expected ({batch}, {dim}, {width - 1})"
        )
    if activation not in (None, "silu"):
        raise ValueError(f"activation must be None or 'silu', got {activation!r}")
    full = torch.cat([conv_state.to(x.dtype), x], dim=-1)
    if length == 0:  # nothing to convolve; the state is unchanged
        return x, conv_state
    # A sum of `width` shifted products: for the short blocks of streaming this costs a fraction of a
    # depthwise F.conv1d call (whose per-call setup dominates), and it is the same arithmetic.
    y = full[..., :length] * weight[:, :1]
    for k in range(1, width):
        y = torch.addcmul(y, full[..., k : k + length], weight[:, k : k + 1])
    if bias is not None:
        y = y + bias[:, None]
    if activation == "silu":
        y = F.silu(y)
    new_state = full[:, :, full.shape[-1] - (width - 1) :]
    return y, new_state
