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


def _too_loud(tmp_path):
    """An untrained speech generator whose rule is the data's slope-3 shape but 6 dB too loud, saved
    with a training record."""
    from test_band_level import _zero_correction

    from models.registry import save_model, with_config

    model = with_config(_zero_correction("speech", slope=3.0), level_offset_db=6.0)
    return save_model(model, tmp_path / "loud.safetensors", training={"steps": 7})


def test_calibration_centres_the_validation_bias(prepared, tmp_path):
    from models.evaluate import evaluate, list_files, model_runner
    from models.registry import load_model
    from models.train.level_calibrate import calibrate_level

    model = load_model(_too_loud(tmp_path))
    calibrated, found = calibrate_level(model, prepared, (16000, 8000), progress=False)
    assert found.sources == 2 and found.clip_rate_pairs == 2 * 4  # a and b's validation clips, not c's
    assert all(4.5 < b < 7.5 for b in found.source_mean_bias_db.values())
    assert found.offset_after_db == calibrated.config.level_offset_db
    assert abs(found.offset_after_db - (6.0 - np.mean(list(found.source_mean_bias_db.values())))) < 0.01
    # The rule owns an untrained band: one move centres it, and the second scoring confirms that.
    assert len(found.passes) == 2 and abs(found.passes[1][1]) < 0.5 and 0.9 < found.response < 1.1
    files = list_files(prepared, "valid")
    again = evaluate(files, 48000, (16000, 8000), model_runner(calibrated), False, progress=False)
    centred = np.mean(
        [again.table(s)[r]["model"]["level_bias"] for s in again.sources() for r in (16000, 8000)]
    )
    assert abs(centred) < 0.3


def test_calibrate_level_command_keeps_the_record_and_the_original(prepared, tmp_path, capsys):
    source = _too_loud(tmp_path)
    out = tmp_path / "calibrated.safetensors"
    args = ["calibrate-level", "--model", str(source), "--data", str(prepared), "--rates", "16000"]
    assert train_main([*args, "--out", str(out)]) == 0
    assert "level_offset_db 6 ->" in capsys.readouterr().out
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["training"] == {"steps": 7} and "calibrate-level" in saved["calibration"]["command"]
    assert saved["config"]["level_offset_db"] == saved["calibration"]["offset_after_db"] < 3.0
    assert json.loads(source.with_suffix(".json").read_text())["config"]["level_offset_db"] == 6.0
    assert train_main([*args, "--out", str(source)]) == 2
    assert "must differ" in capsys.readouterr().err


def test_calibration_follows_the_measured_response_and_refuses_a_band_the_rule_does_not_own():
    from models.train.level_calibrate import LevelNotOwned, next_offset, response_of

    assert next_offset([(-2.0, 4.0)]) == -6.0 and response_of([(-2.0, 4.0)]) is None  # first: dB for dB
    passes = [(-2.0, 4.0), (-6.0, 2.0)]  # half of it came through
    response, offset = response_of(passes), next_offset(passes)
    assert response == pytest.approx(0.5) and offset == pytest.approx(-10.0)
    with pytest.raises(LevelNotOwned, match="0.20 dB per dB"):
        next_offset([(-2.0, 5.0), (-7.0, 4.0)])
    with pytest.raises(LevelNotOwned):  # the band moved the wrong way
        next_offset([(-2.0, 5.0), (-7.0, 6.0)])
