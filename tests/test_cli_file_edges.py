"""`python -m realtime --input/--output`: the rough edges of file mode (odd inputs, unsafe outputs, the summary)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from _realtime_models import DelayGain

import realtime.cli as cli
from realtime.cli import NO_DEVICES, format_file_summary, main, process_file
from realtime.processor import Processor


def one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("python -m realtime: error: ")
    return err


def preset(name: str) -> list[str]:
    """CLI arguments running a shipped preset on the torch backend (random weights if none ship)."""
    from models.registry import WEIGHTS_DIR

    trained = (WEIGHTS_DIR / f"{name}.safetensors").exists()
    return ["--model", name, "--backend", "torch"] + ([] if trained else ["--random-init"])


def tone(n: int = 4000, rate: int = 16000) -> np.ndarray:
    t = np.arange(n) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3100 * t)).astype(np.float32)


@pytest.fixture
def wav16k(tmp_path) -> Path:
    """0.25 s at 16 kHz, float WAV."""
    path = tmp_path / "in.wav"
    sf.write(path, tone(), 16000, subtype="FLOAT")
    return path


NO_MODEL = ["--model", "/no/such/model.safetensors", "--backend", "torch"]  # loading it would fail


# ---- 1. input subtypes the output cannot take ---------------------------------------------------------
@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_an_mp3_input_converts_to_wav_and_flac(tmp_path, suffix, capsys):
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile cannot write MP3")
    src, dst = tmp_path / "in.mp3", tmp_path / f"out{suffix}"
    sf.write(src, tone(), 16000, format="MP3")
    assert sf.info(src).subtype == "MPEG_LAYER_III"
    assert main(["--input", str(src), "--output", str(dst)] + preset("speech")) == 0
    assert "Traceback" not in capsys.readouterr().err
    info = sf.info(dst)
    assert (info.samplerate, info.channels) == (48000, 1)
    assert info.subtype == sf.default_subtype(suffix[1:].upper()) == "PCM_16"
    assert info.frames == 3 * sf.info(src).frames
    assert np.isfinite(sf.read(dst, dtype="float32")[0]).all()


def test_the_output_subtype_is_copied_only_when_plain_and_accepted():
    assert cli.output_subtype("WAV", "PCM_24") == "PCM_24"
    assert cli.output_subtype("FLAC", "FLOAT") == "PCM_16"  # FLAC holds no float samples
    assert cli.output_subtype("WAV", "MPEG_LAYER_III") == "PCM_16"
    assert cli.output_subtype("WAV", "VORBIS") == "PCM_16"
    assert cli.output_subtype("OGG", "PCM_16") == "VORBIS"


# ---- 2. no audio devices ----------------------------------------------------------------------------------
def test_list_devices_with_no_devices_says_so(monkeypatch, capsys):
    sd = pytest.importorskip("sounddevice")
    for empty in ([], sd.DeviceList()):
        monkeypatch.setattr(cli, "_sd", lambda empty=empty: SimpleNamespace(query_devices=lambda: empty))
        assert main(["--list-devices"]) == 0
        out = capsys.readouterr().out
        assert out == NO_DEVICES + "\n" and out.startswith("no audio devices found")


# ---- 3. NaN/Inf input samples -----------------------------------------------------------------------------
def test_nonfinite_input_samples_become_zero_one_by_one(tmp_path, capsys):
    x = tone()
    bad = {101: np.nan, 1502: np.inf, 1503: -np.inf, 2600: np.nan, 3999: np.inf}
    dirty = x.copy()
    clean = x.copy()
    for i, v in bad.items():
        dirty[i] = v
        clean[i] = 0.0
    sf.write(tmp_path / "dirty.wav", dirty, 16000, subtype="FLOAT")
    sf.write(tmp_path / "clean.wav", clean, 16000, subtype="FLOAT")
    outputs = {}
    for name in ("dirty", "clean"):
        summary = tmp_path / f"{name}.json"
        argv = ["--input", str(tmp_path / f"{name}.wav"), "--output", str(tmp_path / f"{name}-out.wav")]
        assert main(argv + preset("speech") + ["--summary-json", str(summary)]) == 0
        outputs[name] = json.loads(summary.read_text())
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("wrote ")]
        assert len(lines) == 1
        assert f"; {len(bad) if name == 'dirty' else 0} non-finite samples replaced;" in lines[0]
    assert outputs["dirty"]["nonfinite_samples"] == len(bad)
    assert outputs["clean"]["nonfinite_samples"] == 0
    assert outputs["dirty"]["processor_stats"]["bad_blocks"] == 0  # no block was silenced
    y, _ = sf.read(tmp_path / "dirty-out.wav", dtype="float32")
    y0, _ = sf.read(tmp_path / "clean-out.wav", dtype="float32")
    assert np.isfinite(y).all() and len(y) == 3 * len(x)
    np.testing.assert_allclose(y, y0, atol=1e-6, rtol=0)


def test_nonfinite_samples_are_counted_per_channel(tmp_path):
    x = np.zeros((2000, 2), np.float32)
    x[10, 0] = x[10, 1] = np.nan
    x[20, 1] = np.inf
    sf.write(tmp_path / "st.wav", x, 16000, subtype="FLOAT")
    result = process_file(
        lambda rate, ch: Processor(DelayGain(48000, 5, 0.5), rate, 48000, backend="torch", channels=ch),
        tmp_path / "st.wav",
        tmp_path / "st-out.wav",
        show_bar=False,
    )
    assert result["nonfinite_samples"] == 3
    assert np.isfinite(sf.read(tmp_path / "st-out.wav")[0]).all()


# ---- 4. an empty input ------------------------------------------------------------------------------------
def test_an_empty_input_is_an_error_and_writes_nothing(tmp_path, capsys):
    src, dst = tmp_path / "empty.wav", tmp_path / "out.wav"
    sf.write(src, np.zeros(0, np.float32), 16000)
    assert sf.info(src).frames == 0
    err = one_line_error(capsys, main(["--input", str(src), "--output", str(dst)] + NO_MODEL))
    assert f"input file {src} holds no audio samples" in err
    assert not dst.exists()
    dst.write_bytes(b"previous result")
    one_line_error(capsys, main(["--input", str(src), "--output", str(dst)] + preset("speech")))
    assert dst.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.wav", "out.wav"]


# ---- 5. an output that is the input -----------------------------------------------------------------------
def test_an_output_that_is_the_input_is_refused_before_the_model_loads(tmp_path, wav16k, monkeypatch, capsys):
    original = wav16k.read_bytes()
    (tmp_path / "link").symlink_to(tmp_path)
    (tmp_path / "alias.wav").symlink_to(wav16k)
    monkeypatch.chdir(tmp_path)
    for src, dst in [
        (str(wav16k), str(wav16k)),  # the same path
        ("in.wav", "./in.wav"),  # the same file, spelled another way
        (str(wav16k), str(tmp_path / "link" / "in.wav")),  # through a symlinked folder
        (str(wav16k), "alias.wav"),  # a symlink to the input
        (str(tmp_path / "sub" / ".." / "in.wav"), str(wav16k)),
    ]:
        if "sub" in src:
            (tmp_path / "sub").mkdir(exist_ok=True)
        # NO_MODEL: had the model been loaded first, the error would name the model instead.
        err = one_line_error(capsys, main(["--input", src, "--output", dst] + NO_MODEL))
        assert "is the input file; refusing to overwrite it" in err, (src, dst, err)
        assert wav16k.read_bytes() == original
    assert (tmp_path / "alias.wav").is_symlink()


def test_same_file():
    assert cli.same_file(__file__, Path(__file__).parent / ".." / "tests" / Path(__file__).name)
    assert not cli.same_file(__file__, Path(__file__).with_name("no-such-file.wav"))


# ---- 6. the summary line ----------------------------------------------------------------------------------
def test_file_mode_ends_with_one_summary_line(tmp_path, wav16k, capsys):
    dst, summary = tmp_path / "out.wav", tmp_path / "summary.json"
    argv = ["--input", str(wav16k), "--output", str(dst), "--summary-json", str(summary)]
    assert main(argv + preset("speech")) == 0
    result = json.loads(summary.read_text())
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("wrote ")]
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith(f"wrote {dst}: 4000 samples at 16000 Hz -> 12000 samples at 48000 Hz in ")
    assert re.search(r" in \d+\.\d\d s \(\d+\.\dx real time\); ", line), line
    assert f"; latency {result['latency_compensated']} samples compensated; " in line
    assert line.endswith("; 0 non-finite samples replaced; 0 model state resets")
    for key in ("input", "output", "input_rate", "output_rate", "input_frames", "output_frames"):
        assert key in result
    assert (result["input_frames"], result["output_frames"], result["nonfinite_samples"]) == (4000, 12000, 0)
    assert result["seconds"] > 0
    assert result["processor_stats"]["model_steps"] > 0  # the run's counts, not the reset processor's


def test_the_summary_counts_model_state_resets(tmp_path, wav16k):
    broken = DelayGain(
        48000, delay=5, gain=float("nan")
    )  # every step goes non-finite: the dry signal is kept
    result = process_file(
        lambda rate, ch: Processor(broken, rate, 48000, backend="torch", channels=ch),
        wav16k,
        tmp_path / "out.wav",
        show_bar=False,
    )
    resets = result["processor_stats"]["state_resets"]
    assert resets == result["processor_stats"]["model_steps"] > 0
    assert format_file_summary(result).endswith(
        f"; 0 non-finite samples replaced; {resets} model state resets"
    )
    assert np.isfinite(sf.read(tmp_path / "out.wav")[0]).all()


# ---- other user errors ------------------------------------------------------------------------------------
def test_a_corrupt_input_is_one_line(tmp_path, capsys):
    src, dst = tmp_path / "x.wav", tmp_path / "out.wav"
    src.write_bytes(np.random.default_rng(0).bytes(4096))
    err = one_line_error(capsys, main(["--input", str(src), "--output", str(dst)] + NO_MODEL))
    assert f"cannot read {src}" in err
    assert not dst.exists()


def test_a_missing_output_folder_or_a_folder_output_is_refused_before_the_model_loads(
    tmp_path, wav16k, capsys
):
    err = one_line_error(
        capsys, main(["--input", str(wav16k), "--output", str(tmp_path / "no" / "out.wav")] + NO_MODEL)
    )
    assert f"output folder {tmp_path / 'no'} does not exist" in err
    (tmp_path / "dir.wav").mkdir()
    err = one_line_error(
        capsys, main(["--input", str(wav16k), "--output", str(tmp_path / "dir.wav")] + NO_MODEL)
    )
    assert "is a folder" in err
    summary = str(tmp_path / "no" / "s.json")
    argv = ["--input", str(wav16k), "--output", str(tmp_path / "o.wav"), "--summary-json", summary]
    assert "--summary-json folder" in one_line_error(capsys, main(argv + NO_MODEL))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.wav", "in.wav"]
