"""`prepare` splits by speaker, keeps only full-band audio, skips bad files with counts, fails early."""

import json
import shutil
import struct
import zipfile

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import butter, sosfiltfilt

from models.train import prepare as pp
from models.train.__main__ import main

RATE = 44100
SHORT_OK = pp.Criteria(min_seconds=0.5)  # music keeps only files >= 10 s by default


def full_band(seed: int, seconds: float = 1.0, rate: int = RATE) -> np.ndarray:
    """A sine over white noise: content up to Nyquist."""
    t = np.arange(int(seconds * rate)) / rate
    return 0.3 * np.sin(2 * np.pi * (220 + 50 * seed) * t) + 0.05 * np.random.default_rng(
        seed
    ).standard_normal(t.size)


def band_limited(seed: int, cutoff: float = 10000.0) -> np.ndarray:
    return sosfiltfilt(butter(10, cutoff, fs=RATE, output="sos"), full_band(seed))


@pytest.fixture()
def folder(tmp_path):
    """Two speakers with three full-band files each, plus a corrupt, a silent and a band-limited file."""
    src = tmp_path / "src"
    for s, speaker in enumerate(("alice", "bob")):
        (src / speaker).mkdir(parents=True)
        for i in range(3):
            sf.write(src / speaker / f"{speaker}_{i}.wav", full_band(10 * s + i), RATE)
    (src / "alice" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    sf.write(src / "bob" / "silent.flac", np.zeros(RATE), RATE)
    sf.write(src / "bob" / "narrow.wav", band_limited(7), RATE)
    return src


def test_folder_split_by_speaker_with_skip_counts(folder, tmp_path):
    out = tmp_path / "out"
    manifest = pp.prepare(out, folder, "music", criteria=SHORT_OK, progress=False)
    assert manifest["skipped"] == {"unreadable": 1, "silent": 1, "short": 0, "band": 1}
    assert manifest["speakers"] == {"train": ["alice"], "test": ["bob"]}  # last speaker by name is test
    assert [e["path"] for e in manifest["splits"]["train"]] == [
        f"train/alice/alice_{i}.wav" for i in range(3)
    ]
    assert [e["path"] for e in manifest["splits"]["test"]] == [f"test/bob/bob_{i}.wav" for i in range(3)]
    assert json.loads((out / "manifest.json").read_text()) == manifest
    for entry in manifest["splits"]["train"] + manifest["splits"]["test"]:
        info = sf.info(str(out / entry["path"]))
        assert (info.samplerate, info.channels, info.frames) == (RATE, 1, entry["frames"])
        assert entry["cut_hz"] >= 19000 and entry["content_hz"] >= 17000


def test_speech_is_resampled_to_48k_and_stereo_downmixed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("p1_a", "p1_b", "p2_a", "p2_b"):  # speakers from the file-name prefix
        x = full_band(len(name) + ord(name[1]))
        sf.write(src / f"{name}.wav", np.stack([x, -x], axis=1) * 0.5 + x[:, None] * 0.5, RATE)
    manifest = pp.prepare(tmp_path / "out", src, "speech", progress=False)
    assert manifest["sample_rate"] == 48000
    assert manifest["speakers"] == {"train": ["p1"], "test": ["p2"]}
    entry = manifest["splits"]["train"][0]
    y, rate = sf.read(str(tmp_path / "out" / entry["path"]))
    assert rate == 48000 and y.ndim == 1 and y.size == 48000
    # channels (x, 0) downmix to x / 2: the written file is that, resampled
    x, _ = sf.read(str(src / "p1_a.wav"))
    assert np.max(np.abs(y)) == pytest.approx(np.max(np.abs(x.mean(axis=1))), rel=0.05)


def test_explicit_test_speakers(folder, tmp_path):
    manifest = pp.prepare(
        tmp_path / "out", folder, "music", test_speakers=["alice"], criteria=SHORT_OK, progress=False
    )
    assert manifest["speakers"] == {"train": ["bob"], "test": ["alice"]}
    with pytest.raises(ValueError, match=r"--test-speakers \['carol'\] not found"):
        pp.prepare(
            tmp_path / "out", folder, "music", test_speakers=["carol"], criteria=SHORT_OK, progress=False
        )


def test_too_few_files_fail_up_front(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    sf.write(src / "a" / "x.wav", full_band(1), RATE)
    sf.write(src / "b" / "y.wav", full_band(2), RATE)
    (src / "notes.txt").write_text("not audio")
    with pytest.raises(ValueError, match=r"found 2 audio file\(s\).*need at least 4"):
        pp.prepare(tmp_path / "out", src, "music", criteria=SHORT_OK, progress=False)
    assert not (tmp_path / "out").exists()  # nothing written before the check


def test_one_speaker_or_no_usable_test_file_is_an_error(tmp_path):
    src = tmp_path / "src"
    (src / "solo").mkdir(parents=True)
    for i in range(4):
        sf.write(src / "solo" / f"take{i}.wav", full_band(i), RATE)
    with pytest.raises(ValueError, match="one speaker/track"):
        pp.prepare(tmp_path / "out", src, "music", criteria=SHORT_OK, progress=False)
    (src / "zed").mkdir()
    sf.write(src / "zed" / "narrow.wav", band_limited(1), RATE)
    with pytest.raises(ValueError, match=r"no usable file left in split\(s\) \['test'\]"):
        pp.prepare(tmp_path / "out", src, "music", criteria=SHORT_OK, progress=False)


def test_band_edges_of_full_and_band_limited_noise():
    cut, content = pp.band_edges(full_band(3), RATE, 60.0, 90.0)
    assert cut > 21000 and content > 21000
    cut, content = pp.band_edges(band_limited(3, 10000.0), RATE, 60.0, 90.0)
    assert 9500 < content < 14000 and cut < 19000


def test_debian_speech_selection_from_an_unpacked_package(tmp_path):
    root = tmp_path / "cache" / pp.SPEECH_PACKAGE
    stamps = root / "usr" / "share" / "tuxpaint" / "stamps" / "animals"
    stamps.mkdir(parents=True)
    for lang in ("fr", "ru", "be", "es", "ca", "da"):
        sf.write(stamps / f"cat_desc_{lang}.ogg", full_band(1), RATE)
    sf.write(stamps / "cat.ogg", full_band(1), RATE)  # a sound effect, not a description
    (root / ".extracted").touch()  # already fetched: nothing is downloaded
    other = root / "usr" / "share" / "tuxpaint" / "stamps" / "toys"  # the same stamp name elsewhere
    other.mkdir(parents=True)
    sf.write(other / "cat_desc_fr.ogg", full_band(1), RATE)
    for country in ("us", "canadian"):  # the same name in folders of the same name
        coins = root / "usr" / "share" / "tuxpaint" / "stamps" / "money" / country / "coins"
        coins.mkdir(parents=True)
        sf.write(coins / "penny_desc_ru.ogg", full_band(1), RATE)
    words = tmp_path / "cache" / pp.WORDS_PACKAGE
    for lang in ("de", "ru", "es"):
        (words / "usr" / "share" / "ktuberling" / "sounds" / lang).mkdir(parents=True)
        sf.write(
            words / "usr" / "share" / "ktuberling" / "sounds" / lang / "moon_moon.ogg", full_band(2), RATE
        )
    sf.write(words / "usr" / "share" / "ktuberling" / "click.ogg", full_band(2), RATE)  # not a word
    (words / ".extracted").touch()
    candidates = pp.debian_candidates("speech", tmp_path / "cache")
    found = {(c.speaker, c.split) for c in candidates}
    assert found == {
        ("fr", "train"),
        ("ru", "train"),
        ("be", "train"),
        ("es", "test"),
        ("kt-de", "train"),
        ("kt-ru", "train"),
    }
    names = [c.name for c in candidates]
    assert len(names) == len(set(names)) == 9  # no output overwrites another
    assert {"fr/animals_cat_desc_fr", "fr/toys_cat_desc_fr", "ru/cat_desc_ru"} <= set(names)
    assert {"ru/us_coins_penny_desc_ru", "ru/canadian_coins_penny_desc_ru"} <= set(names)


def test_pk3_archives_are_unpacked_audio_only(tmp_path):
    with zipfile.ZipFile(tmp_path / "music.pk3", "w") as z:
        z.writestr("sound/cdtracks/track1.ogg", b"ogg bytes")
        z.writestr("maps/readme.txt", b"text")
    assert pp.unpack_archives(tmp_path) == 1
    assert (tmp_path / "music.pk3.d" / "sound" / "cdtracks" / "track1.ogg").read_bytes() == b"ogg bytes"
    assert not (tmp_path / "music.pk3.d" / "maps").exists()


def test_cli(folder, tmp_path, capsys):
    assert (
        main(
            [
                "prepare",
                "--out",
                str(tmp_path / "out"),
                "--source",
                str(folder),
                "--kind",
                "music",
                "--min-seconds",
                "0.5",
            ]
        )
        == 0
    )
    assert "train: 3 files" in capsys.readouterr().out
    assert main(["prepare", "--out", str(tmp_path / "o2"), "--source", str(tmp_path / "missing")]) == 2
    assert "--source must be 'debian' or a folder" in capsys.readouterr().err


def midi_song(notes: list[int], ticks: int = 96) -> bytes:
    """A format-0 Standard MIDI File: a piano playing `notes` one after another, a quarter note each."""
    events = b"\x00\xc0\x00"  # program change: acoustic grand
    for note in notes:
        events += (
            b"\x00\x90"
            + bytes([note, 100])
            + bytes([ticks // 128 | 0x80, ticks % 128])
            + b"\x80"
            + bytes([note, 0])
        )
    events += b"\x00\xff\x2f\x00"  # end of track
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, ticks) + b"MTrk" + struct.pack(">I", len(events)) + events


needs_fluidsynth = pytest.mark.skipif(pp.midi_renderer() is None, reason="fluidsynth + a GM soundfont")


@needs_fluidsynth
def test_midi_is_rendered_full_band_without_clipping(tmp_path):
    song = tmp_path / "song.mid"
    song.write_bytes(midi_song([60, 64, 67, 72, 96]))
    x, rate = pp._read_mono(song)
    assert rate == pp.MIDI_RENDER_RATE and np.isfinite(x).all()
    assert 2.0 < x.size / rate < 6.0  # five quarter notes at 120 bpm, plus the release tail
    assert 1e-3 < np.abs(x).max()
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd not a song")
    skipped = pp.process(pp.Candidate(bad, "train", "x", "bad"), tmp_path / "out", RATE, SHORT_OK, "PCM_16")
    assert skipped["skip"] in ("unreadable", "silent")  # fluidsynth renders a broken song as silence


@needs_fluidsynth
def test_debian_music_takes_the_midi_songs_for_training(tmp_path):
    cache = tmp_path / "cache"
    for package in pp.MUSIC_TRAIN + pp.MUSIC_TEST + pp.MUSIC_MIDI:
        root = cache / package
        (root / "music").mkdir(parents=True)
        (root / ".extracted").touch()  # already fetched: nothing is downloaded
    sf.write(cache / pp.MUSIC_TEST[0] / "music" / "overture.ogg", full_band(1), RATE)
    (cache / pp.MUSIC_MIDI[0] / "music" / "theme.mid").write_bytes(midi_song([60]))
    (cache / pp.MUSIC_TRAIN[0] / "music" / "theme.mid").write_bytes(midi_song([60]))  # not a MIDI package
    found = {(c.speaker, c.split) for c in pp.debian_candidates("music", cache)}
    assert found == {
        (f"{pp.MUSIC_MIDI[0]}/music/theme", "train"),
        (f"{pp.MUSIC_TEST[0]}/music/overture", "test"),
    }


def test_midi_without_fluidsynth_is_skipped_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    song = tmp_path / "song.mid"
    song.write_bytes(midi_song([60]))
    with pytest.raises(ValueError, match="fluidsynth"):
        pp.render_midi(song)
