"""A torch generator behind the numpy step contract the host chain runs (`models.dsp.chain.Stepper`)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from models.traced import TracedStep

# Longest model block run as a traced graph. Measured on the speech preset, one core: a graph saves
# half the time of a 10 ms block and a tenth of a 100 ms one, while a trace takes ~0.5 s at 10 ms
# and ~7 s at 1 s (offline evaluation's blocks), which the saving never repays for a short file.
_TRACED_MAX_SECONDS = 0.05


class TorchStepper:
    """A torch `StreamingModule` generator behind the numpy step contract.

    The model is put in eval mode and moved to `device` ("cpu", or "cuda" where the kernels pick
    the Triton scan). States stay torch tensors on that device between steps. On the CPU the step
    of a `traceable` model runs as a TorchScript graph per block shape (`models.traced`: same
    numbers, about half the time); `traced=False` runs it eagerly.
    """

    block_size = None

    def __init__(self, model: Any, device: str = "cpu", traced: bool = True) -> None:
        torch.set_flush_denormal(True)  # silence must not slow the model down
        self.device = torch.device(device)
        self.model = _inference_copy(model).eval().to(self.device)
        self.config = getattr(model, "config", None)
        self.sample_rate = int(model.sample_rate)
        self.block_multiple = int(model.block_multiple)
        self.latency = int(model.latency)
        # The Triton scan is a kernel launch a tracer cannot record: CUDA runs eagerly, as does a
        # model whose step may branch on values (a graph would freeze one branch).
        if traced and getattr(self.model, "traceable", False) and self.device.type == "cpu":
            self._step = TracedStep(self.model, int(_TRACED_MAX_SECONDS * self.sample_rate))
        else:
            self._step = self.model.step

    def init_state(self, batch: int) -> dict[str, Any]:
        with torch.inference_mode():
            return self.model.init_state(batch, self.device)

    def with_state_values(self, state: dict[str, Any], values: dict[str, np.ndarray]) -> dict[str, Any]:
        """`state` with the named entries set to `values` (broadcast over the batch)."""
        return {
            **state,
            **{
                k: torch.as_tensor(v, device=self.device).expand_as(state[k]).clone()
                for k, v in values.items()
            },
        }

    def step(self, x: np.ndarray, state: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        with torch.inference_mode():
            y, new_state = self._step(torch.from_numpy(x).to(self.device), state)
        return y.to("cpu").numpy(), new_state

    @staticmethod
    def state_finite(state: dict[str, Any]) -> bool:
        """Whether every floating tensor of `state` is finite, with one sum over all of them (a
        per-tensor check costs two dispatches each, a few tenths of a millisecond per block): NaN or
        Inf anywhere makes the sum non-finite, and a state so large that its sum overflows float32
        counts as broken too."""
        tensors = [t.reshape(-1) for t in state.values() if t.is_floating_point()]
        return not tensors or bool(torch.cat(tensors).sum().isfinite())


def _inference_copy(model: Any) -> Any:
    """A private copy of `model` for streaming, with weight norm folded where the model has it.

    Folding (once, instead of recomputing the weights every block) renames parameters, so it must not
    touch the caller's model. A deepcopy would not do: it shares torch's generated parametrised module
    classes with the original, and folding edits those classes. A generator is rebuilt from its config.
    """
    if not hasattr(model, "remove_weight_norm"):
        return copy.deepcopy(model)
    clone = type(model)(model.config)
    clone.load_state_dict(model.state_dict())
    clone.preset = getattr(model, "preset", None)
    clone.remove_weight_norm()
    return clone
