"""OnnxStreamer streams in a process where torch cannot be imported, with the same output as here."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from test_export import TINY_BLOCK, TinyGenerator, run_onnx, run_torch, sweep_signal

from export.onnx import export_onnx
from export.runtime import OnnxStreamer

ROOT = Path(__file__).resolve().parents[1]

# Runs in the child: torch is made unimportable before anything of livesr is imported.
CHILD = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # `import torch` now raises ImportError
    import numpy as np
    from export.runtime import OnnxStreamer

    model, signal_file, out_file = sys.argv[1:4]
    try:
        import torch
    except ImportError:
        pass
    else:
        raise SystemExit("torch was importable")
    runner = OnnxStreamer(model, providers=["CPUExecutionProvider"])
    signal = np.load(signal_file)
    state = runner.init_state(signal.shape[0])
    out = []
    for i in range(signal.shape[1] // runner.block_size):
        y, state = runner.step(signal[:, i * runner.block_size : (i + 1) * runner.block_size], state)
        out.append(y)
    np.save(out_file, np.concatenate(out, axis=1))
    assert sys.modules["torch"] is None
    print("streamed", runner.block_size, runner.sample_rate, runner.latency)
    """
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[TinyGenerator, Path]:
    torch.manual_seed(1)
    model = TinyGenerator().eval()
    return model, export_onnx(model, tmp_path_factory.mktemp("no-torch") / "tiny.onnx", TINY_BLOCK)


def test_runtime_streams_without_torch(exported, tmp_path):
    model, path = exported
    signal = sweep_signal(model.sample_rate, 0.2, batch=2, seed=4)
    np.save(tmp_path / "signal.npy", signal)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(tmp_path / "signal.npy"), str(tmp_path / "out.npy")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["streamed", str(TINY_BLOCK), "16000", "0"]
    y_child = np.load(tmp_path / "out.npy")
    y_here, _ = run_onnx(OnnxStreamer(path, providers=["CPUExecutionProvider"]), signal)
    np.testing.assert_array_equal(y_child, y_here)
    y_torch, _ = run_torch(model, signal, TINY_BLOCK)
    assert np.abs(y_child - y_torch).max() <= 1e-5
