"""`python -m models.train fit-level`: the rule's shape and offset come from the validation split."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
from test_band_level import SR, sloped_noise

from models.dsp.level import shape_db
from models.train.__main__ import main as train_main
from models.train.level_fit import fit_level


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Two readers, each with a loud and a quiet validation clip of slope-3 noise, and a test reader
    with a different slope that the fit must never read."""
    root = tmp_path_factory.mktemp("data")
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    for split, speaker, slope in (("train", "a", 3.0), ("train", "b", 3.0), ("test", "c", 0.0)):
        for i in range(11):  # every 10th clip by path is "valid": clips 00 and 10
            path = f"{split}/{speaker}/{i:02d}.wav"
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            gain = 2.5 if i % 2 else 0.25  # peaks of 0.5 and 0.05
            sf.write(root / path, gain * sloped_noise(0.5, slope, seed=i + 100 * ord(speaker)), SR)
            splits[split].append({"path": path, "speaker": speaker, "frames": SR // 2})
    (root / "manifest.json").write_text(json.dumps({"sample_rate": SR, "splits": splits}))
    return root


def test_the_fitted_shape_is_the_validation_spectrum_and_its_bias_is_zero(prepared):
    fit = fit_level(prepared, (8000, 16000), 0.9)
    assert fit.clips == {"a": 2, "b": 2}  # only the validation clips, never the test reader
    hz = np.array([2000.0, 4000.0, 8000.0, 16000.0])
    db = shape_db(fit.shape, hz)
    np.testing.assert_allclose(np.diff(db), -30 * math.log10(2), atol=0.5)  # slope 3: -9 dB per octave
    assert abs(fit.offset_db) < 1.0  # a noise's own shape needs (almost) no offset
    for by_source in fit.bias.values():
        for overall, bands in by_source.values():
            assert abs(overall) < 0.5 and max(abs(b) for b in bands) < 1.5


def test_fit_level_command_prints_the_config_and_writes_json(prepared, tmp_path, capsys):
    out = tmp_path / "fit.json"
    assert train_main(["fit-level", "--preset", "speech", "--data", str(prepared), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "level_shape=(" in printed and "level_offset_db=" in printed and "input 8000 Hz" in printed
    saved = json.loads(out.read_text())
    assert set(saved["bias"]) == {"8000", "12000", "16000", "24000"}
    assert len(saved["level_shape"]) >= 2


def test_fit_level_refuses_a_folder_without_a_validation_split(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"sample_rate": SR, "splits": {"train": []}}))
    with pytest.raises(ValueError, match="validation split holds no readable clips"):
        fit_level(tmp_path, (16000,), 0.9)
