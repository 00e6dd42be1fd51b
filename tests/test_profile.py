"""`python -m realtime profile`: the statistics, the test signal, the JSON and the plot."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from _realtime_models import save_tiny_generator

from realtime.profile import RunTrace, format_minutes, main, per_minute, speech_like, summarize

JSON_KEYS = {
    "backend", "model", "sample_rate", "block_size", "latency_ms", "p50_ms", "p99_ms", "p999_ms", "max_ms",
    "rtf_mean", "misses_100", "misses_70", "blocks", "machine",
}  # fmt: skip


def test_summary_figures_are_exact_on_known_times():
    period = 480 / 48000  # 10 ms
    warm = np.full(5, 0.050)  # slow first calls: kept apart
    steady = np.concatenate([np.full(90, 0.002), np.full(6, 0.008), np.full(4, 0.012)])
    stats, head = summarize(np.concatenate([warm, steady]), 480, 48000, warmup=5)
    assert stats["blocks"] == 100
    assert stats["misses_100"] == 4  # > 10 ms
    assert stats["misses_70"] == 10  # > 7 ms
    assert stats["max_ms"] == pytest.approx(12.0)
    assert stats["p50_ms"] == pytest.approx(2.0)
    assert stats["rtf_mean"] == pytest.approx(steady.sum() / (100 * period))
    assert head == {
        "warmup_blocks": 5,
        "warmup_max_ms": pytest.approx(50.0),
        "warmup_mean_ms": pytest.approx(50.0),
    }
    with pytest.raises(ValueError, match="--seconds"):
        summarize(warm, 480, 48000, warmup=5)


def test_the_test_signal_is_speech_band_with_pauses():
    rate = 48000
    x = speech_like(2.0, rate)
    assert x.dtype == np.float32 and len(x) == 2 * rate and np.abs(x).max() <= 0.5 + 1e-6
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    f = np.fft.rfftfreq(len(x), 1 / rate)
    assert spec[f > 5000].sum() < 1e-8 * spec[f < 3600].sum()  # nothing in the band a model restores
    rms = np.sqrt(np.mean(x[: len(x) // 480 * 480].reshape(-1, 480) ** 2, axis=1))
    assert (rms < 0.01 * rms.max()).sum() >= 5  # pauses between bursts
    np.testing.assert_array_equal(x, speech_like(2.0, rate))  # reproducible


def test_profile_writes_json_and_plot(tmp_path, capsys):
    model = save_tiny_generator(tmp_path)
    out, png = tmp_path / "p.json", tmp_path / "p.png"
    argv = ["--model", model, "--backend", "torch", "--seconds", "0.3", "--warmup", "5", "--blocksize", "480"]
    assert main(argv + ["--json", str(out), "--plot", str(png)]) == 0
    result = json.loads(out.read_text())
    assert JSON_KEYS <= set(result)
    assert result["blocks"] == 30 and result["block_size"] == 480 and result["sample_rate"] == 48000
    assert result["backend"] == "torch" and result["model"] == model
    assert 0 <= result["misses_100"] <= result["misses_70"] <= 30
    assert result["p50_ms"] <= result["p99_ms"] <= result["p999_ms"] <= result["max_ms"]
    assert result["latency_ms"] > 0 and result["rtf_mean"] > 0
    assert {"cpu", "threads", "torch"} <= set(result["machine"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "mean RTF" in capsys.readouterr().out
    assert result["nonfinite_out"] == 0 and result["state_floats"] > 0


def test_per_minute_rows_split_the_run_by_minutes_of_audio():
    # 100-sample blocks at 1 kHz: 600 blocks a minute; the second minute is twice as slow.
    times = np.concatenate([np.full(600, 0.001), np.full(600, 0.002), np.full(100, 0.5)])
    rows = per_minute(RunTrace(times, [10.0, 11.0], 0), block=100, rate=1000)
    assert [r["minute"] for r in rows] == [1, 2]  # the partial third minute is left out
    assert rows[0]["mean_ms"] == pytest.approx(1.0) and rows[1]["mean_ms"] == pytest.approx(2.0)
    assert [r["rss_mb"] for r in rows] == [10.0, 11.0]
    assert "2.000" in format_minutes(rows)


def test_plot_without_matplotlib_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an environment without it looks like
    assert main(["--model", "none.safetensors", "--plot", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("--plot needs matplotlib (pip install matplotlib, or the 'plot' extra)")
    assert len(err.splitlines()) == 1
