"""The metrics match hand computations; noisefill touches only the missing band; the CLI writes its outputs,
per source, for any split."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _realtime_models import DelayGain

from models import evaluate as ev
from models import metrics

SR = 48000
N = ev.N_FFT
# 8 n_fft + 1 samples: a zero-phase cosine at a bin centre is symmetric about both ends, so reflect
# padding continues it and every frame sees the same pure tone (3 non-zero bins, nothing else).
LENGTH = 8 * N + 1


def tone(k: int, amplitude: float, length: int = LENGTH) -> np.ndarray:
    return amplitude * np.cos(2 * np.pi * k * np.arange(length) / N)


def noise(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    return 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))


def test_lsd_equals_the_hand_computed_value_for_two_tones():
    k0, k1, a, b, c = 100, 300, 0.5, 0.125, 0.25
    ref = tone(k0, a) + tone(k1, c)
    est = tone(k0, b)  # the k0 tone 12 dB down, the k1 tone missing
    # Hann-windowed bin-centred cosine: |X| = amp*N/4 at its bin, amp*N/8 at both neighbours, 0 elsewhere.
    d0 = 2 * math.log10(a / b)  # in each of the 3 bins of the k0 tone
    centre = math.log10((c * N / 4) ** 2) - math.log10(ev.FLOOR)
    side = math.log10((c * N / 8) ** 2) - math.log10(ev.FLOOR)
    bins = int(19500 // (SR / N)) + 1  # 0 .. 19.5 kHz inclusive: 833 bins
    expected = math.sqrt((3 * d0**2 + centre**2 + 2 * side**2) / bins)
    assert ev.lsd(ref, est, SR) == pytest.approx(expected, rel=1e-9)
    assert ev.lsd(ref, ref, SR) == 0.0


def test_frames_far_below_the_loudest_are_not_scored():
    half = 6 * N
    for quiet_db, scored in ((-80.0, False), (-50.0, True)):
        ref = tone(64, 1.0, 2 * half)
        ref[half:] *= 10 ** (quiet_db / 20)
        est = ref.copy()
        start = half + 2 * N  # far enough from the step that no loud frame sees the change
        est[start:] += (
            0.3 * 10 ** (quiet_db / 20) * np.random.default_rng(1).standard_normal(est.size - start)
        )
        value = ev.lsd(ref, est, SR)
        assert (value > 0.01) if scored else (value == 0.0)


def test_lsd_hf_band_runs_from_the_input_nyquist_to_19_5_khz():
    mask = ev.band_mask(SR, 8000, ev.MAX_HZ)
    assert np.flatnonzero(mask)[[0, -1]].tolist() == [342, 832]  # 341.3 -> 342; 19500 / 23.4375 = 832
    ref = noise(LENGTH / SR, seed=2)[:LENGTH]
    just_below = ref + tone(340, 0.05)  # bins 339..341, all below 8 kHz
    just_above = ref + tone(343, 0.05)  # bins 342..344
    beyond = ref + tone(835, 0.05)  # bins 834..836, above 19.5 kHz
    assert ev.lsd_hf(ref, just_below, SR, 16000) < 1e-9
    assert ev.lsd(ref, just_below, SR) > 1e-3
    assert ev.lsd_hf(ref, just_above, SR, 16000) > 1e-3
    assert ev.lsd(ref, beyond, SR) < 1e-9 and ev.lsd_hf(ref, beyond, SR, 16000) < 1e-9


def test_snr_and_bad_inputs():
    ref = noise()
    err = 0.1 * noise(seed=3)
    expected = 10 * math.log10(np.sum(ref**2) / np.sum(err**2))
    assert ev.snr(ref, ref + err) == pytest.approx(expected, rel=1e-12)
    assert ev.snr(ref, ref) == math.inf
    with pytest.raises(ValueError, match="same length"):
        ev.lsd(ref, ref[:-1], SR)
    with pytest.raises(ValueError, match="silent"):
        ev.lsd(np.zeros(4096), np.zeros(4096), SR)
    with pytest.raises(ValueError, match="input_rate=48000"):
        ev.lsd_hf(ref, ref, SR, 48000)


def test_noisefill_fills_exactly_the_missing_band_at_the_continued_level():
    rate, nyq = 16000, 8000
    ref = noise(2.0, seed=4)
    up = ev.baseline(ev.downsample(ref, SR, rate), rate, SR, ref.size)
    filled = ev.noisefill(up, SR, rate, seed=1)
    added = np.abs(np.fft.rfft(filled - up))
    f = np.fft.rfftfreq(ref.size, 1 / SR)
    assert added[f < nyq].max() < 1e-9 * added[f >= nyq].max()  # nothing below the input's Nyquist
    assert np.mean(added[f >= nyq] > 0) > 0.999
    # Level: the fitted top half-octave of the input, continued with a 1/f^2 slope.
    power = ev.power_spectrogram(filled).mean(axis=0)
    fb = ev.bin_frequencies(SR)
    lo, hi = nyq / math.sqrt(2), ev.NOISEFILL_LEVEL_TOP * nyq
    top = power[(fb >= lo) & (fb <= hi)].mean()
    f_top = math.sqrt(lo * hi)

    def level(freq: float) -> float:
        sel = np.abs(fb - freq) <= 250
        return 10 * math.log10(power[sel].mean() / (top * (f_top / freq) ** 2))

    for freq in (9000.0, 12000.0, 18000.0):
        assert abs(level(freq)) < 1.0
    # No new band: the baseline's missing band costs far more than noisefill's.
    assert ev.lsd_hf(ref, filled, SR, rate) < 0.3 * ev.lsd_hf(ref, up, SR, rate)


def test_alignment_lag_finds_a_known_shift():
    ref = noise(0.5, seed=5)
    late = np.concatenate([np.zeros(5), ref[:-5]])
    assert ev.alignment_lag(ref, late, SR, 4000, max_lag=100) == 5
    assert ev.alignment_lag(late, ref, SR, 4000, max_lag=100) == -5


def test_clip_through_the_streaming_path_is_aligned_and_keeps_the_band():
    ref = noise(0.5, seed=6)
    model = DelayGain(sample_rate=SR, delay=7, gain=1.0)  # the input band passes unchanged, 7 samples late
    clip, signals = ev.evaluate_clip(ref, SR, 16000, ev.model_runner(model))
    assert clip.lag == 0  # file mode compensates the model's and the resamplers' delays
    m, b = clip.metrics["model"], clip.metrics["baseline"]
    assert m["lsd_hf"] == pytest.approx(b["lsd_hf"], rel=0.05)  # no new band, like the baseline
    assert m["snr"] > b["snr"] - 0.3  # and the band it was given is intact (white noise: 2/3 missing)
    assert clip.metrics["noisefill"]["lsd_hf"] < 0.3 * b["lsd_hf"]


def test_cli_writes_table_json_and_plots(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        sf.write(data / f"clip{i}.wav", noise(0.5, seed=10 + i), 44100)
    sf.write(data / "silent.wav", np.zeros(22050), 44100)
    (data / "broken.wav").write_bytes(b"RIFFnot audio")
    out = tmp_path / "report.json"
    code = ev.main(
        [
            "--data",
            str(data),
            "--rates",
            "16000",
            "8000",
            "--json",
            str(out),
            "--plots",
            str(tmp_path / "png"),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "baseline" in text and "noisefill" in text and "2 file(s) skipped" in text
    report = json.loads(out.read_text())
    assert set(report["table"]) == {"16000", "8000"}
    for rate in ("16000", "8000"):
        row = report["table"][rate]
        assert row["noisefill"]["lsd_hf"] < row["baseline"]["lsd_hf"]
    assert len(report["clips"]) == 4
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == [
        "16000_clip0.png",
        "8000_clip0.png",
        "band_level_16000.png",
        "band_level_8000.png",
    ]
    for rate in ("16000", "8000"):
        assert set(report["table"][rate]["baseline"]) >= {"lsd", "lsd_hf", "snr_lb", "level_bias", "snr"}
        bias = report["band_bias"][rate]
        assert len(bias["all"]["noisefill"]) == len(bias["centres_hz"]) > 0
    assert set(report["sources"]) == {"data"}  # files in the root: one source, the folder's name
    assert ev.main(["--data", str(tmp_path / "nowhere"), "--rates", "16000"]) == 2


def test_cli_every_scores_every_nth_file_in_name_order(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        sf.write(data / f"clip{i}.wav", noise(0.3, seed=20 + i), 44100)
    out = tmp_path / "report.json"
    assert ev.main(["--data", str(data), "--rates", "16000", "--every", "2", "--json", str(out)]) == 0
    names = [clip["file"] for clip in json.loads(out.read_text())["clips"]]
    assert [Path(n).stem for n in names] == ["clip0", "clip2", "clip4"]
    assert ev.main(["--data", str(data), "--rates", "16000", "--every", "0"]) == 2


def highpass_noise(seconds: float, cutoff: float, amplitude: float, seed: int) -> np.ndarray:
    n = amplitude * np.random.default_rng(seed).standard_normal(int(seconds * SR))
    return n - metrics.lowpass(n, SR, cutoff)


def test_snr_lb_ignores_everything_above_0_9_of_the_input_nyquist():
    ref = noise(1.0, seed=30)
    assert ev.snr_lb(ref, ref.copy(), SR, 16000) == math.inf
    loud = ref + highpass_noise(1.0, 0.9 * 8000 + 50, 5.0, seed=31)  # far louder than the signal
    assert ev.snr_lb(ref, loud, SR, 16000) > 150  # only rounding differences remain
    assert ev.snr(ref, loud) < 0  # while the full-band SNR collapses
    damaged = ref + 0.01 * noise(1.0, seed=32)  # white noise 40 dB down: the same ratio in any band
    assert ev.snr_lb(ref, damaged, SR, 16000) == pytest.approx(40.0, abs=0.5)
    with pytest.raises(ValueError, match="input_rate"):
        ev.snr_lb(ref, ref, SR, 96000)


def test_level_bias_reads_a_doubled_band_as_6_db_and_matched_noise_as_0():
    ref = noise(1.0, seed=33)
    high = ref - metrics.lowpass(ref, SR, 8000)
    assert ev.level_bias(ref, ref + high, SR, 16000) == pytest.approx(20 * math.log10(2), abs=0.1)
    assert ev.level_bias(ref, ref - high, SR, 16000) < -60  # an empty band: far too quiet
    # Noisefill-like: the given band kept, the missing band replaced by independent noise, same level.
    filled = ref - high + highpass_noise(1.0, 8000, 0.1, seed=34)
    assert abs(ev.level_bias(ref, filled, SR, 16000)) < 1.0
    centres, bias = ev.level_bias_per_band(ref, ref + high, SR, 16000)
    assert centres.shape == bias.shape and np.isfinite(bias).all()
    assert centres.tolist() == ev.band_centres(SR, 16000).tolist()
    assert 8000 < centres[0] < centres[-1] < ev.MAX_HZ and np.all(np.diff(centres) > 0)
    assert len(centres) == 5  # third-octave bands 8 (cut at 8 kHz), 10, 12.5, 16, 20 (cut at 19.5) kHz
    assert np.allclose(bias, 20 * math.log10(2), atol=0.2)
    # One STFT pair gives the same values as the single metrics.
    scores, (c2, b2) = metrics.spectral_scores(ref, filled, SR, 16000)
    assert scores["lsd"] == ev.lsd(ref, filled, SR) and scores["lsd_hf"] == ev.lsd_hf(ref, filled, SR, 16000)
    assert scores["level_bias"] == ev.level_bias(ref, filled, SR, 16000)
    assert np.array_equal(b2, ev.level_bias_per_band(ref, filled, SR, 16000)[1])


def test_metrics_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, models.metrics; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_entry_source_groups_speech_by_reader_and_music_by_package():
    assert ev.entry_source({"path": "test/es/cat_desc_es.wav", "speaker": "es"}) == "es"
    track = "wesnoth-1.16-music/usr/share/games/wesnoth/data/core/music/battle"
    assert ev.entry_source({"path": f"test/{track}.wav", "speaker": track}) == "wesnoth-1.16-music"
    assert ev.entry_source({"path": "train/alice/x.wav", "speaker": "alice"}) == "alice"


def write_prepared(root: Path) -> dict:
    """A tiny prepared folder: two speakers in test, two in train (10 clips each), a stored valid split."""
    splits: dict[str, list[dict]] = {"train": [], "valid": [], "test": []}
    for split, speakers, count in (("train", ("fr", "ru"), 10), ("test", ("es", "pt"), 2)):
        for speaker in speakers:
            for i in range(count):
                rel = f"{split}/{speaker}/{speaker}{i}.wav"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                seed = 100 + len(splits[split]) + (0 if split == "train" else 50)
                sf.write(root / rel, noise(0.25, seed=seed), SR)
                entry = {"path": rel, "speaker": speaker, "frames": SR // 4, "seconds": 0.25}
                splits["valid" if split == "train" and i == 0 else split].append(entry)
    meta = {"version": 1, "kind": "speech", "sample_rate": SR, "splits": splits}
    (root / "manifest.json").write_text(json.dumps(meta))
    return meta


def test_cli_reports_each_source_of_a_prepared_folder(tmp_path, capsys):
    data = tmp_path / "data"
    write_prepared(data)
    files = ev.list_files(data)
    assert [f.source for f in files] == ["es", "es", "pt", "pt"]
    out = tmp_path / "report.json"
    argv = ["--data", str(data), "--rates", "16000", "--no-visqol", "--json", str(out)]
    assert ev.main([*argv, "--plots", str(tmp_path / "png")]) == 0
    text = capsys.readouterr().out
    assert "source es (2 at 16000 Hz)" in text and "source pt (2 at 16000 Hz)" in text
    assert text.index("all sources (2)") < text.index("source es")
    report = json.loads(out.read_text())
    assert report["split"] == "test" and {c["source"] for c in report["clips"]} == {"es", "pt"}
    assert set(report["sources"]) == {"es", "pt"}
    for source in ("es", "pt"):
        assert report["sources"][source]["clips"] == {"16000": 2}
        assert set(report["sources"][source]["table"]["16000"]) == {"baseline", "noisefill"}
    assert set(report["band_bias"]["16000"]["sources"]) == {"es", "pt"}
    assert (tmp_path / "png" / "band_level_16000.png").stat().st_size > 0
    # --split on a plain folder would silently score everything: refused.
    plain = tmp_path / "plain"
    plain.mkdir()
    sf.write(plain / "a.wav", noise(0.25), SR)
    assert ev.main(["--data", str(plain), "--rates", "16000", "--split", "valid"]) == 2


def test_model_rows_show_lsd_hf_against_noisefill():
    model = DelayGain(sample_rate=SR, delay=3, gain=1.0)  # no new band: far worse than noisefill
    report = ev.Report(SR, [16000])
    for i, source in enumerate(("a", "b")):
        clip, _ = ev.evaluate_clip(noise(0.3, 40 + i), SR, 16000, ev.model_runner(model), source=source)
        report.clips.append(clip)
    row = report.table()[16000]
    assert row["model"][ev.HF_VS_NOISEFILL] == pytest.approx(
        row["model"]["lsd_hf"] / row["noisefill"]["lsd_hf"]
    )
    assert row["model"][ev.HF_VS_NOISEFILL] > 2 and ev.HF_VS_NOISEFILL not in row["noisefill"]
    # The given band passes unharmed: as intact as the soxr baseline's (on white noise both are limited
    # to 40-48 dB by the resamplers' transients at the clip's abrupt ends; mid-clip the error is ~-110 dB).
    assert row["model"]["snr_lb"] > row["baseline"]["snr_lb"] - 1 > 30
    assert "HF/NF" in report.format() and set(report.table("a")) == {16000}


def test_split_valid_and_held_out_through_split_entries(tmp_path):
    data = tmp_path / "data"
    write_prepared(data)
    valid = ev.list_files(data, "valid")
    assert valid and {f.source for f in valid} <= {"fr", "ru"}
    assert all(f.path.parts[-3] == "train" for f in valid)  # derived from the training speakers' clips
    held = ev.list_files(data, "held_out", ["fr"])
    assert held and {f.source for f in held} == {"fr"}
    assert ev.main(["--data", str(data), "--split", "valid", "--rates", "16000", "--no-visqol"]) == 0
    assert ev.main(["--data", str(data), "--split", "held_out", "--hold-out", "xx", "--rates", "16000"]) == 2
