"""The base install's runtime: the shipped presets run from their shipped ONNX graphs with torch
unimportable -- file mode, profile and the pedalboard effect -- and those graphs are the shipped weights."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from realtime.generators import WEIGHTS_DIR, shipped_graph

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "realtime" / "examples" / "speech_16k.wav"
PRESETS = ("speech", "music", "mambawave")

# Prepended to every child: `import torch` (and any torch submodule) raises ImportError, as on an
# install without the torch extra. (Setting sys.modules["torch"] = None would break scipy, which
# looks torch up in sys.modules.)
NO_TORCH = textwrap.dedent(
    """
    import sys

    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError("No module named 'torch'", name="torch")

    sys.meta_path.insert(0, _NoTorch())
    """
)


def run_without_torch(code: str, *args: str) -> subprocess.CompletedProcess:
    child = subprocess.run(
        [sys.executable, "-c", NO_TORCH + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    return child


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_ships_the_graph_of_its_shipped_weights(name):
    """`python -m export --shipped` regenerates these; a weights change without it fails here."""
    from export.cache import weights_hash
    from export.onnx import VERIFY_ATOL, verify_export
    from export.runtime import OnnxStreamer
    from models.registry import load_model

    graph = shipped_graph(name)
    assert graph == WEIGHTS_DIR / f"{name}.onnx" and graph.is_file()
    model = load_model(name)
    assert OnnxStreamer(graph).weights_hash == weights_hash(model)
    assert verify_export(model, graph) <= VERIFY_ATOL  # and it computes what the torch model does


def test_file_mode_and_profile_run_without_torch(tmp_path):
    code = """
        from realtime.cli import main
        from realtime.profile import main as profile_main
        out, report = sys.argv[1], sys.argv[2]
        assert main(["--input", sys.argv[3], "--output", out, "--model", "speech", "--backend", "onnx"]) == 0
        assert profile_main(["--model", "music", "--seconds", "0.5", "--json", report]) == 0
        assert "torch" not in sys.modules
    """
    child = run_without_torch(code, str(tmp_path / "out.wav"), str(tmp_path / "p.json"), str(EXAMPLE))
    y, rate = sf.read(tmp_path / "out.wav")
    x, _ = sf.read(EXAMPLE)
    assert rate == 48000 and y.size == 3 * x.size and np.isfinite(y).all()
    assert "wrote" in child.stderr
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["backend"] == "onnx" and "torch" not in report["machine"]


def test_the_file_output_without_torch_equals_the_torch_models(tmp_path):
    """The shipped graph and the torch model give the same file, to float32 rounding."""
    from realtime.cli import main

    run_without_torch(
        "from realtime.cli import main\nassert main(sys.argv[1:]) == 0",
        "--input",
        str(EXAMPLE),
        "--output",
        str(tmp_path / "graph.wav"),
    )
    assert main(["--input", str(EXAMPLE), "--output", str(tmp_path / "torch.wav"), "--backend", "torch"]) == 0
    by_graph, _ = sf.read(tmp_path / "graph.wav", dtype="float32")
    by_torch, _ = sf.read(tmp_path / "torch.wav", dtype="float32")
    assert np.abs(by_graph - by_torch).max() <= 2e-4  # both written as PCM_16: one step apart at most


def test_the_pedalboard_effect_runs_without_torch():
    pytest.importorskip("pedalboard")
    code = """
        import numpy as np
        from realtime.pedal import BandwidthExtender
        effect = BandwidthExtender("speech", input_cutoff_hz=8000.0)
        x = 0.1 * np.random.default_rng(0).standard_normal((1, 4800)).astype(np.float32)
        y = effect(x, 48000)
        assert y.shape == x.shape and np.isfinite(y).all()
        assert type(effect.model).__name__ == "OnnxStreamer" and "torch" not in sys.modules
    """
    run_without_torch(code)


def test_what_needs_torch_says_so_in_one_line(tmp_path):
    code = """
        from realtime.cli import main
        for extra in (["--backend", "torch"], ["--random-init"], ["--model-block", "960"]):
            assert main(["--input", sys.argv[1], "--output", sys.argv[2], *extra]) == 2
    """
    child = run_without_torch(code, str(EXAMPLE), str(tmp_path / "y.wav"))
    lines = [line for line in child.stderr.splitlines() if "error" in line]
    assert len(lines) == 3 and all("needs torch" in line and "livesr[torch]" in line for line in lines)
    assert not (tmp_path / "y.wav").exists()
