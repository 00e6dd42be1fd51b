"""Traced steps: the TorchScript graph of a generator's step gives the eager step's numbers, block
after block, for every block shape; anything the tracer cannot record exactly runs eagerly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.dsp.level import level_state
from models.registry import load_model
from models.stepper import TorchStepper
from models.streaming import State, StreamingModule
from models.traced import TracedStep
from realtime.processor import Processor


def _blocks(shapes: list[tuple[int, int]], seed: int = 0) -> list[torch.Tensor]:
    """Noisy tones, silence and a loud burst: different enough to take any value-dependent branch."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i, shape in enumerate(shapes):
        if i % 3 == 0:
            t = torch.arange(shape[1]) / 48000
            out.append(
                0.3 * torch.sin(2 * torch.pi * (300 + 700 * i) * t) + 0.05 * torch.randn(shape, generator=gen)
            )
        elif i % 3 == 1:
            out.append(torch.zeros(shape))
        else:
            out.append((0.9 * torch.randn(shape, generator=gen)).clamp(-1, 1))
    return out


@pytest.mark.parametrize(("name", "lengths"), [("speech", (480, 160)), ("music", (512, 256))])
def test_trained_presets_traced_equal_eager(name, lengths):
    model = load_model(name).eval()
    traced = TracedStep(model)
    state = model.init_state(2)
    # The host's band level travels in the state: graph inputs too.
    level = level_state(model.config, 8000.0, 7200.0)
    assert level
    state.update({k: torch.as_tensor(v).expand_as(state[k]).clone() for k, v in level.items()})
    eager_state = dict(state)
    shapes = [(2, lengths[i % 2]) for i in range(8)]
    with torch.inference_mode():
        for x in _blocks(shapes):
            y, state = traced(x, state)
            y_ref, eager_state = model.step(x, eager_state)
            torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-5)
            assert state.keys() == eager_state.keys()
            for key in state:
                torch.testing.assert_close(state[key], eager_state[key], rtol=0, atol=1e-5)
    # Both shapes ran as graphs (the first block of each shape is the eager reference).
    assert traced.eager_shapes == []
    assert sorted(traced._graphs) == sorted({(2, n) for n in lengths})


class _NoisyStep(StreamingModule):
    """Claims to be traceable but draws fresh randomness every step: no graph can reproduce it."""

    traceable = True

    def init_state(self, batch: int, device=None) -> State:
        return {"n": torch.zeros(batch, 1)}

    def step(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        return x + torch.rand(()), {"n": state["n"] + 1}


def test_a_trace_that_disagrees_runs_eagerly_with_a_warning():
    model = _NoisyStep()
    traced = TracedStep(model)
    x, state = torch.zeros(1, 16), model.init_state(1)
    with torch.inference_mode(), pytest.warns(UserWarning, match="disagrees with the eager one"):
        traced(x, state)
    assert traced.eager_shapes == [(1, 16)]
    with torch.inference_mode():
        y1, _ = traced(x, state)
        y2, _ = traced(x, state)
    assert not torch.equal(y1, y2)  # eager: a fresh draw every call, not one frozen into a graph


def test_a_failed_trace_runs_eagerly_with_a_warning(monkeypatch):
    model = load_model("speech", pretrained=False).eval()

    def broken_trace(*args, **kwargs):
        raise RuntimeError("tracer unavailable")

    monkeypatch.setattr(torch.jit, "trace", broken_trace)
    traced = TracedStep(model)
    x, state = torch.zeros(1, 480), model.init_state(1)
    with torch.inference_mode(), pytest.warns(UserWarning, match="could not trace.*tracer unavailable"):
        y, new_state = traced(x, state)
    with torch.inference_mode():
        y_ref, _ = model.step(x, state)
        y_again, _ = traced(x, state)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(y_again, y_ref, rtol=0, atol=0)
    assert traced.eager_shapes == [(1, 480)]


def test_torch_stepper_runs_traceable_models_as_graphs_only():
    speech = load_model("speech", pretrained=False)
    stepper, eager = TorchStepper(speech), TorchStepper(speech, traced=False)
    assert isinstance(stepper._step, TracedStep) and not isinstance(eager._step, TracedStep)
    x = np.random.default_rng(0).standard_normal((1, 480)).astype(np.float32) * 0.1
    state, eager_state = stepper.init_state(1), eager.init_state(1)
    for _ in range(3):
        y, state = stepper.step(x, state)
        y_ref, eager_state = eager.step(x, eager_state)
        np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-5)
    assert stepper._step.eager_shapes == [] and stepper._step._graphs

    # A module that does not declare `traceable` may branch on values: it always runs eagerly.
    untraceable = _NoisyStep()
    untraceable.traceable = False
    untraceable.sample_rate = 48000
    assert not isinstance(TorchStepper(untraceable)._step, TracedStep)


def test_blocks_over_the_limit_run_eagerly_without_a_trace():
    model = load_model("speech", pretrained=False).eval()
    traced = TracedStep(model, max_samples=160)
    with torch.inference_mode():
        long_block, state = torch.zeros(1, 480), model.init_state(1)
        y, _ = traced(long_block, state)
        torch.testing.assert_close(y, model.step(long_block, state)[0], rtol=0, atol=0)
        assert traced._graphs == {}
        traced(torch.zeros(1, 160), state)
    assert list(traced._graphs) == [(1, 160)] and traced.eager_shapes == []


def test_a_processor_traces_when_it_is_built_not_in_the_first_live_block():
    proc = Processor(load_model("speech", pretrained=False), 16000, 48000, backend="torch", channels=2)
    assert list(proc.stepper._step._graphs) == [(2, proc.model_block)]
    assert proc.stepper._step.eager_shapes == []
