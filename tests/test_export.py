"""ONNX export of the streaming step and the onnxruntime runner (export/onnx.py, export/runtime.py)."""

from __future__ import annotations

import math
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import Tensor, nn

from export.__main__ import main as export_main
from export.cache import cache_path, livesr_version, weights_hash
from export.onnx import (
    cached_export,
    default_block_size,
    export_onnx,
    scan_backend,
    state_specs,
    verify_export,
)
from export.runtime import OnnxStreamer, session_options
from models.mamba import Mamba
from models.streaming import State, StreamingModule, prefixed, substate, with_context

TINY_BLOCK = 48


class TinyGenerator(StreamingModule):
    """A small same-rate generator: causal conv in, Mamba along time, a Mamba per channel group, linear out.

    The grouped Mamba runs two rows per stream (like AEROMamba's one row per frequency bin), so its
    state has 2 x batch rows: the export must keep that axis dynamic too.
    """

    sample_rate = 16000
    block_multiple = 4
    latency = 0

    def __init__(self, width: int = 8, kernel: int = 5) -> None:
        super().__init__()
        self.width, self.kernel = width, kernel
        self.inp = nn.Conv1d(1, width, kernel)
        self.mamba = Mamba(width, d_state=8)
        self.rows = Mamba(width // 2, d_state=4)
        self.out = nn.Linear(width, 1)

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        return {
            "inp.ctx": torch.zeros(batch, 1, self.kernel - 1, device=device),
            **prefixed("mamba", self.mamba.init_state(batch, device)),
            **prefixed("rows", self.rows.init_state(2 * batch, device)),
        }

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        self.check_block(x.shape[-1])
        b, n = x.shape
        full, ctx = with_context(x.unsqueeze(1), state["inp.ctx"])
        h = torch.tanh(self.inp(full)).transpose(1, 2)  # (b, n, width)
        h, mamba_state = self.mamba.step(h, substate(state, "mamba"))
        g = h.reshape(b, n, 2, self.width // 2).transpose(1, 2).reshape(2 * b, n, self.width // 2)
        g, rows_state = self.rows.step(g, substate(state, "rows"))
        h = h + g.reshape(b, 2, n, self.width // 2).transpose(1, 2).reshape(b, n, self.width)
        y = x + 0.1 * self.out(h).squeeze(-1)
        return y, {"inp.ctx": ctx, **prefixed("mamba", mamba_state), **prefixed("rows", rows_state)}


def sweep_signal(rate: int, seconds: float, batch: int = 1, seed: int = 0) -> np.ndarray:
    """A log sweep 100 Hz -> rate/3 plus a little noise, one different phase per stream: (batch, n) float32."""
    n = int(rate * seconds)
    t = np.arange(n) / rate
    f0, f1 = 100.0, rate / 3
    phase = 2 * np.pi * f0 * seconds / math.log(f1 / f0) * ((f1 / f0) ** (t / seconds) - 1)
    rng = np.random.default_rng(seed)
    rows = [0.4 * np.sin(phase + k) + 0.02 * rng.standard_normal(n) for k in range(batch)]
    return np.stack(rows).astype(np.float32)


def run_onnx(runner: OnnxStreamer, signal: np.ndarray) -> tuple[np.ndarray, dict]:
    """Whole blocks of `signal` through the runner; returns the concatenated output and the last state."""
    block = runner.block_size
    state = runner.init_state(signal.shape[0])
    out = []
    for i in range(signal.shape[1] // block):
        y, state = runner.step(signal[:, i * block : (i + 1) * block], state)
        out.append(y)
    return np.concatenate(out, axis=1), state


def run_torch(model: StreamingModule, signal: np.ndarray, block: int) -> tuple[np.ndarray, State]:
    state = model.init_state(signal.shape[0])
    out = []
    with torch.no_grad():
        for i in range(signal.shape[1] // block):
            y, state = model.step(torch.from_numpy(signal[:, i * block : (i + 1) * block]), state)
            out.append(y.numpy())
    return np.concatenate(out, axis=1), state


@pytest.fixture(scope="module")
def tiny() -> StreamingModule:
    torch.manual_seed(0)
    model = TinyGenerator().eval()
    with torch.no_grad():  # a non-trivial SSM: A spread over a decade, D away from 1
        for m in (model.mamba, model.rows):
            m.A_log.add_(0.5 * torch.randn_like(m.A_log))
            m.D.mul_(0.5)
    return model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> os.PathLike:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def tiny_onnx(tiny, tiny_dir):
    return cached_export(tiny, TINY_BLOCK, directory=tiny_dir)


@pytest.fixture(scope="module")
def runner(tiny_onnx) -> OnnxStreamer:
    return OnnxStreamer(tiny_onnx, providers=["CPUExecutionProvider"])


def test_graph_passes_checker_and_names_io(tiny, tiny_onnx):
    proto = onnx.load(str(tiny_onnx))
    onnx.checker.check_model(proto, full_check=True)
    keys = list(tiny.init_state(1))
    assert [i.name for i in proto.graph.input] == ["audio", *keys]
    assert [o.name for o in proto.graph.output] == ["audio_out", *(f"next.{k}" for k in keys)]
    audio = proto.graph.input[0].type.tensor_type.shape.dim
    assert audio[0].dim_param and audio[1].dim_value == TINY_BLOCK  # dynamic batch, fixed block


def test_metadata_round_trip(tiny, runner):
    assert runner.sample_rate == runner.input_sample_rate == tiny.sample_rate
    assert (runner.block_multiple, runner.latency, runner.block_size) == (4, 0, TINY_BLOCK)
    assert runner.preset == "TinyGenerator"
    assert runner.weights_hash == weights_hash(tiny)
    assert runner.metadata["livesr_version"] == livesr_version()
    for batch in (1, 3):
        expected = {k: tuple(v.shape) for k, v in tiny.init_state(batch).items()}
        assert runner.state_shapes(batch) == expected
        assert {k: v.shape for k, v in runner.init_state(batch).items()} == expected
    assert [(s.name, s.batch_axis) for s in state_specs(tiny)][-1] == ("rows.ssm", 0)
    assert runner.providers_in_use == ["CPUExecutionProvider"]


def test_onnx_equals_torch_streaming(tiny, runner):
    signal = sweep_signal(tiny.sample_rate, 0.3)  # 100 blocks
    y_onnx, s_onnx = run_onnx(runner, signal)
    y_torch, s_torch = run_torch(tiny, signal, TINY_BLOCK)
    assert np.abs(y_onnx - y_torch).max() <= 1e-5
    for k, v in s_torch.items():
        assert np.abs(s_onnx[k] - v.numpy()).max() <= 1e-5, k
    assert np.abs(y_onnx - signal[:, : y_onnx.shape[1]]).max() > 1e-3  # the model does change the signal


def test_streaming_in_onnxruntime_equals_torch_offline(tiny, runner):
    signal = sweep_signal(tiny.sample_rate, 0.3, seed=1)
    y_onnx, _ = run_onnx(runner, signal)
    with torch.no_grad():
        y_offline = tiny(torch.from_numpy(signal[:, : y_onnx.shape[1]])).numpy()
    assert np.abs(y_onnx - y_offline).max() <= 1e-5


def test_impulse_response_is_causal_and_matches_torch(tiny, runner):
    at = 3 * TINY_BLOCK + 5
    impulse = np.zeros((1, 20 * TINY_BLOCK), np.float32)
    impulse[0, at] = 1.0
    y_onnx, _ = run_onnx(runner, impulse)
    y_silence, _ = run_onnx(runner, np.zeros_like(impulse))  # biases: silence maps to a non-zero offset
    y_torch, _ = run_torch(tiny, impulse, TINY_BLOCK)
    assert np.array_equal(y_onnx[0, :at], y_silence[0, :at])  # nothing before the impulse
    assert np.abs(y_onnx[0, at + 1 :] - y_silence[0, at + 1 :]).max() > 1e-4  # a recurrent tail after it
    assert np.abs(y_onnx - y_torch).max() <= 1e-5


def test_two_streams_at_once_equal_two_single_runs(runner):
    signal = sweep_signal(16000, 0.12, batch=2, seed=2)
    both, state = run_onnx(runner, signal)
    for i in range(2):
        alone, alone_state = run_onnx(runner, signal[i : i + 1])
        assert np.abs(both[i] - alone[0]).max() <= 1e-6
        for spec in runner.state_specs:  # rows of stream i: a contiguous slice of the batch axis
            rows = spec.shape[spec.batch_axis]
            part = np.take(state[spec.name], range(i * rows, (i + 1) * rows), axis=spec.batch_axis)
            assert np.abs(part - alone_state[spec.name]).max() <= 1e-6, spec.name


def test_step_leaves_the_given_state_untouched(runner):
    state = runner.init_state(1)
    x = sweep_signal(16000, TINY_BLOCK / 16000)
    _, state = runner.step(x, state)
    before = {k: v.copy() for k, v in state.items()}
    y1, _ = runner.step(x, state)
    y2, _ = runner.step(x, state)  # same state again: same output
    assert all(np.array_equal(before[k], state[k]) for k in state)
    assert np.array_equal(y1, y2)


def test_session_flushes_denormals_to_zero():
    half = onnx.helper.make_tensor("half", onnx.TensorProto.FLOAT, [1], [0.5])
    io = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [4]) for n in ("x", "y")]
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Mul", ["x", "half"], ["y"])], "g", io[:1], io[1:], [half]
    )
    model = onnx.helper.make_model(graph, ir_version=10, opset_imports=[onnx.helper.make_opsetid("", 18)])
    tiny_normal = np.full(4, 1e-38, np.float32)  # x 0.5 = 5e-39: a denormal unless flushed
    session = ort.InferenceSession(
        model.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"]
    )
    assert np.array_equal(session.run(None, {"x": tiny_normal})[0], np.zeros(4, np.float32))


def test_bad_inputs_raise_clear_errors(runner):
    state = runner.init_state(1)
    with pytest.raises(ValueError, match=f"expected \\(1, {TINY_BLOCK}\\)"):
        runner.step(np.zeros((1, TINY_BLOCK + 4), np.float32), state)
    with pytest.raises(ValueError, match="float32 array"):
        runner.step(np.zeros(TINY_BLOCK, np.float32), state)
    wrong = dict(state, **{"mamba.ssm": np.zeros((1, 16, 7), np.float32)})
    with pytest.raises(
        ValueError, match=r"state\['mamba.ssm'\] has shape \(1, 16, 7\), expected \(1, 16, 8\)"
    ):
        runner.step(np.zeros((1, TINY_BLOCK), np.float32), wrong)
    with pytest.raises(ValueError, match=r"expected \(2, 1, 4\) for batch 2"):  # 1-stream state, 2 streams in
        runner.step(np.zeros((2, TINY_BLOCK), np.float32), state)
    missing = {k: v for k, v in state.items() if k != "inp.ctx"}
    with pytest.raises(ValueError, match=r"missing \['inp.ctx'\]"):
        runner.step(np.zeros((1, TINY_BLOCK), np.float32), missing)
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        runner.init_state(0)


def test_bad_files_raise_clear_errors(tmp_path, tiny_onnx):
    with pytest.raises(FileNotFoundError, match="not found"):
        OnnxStreamer(tmp_path / "absent.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(tiny_onnx.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        OnnxStreamer(corrupt)
    plain = tmp_path / "plain.onnx"
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n"])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n"])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    opset = [onnx.helper.make_opsetid("", 18)]
    onnx.save(onnx.helper.make_model(graph, ir_version=10, opset_imports=opset), str(plain))
    with pytest.raises(ValueError, match="no livesr metadata"):
        OnnxStreamer(plain)
    with pytest.raises(ValueError, match="threads"):
        OnnxStreamer(tiny_onnx, threads=0)
    with pytest.raises(ValueError, match="not available"):
        OnnxStreamer(tiny_onnx, providers=["NoSuchExecutionProvider"])


def test_export_rejects_bad_block_and_backend(tiny, tmp_path):
    with pytest.raises(ValueError, match="multiple of 4"):
        export_onnx(tiny, tmp_path / "x.onnx", block_size=50)
    with pytest.raises(ValueError, match="backend"):
        export_onnx(tiny, tmp_path / "x.onnx", backend="triton")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_verify_export_compares_with_torch(tiny, tiny_onnx):
    assert verify_export(tiny, tiny_onnx) <= 1e-5
    other = TinyGenerator().eval()  # different weights: the check must see it
    assert verify_export(other, tiny_onnx) > 1e-3


def test_scan_backend_is_restored(tiny):
    mambas = [tiny.mamba, tiny.rows]
    before = [m.backend for m in mambas]
    with scan_backend(tiny, "reference"):
        assert [m.backend for m in mambas] == ["reference"] * 2
    assert [m.backend for m in mambas] == before


def test_cli_errors_name_the_fix(tmp_path, capsys):
    assert export_main(["--model", "no-such-preset", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "unknown model 'no-such-preset'" in capsys.readouterr().err
    registry = pytest.importorskip("models.registry")
    if not (registry.WEIGHTS_DIR / "speech.safetensors").exists():
        assert export_main(["--model", "speech", "--out", str(tmp_path / "x.onnx")]) == 2
        assert "--random-init" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cached_export_reuses_the_file(tiny, tiny_dir, tiny_onnx):
    stamp = tiny_onnx.stat().st_mtime_ns
    again = cached_export(tiny, TINY_BLOCK, directory=tiny_dir)
    assert again == tiny_onnx and again.stat().st_mtime_ns == stamp
    assert [p.name for p in tiny_dir.iterdir()] == [tiny_onnx.name]  # no temporary files left
    assert cache_path(tiny, 2 * TINY_BLOCK, tiny_dir) != tiny_onnx
    assert str(tiny_onnx).endswith(f"-b{TINY_BLOCK}-v{livesr_version()}.onnx")


def test_weights_hash_follows_the_weights(tiny):
    other = TinyGenerator()
    other.load_state_dict(tiny.state_dict())
    assert weights_hash(other) == weights_hash(tiny)
    with torch.no_grad():
        other.out.bias.add_(1e-6)
    assert weights_hash(other) != weights_hash(tiny)


def test_cache_dir_follows_the_environment(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("LIVESR_CACHE", str(tmp_path))
    assert cache_path(tiny, TINY_BLOCK).parent == tmp_path / "onnx"


def test_default_block_is_about_10_ms(tiny):
    assert default_block_size(tiny) == 160
    assert default_block_size(type("M", (), {"sample_rate": 48000, "block_multiple": 16})) == 480
    assert default_block_size(type("M", (), {"sample_rate": 44100, "block_multiple": 256})) == 512


LEVEL_SHAPE = ((1000.0, 0.0), (6000.0, -14.0), (19000.0, -40.0))  # not a preset's: the graph must carry it


# The shipped presets, randomly initialised; exporting one takes 10-20 s, so only speech runs by default.
@pytest.fixture(scope="module", params=["speech", pytest.param("music", marks=pytest.mark.slow)])
def preset(request, tmp_path_factory):
    registry = pytest.importorskip("models.registry")
    torch.manual_seed(0)
    model = registry.with_config(
        registry.load_model(request.param, pretrained=False), level_shape=LEVEL_SHAPE, level_offset_db=-1.5
    )
    path = export_onnx(model, tmp_path_factory.mktemp(request.param) / f"{request.param}.onnx")
    return model, OnnxStreamer(path, providers=["CPUExecutionProvider"])


@pytest.mark.slow
def test_preset_onnx_equals_torch_over_5_seconds(preset):
    model, runner = preset
    assert runner.block_size == default_block_size(model)
    assert (runner.sample_rate, runner.latency) == (model.sample_rate, model.latency)
    signal = sweep_signal(model.sample_rate, 5.0)
    y_onnx, _ = run_onnx(runner, signal)
    y_torch, _ = run_torch(model, signal, runner.block_size)
    assert np.abs(y_onnx - y_torch).max() <= 1e-4


def test_preset_graph_carries_the_band_level_for_the_host(preset):
    """A host with only the graph sets the same band level as with the torch model, and both paths
    play the same new band from it."""
    from models.dsp.level import level_state
    from realtime.processor import Processor

    model, runner = preset
    assert runner.config.level_offset_db == model.config.level_offset_db == -1.5
    assert model.config.level_shape == LEVEL_SHAPE
    for key, value in level_state(model.config, 8000.0, 7200.0).items():
        np.testing.assert_array_equal(level_state(runner.config, 8000.0, 7200.0)[key], value)
    x = 0.1 * np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    by_graph = Processor(runner, 16000).process(x)
    by_torch = Processor(model, 16000, backend="torch").process(x)
    assert np.abs(by_graph).max() > 0
    np.testing.assert_allclose(by_graph, by_torch, atol=1e-4)


def test_preset_streaming_in_onnxruntime_equals_offline_and_batches(preset):
    model, runner = preset
    signal = sweep_signal(model.sample_rate, 0.5, batch=2, seed=3)
    both, _ = run_onnx(runner, signal)
    with torch.no_grad():
        offline = model(torch.from_numpy(signal[:, : both.shape[1]])).numpy()
    assert np.abs(both - offline).max() <= 1e-4
    for i in range(2):
        alone, _ = run_onnx(runner, signal[i : i + 1])
        assert np.abs(both[i] - alone[0]).max() <= 1e-6
