"""The new band's level on the torch side: `BandLevel` streams the rule of `models.dsp.level` (which
owns the rule and its numpy host-side constants), `correction_gain` bounds the generator's correction,
`batch_level_state` gives a training batch its per-example rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .dsp.level import analysis_filters, level_state
from .streaming import State, StreamingModule, with_context

CORRECTION_DB = 18.0  # the generator may move each band's level at most this far from the rule


def batch_level_state(
    config: Any,
    band_edges_hz: Sequence[float],
    crossover_ratio: float,
    device: torch.device | str | None = None,
) -> State:
    """`level_state` for a batch of streams, one band edge each (crossover at `crossover_ratio` times
    it), stacked on the batch axis as tensors."""
    rows = [level_state(config, float(e), crossover_ratio * float(e)) for e in band_edges_hz]
    if not rows or not rows[0]:
        return {}
    return {k: torch.tensor(np.stack([r[k] for r in rows]), device=device) for k in rows[0]}


def correction_gain(logits: Tensor) -> Tensor:
    """Amplitude factor of a bounded level correction: 10^(CORRECTION_DB * tanh(logits) / 20)."""
    return torch.exp(torch.tanh(logits) * (CORRECTION_DB * math.log(10.0) / 20.0))


class BandLevel(StreamingModule):
    """(batch, samples) input -> (batch, bands, samples // hop): each excitation band's amplitude
    under the rule, one frame per `hop` samples (frame m ends at sample (m + 1) * hop - 1).

    State: "ctx", the last `window - hop` input samples; "top" (batch, K) and "rule" (batch, bands),
    the host's values from `level_state` (zero: silent)."""

    def __init__(self, bands: int, sample_rate: int, hop: int, window: int) -> None:
        super().__init__()
        if hop < 1 or window < hop:
            raise ValueError(f"need 1 <= hop <= window, got hop={hop}, window={window}")
        self.bands, self.hop, self.window = bands, hop, window
        self.block_multiple = hop
        filters = torch.from_numpy(analysis_filters(sample_rate, window))
        self.register_buffer("filters", filters, persistent=False)
        self.analysis = filters.shape[0] // 2

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        device = device if device is not None else self.filters.device
        return {
            "ctx": torch.zeros(batch, 1, self.window - self.hop, device=device),
            "top": torch.zeros(batch, self.analysis, device=device),
            "rule": torch.zeros(batch, self.bands, device=device),
        }

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        full, ctx = with_context(x.unsqueeze(1), state["ctx"])
        z = F.conv1d(full, self.filters, stride=self.hop)  # (batch, 2 K, frames)
        re, im = z[:, : self.analysis], z[:, self.analysis :]
        top = torch.einsum("bk,bkf->bf", state["top"], re * re + im * im)  # (batch, frames)
        power = state["rule"][:, :, None] * top[:, None, :]
        return torch.sqrt(power + 1e-20), {"ctx": ctx, "top": state["top"], "rule": state["rule"]}
