"""`python -m realtime`: argument and user errors (exit 2, one line), and file mode through the streaming path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _realtime_models import DelayGain, save_tiny_generator

from realtime.cli import CliError, load_generator, main, process_file, resolve_device
from realtime.processor import Processor

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return save_tiny_generator(tmp_path_factory.mktemp("model"))


@pytest.fixture
def wav16k(tmp_path) -> tuple[Path, np.ndarray]:
    """0.5 s at 16 kHz: two tones and an impulse at sample 3001 (float WAV, so nothing is quantised)."""
    t = np.arange(8000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 300 * t) + 0.2 * np.sin(2 * np.pi * 2100 * t)).astype(np.float32)
    x[3001] += 0.4
    path = tmp_path / "in.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    return path, x


# ---- errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["--blocksize", "0"],
        ["--dry-wet", "1.5"],
        ["--duration", "-1"],
        ["--backend", "cuda"],
        ["--latency", "soon"],
        ["--new-band-db", "30"],
        ["--new-band-db", "nan"],
        ["--no-such-flag"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = one_line_error(capsys, exc.value.code)
    assert err.startswith("python -m realtime: error:")


def test_file_mode_needs_both_files_and_an_existing_input(tmp_path, capsys):
    assert one_line_error(capsys, main(["--input", str(tmp_path / "a.wav")])).endswith(
        "file mode needs both --input FILE and --output FILE"
    )
    err = one_line_error(
        capsys, main(["--input", str(tmp_path / "a.wav"), "--output", str(tmp_path / "b.wav")])
    )
    assert "input file not found" in err


def test_missing_and_corrupt_weights_are_one_line_errors(tmp_path, wav16k, tiny, capsys):
    src, _ = wav16k
    out = tmp_path / "out.wav"
    base = ["--input", str(src), "--output", str(out)]
    err = one_line_error(capsys, main(base + ["--model", str(tmp_path / "none.safetensors")]))
    assert "not found" in err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage, not a safetensors file")
    bad.with_suffix(".json").write_text(Path(tiny).with_suffix(".json").read_text())
    err = one_line_error(capsys, main(base + ["--model", str(bad)]))
    assert "bad.safetensors" in err
    bad.with_suffix(".json").write_text("{not json")
    assert "not valid JSON" in one_line_error(capsys, main(base + ["--model", str(bad)]))
    assert not out.exists()


def test_a_trim_without_a_band_level_is_a_one_line_error(tmp_path, wav16k, tiny, capsys):
    """The tiny generator has no band level, so there is nothing for --new-band-db to move."""
    src, _ = wav16k
    out = tmp_path / "out.wav"
    argv = ["--input", str(src), "--output", str(out), "--model", tiny, "--new-band-db", "-3"]
    assert "--new-band-db needs" in one_line_error(capsys, main(argv))
    assert not out.exists()


def test_a_preset_without_weights_needs_random_init(capsys):
    from models.registry import PRESETS, WEIGHTS_DIR

    name = next(n for n in PRESETS if not (WEIGHTS_DIR / f"{n}.safetensors").exists())
    with pytest.raises(CliError, match="--random-init"):
        load_generator(name, random_init=False)
    model, trained = load_generator(name, random_init=False, fallback_random=True)
    assert not trained and model.sample_rate in (44100, 48000)
    assert "random weights" in capsys.readouterr().err


def test_unknown_device_lists_the_devices(capsys):
    with pytest.raises(CliError, match="matches no output devices; output devices:"):
        resolve_device("no-such-device-name", "output")
    with pytest.raises(CliError, match="no input device 9999"):
        resolve_device("9999", "input")


def test_the_entry_point_reports_an_unknown_device_without_a_traceback():
    run = subprocess.run(
        [sys.executable, "-m", "realtime", "--device", "no-such-device-name", "--duration", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in run.stderr.splitlines() if line.startswith("python -m realtime")]
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert lines and "no-such-device-name" in lines[0]


def test_an_unsupported_rate_names_the_supported_ones(capsys):
    sd = pytest.importorskip("sounddevice")
    outputs = [d for d in sd.query_devices() if d["max_output_channels"] > 0]
    if not outputs:
        pytest.skip("no output device (start a JACK server to run this)")
    from realtime.cli import check_device_rate

    dev = outputs[-1]["index"]
    with pytest.raises(CliError, match=r"does not support 12345 Hz; supported: .*\d") as exc:
        check_device_rate(dev, 12345, 1, "output")
    assert "\n" not in str(exc.value)


# ---- file mode ----------------------------------------------------------------------------------------
def delay_gain_processor(rate: int, channels: int) -> Processor:
    return Processor(DelayGain(48000, delay=5, gain=0.5), rate, 48000, backend="torch", channels=channels)


def test_file_mode_is_the_offline_path_aligned_and_scaled_in_length(tmp_path, wav16k):
    src, x = wav16k
    dst = tmp_path / "out.wav"
    result = process_file(delay_gain_processor, src, dst, show_bar=False)
    y, rate = sf.read(dst, dtype="float32")
    assert rate == 48000 and len(y) == 3 * len(x) == result["output_frames"]
    np.testing.assert_array_equal(y, delay_gain_processor(16000, 1).process_file_array(x))
    # Time-aligned: the impulse (minus the tones) lands on 3 x its input index.
    tones = x.copy()
    tones[3001] -= 0.4
    impulse = y - delay_gain_processor(16000, 1).process_file_array(tones)
    assert int(np.argmax(np.abs(impulse))) == 3 * 3001
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "out.wav"]


def test_file_mode_keeps_channels(tmp_path):
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((4410, 2))).astype(np.float32)
    src, dst = tmp_path / "st.flac", tmp_path / "st-out.flac"
    sf.write(src, x, 44100, subtype="PCM_24")
    process_file(delay_gain_processor, src, dst, show_bar=False)
    info = sf.info(dst)
    assert (info.channels, info.samplerate, info.frames, info.subtype) == (2, 48000, 4800, "PCM_24")


@pytest.mark.parametrize("crash", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_run_leaves_no_output(tmp_path, wav16k, crash):
    src, _ = wav16k
    dst = tmp_path / "out.wav"
    dst.write_bytes(b"previous result")
    seen = []

    def progress(k: int) -> None:
        seen.append(k)
        if len(seen) == 3:  # mid-way: some output already went to the temporary file
            raise crash("stop")

    with pytest.raises(crash):
        process_file(delay_gain_processor, src, dst, progress=progress, show_bar=False)
    assert dst.read_bytes() == b"previous result"  # untouched, not half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "out.wav"]  # no temporary left


def test_cli_file_mode_with_a_weights_file(tmp_path, wav16k, tiny, capsys):
    src, x = wav16k
    dst = tmp_path / "sr.wav"
    summary = tmp_path / "summary.json"
    argv = ["--input", str(src), "--output", str(dst), "--model", tiny, "--backend", "torch"]
    assert main(argv + ["--summary-json", str(summary)]) == 0
    y, rate = sf.read(dst, dtype="float32")
    assert rate == 48000 and len(y) == 3 * len(x)
    assert "wrote" in capsys.readouterr().err
    assert '"output_frames": 24000' in summary.read_text()
