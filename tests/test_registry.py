"""Presets build, weights round-trip through safetensors + JSON, and bad files give clear errors."""

import json

import pytest
import torch

from models.registry import PRESETS, WeightsError, WeightsNotFoundError, load_model, save_model


@pytest.fixture(scope="module")
def speech():
    torch.manual_seed(0)
    return load_model("speech", pretrained=False)


def test_every_preset_builds_with_its_config_reachable():
    for name in PRESETS:
        m = load_model(name, pretrained=False)
        assert m.preset == name
        assert m.sample_rate in (44100, 48000)
        assert m.block_multiple >= 1 and m.latency >= 0
        assert isinstance(m.config.to_dict(), dict)


def test_round_trip_gives_identical_output(tmp_path, speech):
    path = save_model(speech, tmp_path / "mine", note="test")
    cfg = json.loads(path.with_suffix(".json").read_text())
    assert cfg["preset"] == "speech" and cfg["note"] == "test" and cfg["latency"] == speech.latency
    loaded = load_model(path)
    x = torch.randn(1, 16 * speech.block_multiple)
    with torch.no_grad():
        assert torch.equal(loaded(x), speech(x))


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown model 'nope'; presets: speech"):
        load_model("nope")


def test_missing_file(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="not found"):
        load_model(tmp_path / "absent.safetensors")


def test_pickle_is_never_opened(tmp_path):
    p = tmp_path / "w.pt"
    p.write_bytes(b"whatever")
    with pytest.raises(WeightsError, match="only .safetensors"):
        load_model(p)


def test_corrupt_weights(tmp_path, speech):
    path = save_model(speech, tmp_path / "c")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_model(path)


def test_corrupt_config(tmp_path, speech):
    path = save_model(speech, tmp_path / "j")
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(WeightsError, match="not valid JSON"):
        load_model(path)


def test_shape_mismatch_names_the_tensor(tmp_path, speech):
    from safetensors.torch import load_file, save_file

    path = save_model(speech, tmp_path / "s")
    tensors = load_file(str(path))
    key = next(iter(tensors))
    tensors[key] = torch.zeros(*[s + 1 for s in tensors[key].shape])
    save_file(tensors, str(path))
    with pytest.raises(WeightsError, match=f"{key} has shape"):
        load_model(path)


def test_non_finite_weights_are_refused(tmp_path, speech):
    from safetensors.torch import load_file, save_file

    path = save_model(speech, tmp_path / "n")
    tensors = load_file(str(path))
    key = next(iter(tensors))
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    save_file(tensors, str(path))
    with pytest.raises(WeightsError, match="NaN or Inf"):
        load_model(path)
