"""Small real streaming models for the host tests: exact, cheap, and easy to tell apart from the input."""

from __future__ import annotations

import torch
from torch import Tensor

from models.streaming import State, StreamingModule, with_context


class DelayGain(StreamingModule):
    """y[t] = gain * x[t - delay]: a model whose output is a known scaled copy of its input.

    With `latency = delay` the processor's dry path lines up with it exactly, so wet == gain * dry
    sample for sample: any misalignment between the two paths shows up as a mismatch.
    """

    def __init__(
        self, sample_rate: int = 48000, delay: int = 7, gain: float = 0.5, block_multiple: int = 1
    ) -> None:
        super().__init__()
        self.sample_rate, self.latency, self.block_multiple = sample_rate, delay, block_multiple
        self.gain = gain

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        return {"ctx": torch.zeros(batch, self.latency, device=device)}

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        self.check_block(x.shape[-1])
        full, ctx = with_context(x, state["ctx"])
        return self.gain * full[..., : x.shape[-1]], {"ctx": ctx}


def save_tiny_generator(folder) -> str:
    """A tiny random causal Wave-U-Mamba saved as weights + JSON config; returns the .safetensors path.

    Cheap enough to run live on a loaded 2-core machine, and its random `tanh` correction is broadband,
    so a band-limited input comes out with a high band it did not have.
    """
    from pathlib import Path

    from models.registry import save_model
    from models.wave_u_mamba import WaveUMamba, WaveUMambaConfig

    torch.manual_seed(0)
    config = WaveUMambaConfig(
        channels=(4,), final_channels=4, down_mambas=(0,), bottleneck_mambas=1, up_kernels=(4,), up_mambas=(0,),
        d_state=4, expand=1, causal=True, resblock_dilations=(1,),
    )  # fmt: skip
    return str(save_model(WaveUMamba(config), Path(folder) / "tiny.safetensors", preset="tiny-test"))
