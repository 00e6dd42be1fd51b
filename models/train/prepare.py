"""`python -m models.train prepare`: build a training/test set from a folder of audio or from Debian packages.

Every usable file is downmixed to mono, resampled with soxr (VHQ) to the model's rate (44.1 kHz
music, 48 kHz speech) and written as WAV under OUT/{train,test}/, with OUT/manifest.json listing
each file's split, "speaker", length and measured band. Lossy sources carry an encoder low-pass,
so only files whose codec cut reaches `min_cut_hz` and whose content reaches `min_content_hz`
(long-term spectrum within `content_db` of its peak) are kept.

Splits are by speaker/track, never by clip:
- a plain folder: the speaker is the file's parent folder below the root, or for files directly in
  the root the file-name prefix before the first "_", "-" or space; speakers sorted by name, the last
  `test_fraction` of them (at least one) form the test split, unless `test_speakers` names them;
- Debian: speech from `tuxpaint-stamps-default` (readers fr/ru/be train, es test) and the spoken
  words of `ktuberling-data` (one reader per language, "kt-LANG", train; never es); music from the
  game soundtracks (train) and `wesnoth-1.16-music` (test), plus the MIDI songs of
  `openttd-openmsx` (train) where fluidsynth can render them. Packages are fetched with
  `apt-get download` and unpacked with `dpkg-deb -x` into a cache folder; `.pk3` archives are zips.

MIDI files (.mid, .midi; in a folder source too) are rendered with fluidsynth and a General MIDI
soundfont (`fluid-soundfont-gm`): lossless, with no codec cut, so they pass the band checks on their
own merit like any other file.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy.signal import welch

from ..atomic import atomic_write
from .splits import MANIFEST

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3")
MIDI_EXTENSIONS = (".mid", ".midi")
SOUNDFONTS = (  # General MIDI soundfonts, first found wins
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)
MIDI_RENDER_RATE = 44100
MIDI_RENDER_GAIN = 0.2  # fluidsynth's synth gain: rendered as float, peak-normalised after
KIND_RATES = {"speech": 48000, "music": 44100}
SKIP_REASONS = ("unreadable", "silent", "short", "band")

SPEECH_PACKAGE = "tuxpaint-stamps-default"
SPEECH_TRAIN, SPEECH_TEST = ("fr", "ru", "be"), ("es",)
# More voices for training: the spoken words of ktuberling, one reader per language folder
# (speaker "kt-LANG"); files whose band is cut (8 kHz, 22 kHz recordings) fail the checks on their own.
WORDS_PACKAGE, WORDS_PREFIX = "ktuberling-data", "kt-"
MUSIC_TRAIN = ("warzone2100-music", "ufoai-music", "nexuiz-music", "megaglest-data")
MUSIC_TEST = ("wesnoth-1.16-music",)
MUSIC_MIDI = ("openttd-openmsx",)  # train: MIDI songs, rendered when fluidsynth is available
MUSIC_ONLY_UNDER = {"megaglest-data": "music"}  # packages whose other audio is not music


@dataclass(frozen=True)
class Criteria:
    """What a file must satisfy to be kept."""

    min_cut_hz: float = 19000.0
    min_content_hz: float = 17000.0
    content_db: float = 60.0  # "content" = long-term spectrum within this of its peak
    cut_db: float = 90.0  # the codec cut: above it the spectrum stays this far below its peak
    silent_peak: float = 1e-4  # files whose peak stays below this are silent
    min_seconds: float = 0.5


@dataclass(frozen=True)
class Candidate:
    source: Path
    split: str  # "train" | "test"
    speaker: str
    name: str  # output path below the split folder, without suffix


# ---- measuring ----------------------------------------------------------------------------------
def band_edges(x: np.ndarray, sample_rate: int, content_db: float, cut_db: float) -> tuple[float, float]:
    """(cut_hz, content_hz): the highest frequencies where the smoothed long-term spectrum is within
    `cut_db` / `content_db` of its peak (DC region excluded from the peak)."""
    nper = min(4096, 1 << int(np.log2(max(16, x.size))))
    f, p = welch(x, sample_rate, nperseg=nper)
    smooth = np.convolve(p, np.ones(9) / 9, mode="same")
    peak = smooth[f >= 20.0].max()
    if peak <= 0:
        return 0.0, 0.0

    def reach(db: float) -> float:
        above = np.nonzero(smooth >= peak * 10 ** (-db / 10))[0]
        return float(f[above[-1]])

    return reach(cut_db), reach(content_db)


def find_soundfont() -> Path | None:
    return next((Path(p) for p in SOUNDFONTS if Path(p).is_file()), None)


def midi_renderer() -> tuple[str, Path] | None:
    """(fluidsynth, soundfont) when both are installed, else None."""
    exe, font = shutil.which("fluidsynth"), find_soundfont()
    return (exe, font) if exe and font else None


def render_midi(path: Path) -> tuple[np.ndarray, int]:
    """A MIDI file as mono float64 audio at MIDI_RENDER_RATE, rendered with fluidsynth (float WAV,
    so nothing clips). ValueError when it cannot be rendered."""
    renderer = midi_renderer()
    if renderer is None:
        raise ValueError(
            "MIDI needs fluidsynth and a General MIDI soundfont (apt-get install fluidsynth fluid-soundfont-gm)"
        )
    exe, font = renderer
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "render.wav"
        run = subprocess.run(
            [
                exe,
                "-ni",
                "-q",
                "-o",
                "audio.file.format=float",
                "-F",
                str(wav),
                "-r",
                str(MIDI_RENDER_RATE),
                "-g",
                str(MIDI_RENDER_GAIN),
                str(font),
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if run.returncode or not wav.is_file():
            raise ValueError(f"fluidsynth could not render {path.name}: {run.stderr.strip()[-200:]}")
        return _read_mono(wav)


def _read_mono(path: Path) -> tuple[np.ndarray, int]:
    if path.suffix.lower() in MIDI_EXTENSIONS:
        return render_midi(path)
    x, rate = sf.read(str(path), dtype="float64", always_2d=True)
    if x.size == 0:
        raise ValueError("empty")
    return x.mean(axis=1), int(rate)


def process(cand: Candidate, out: Path, sample_rate: int, criteria: Criteria, subtype: str) -> dict:
    """One file: checked, converted and written. Returns its manifest entry, or {"skip": reason}."""
    try:
        x, rate = _read_mono(cand.source)
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError):
        return {"skip": "unreadable"}
    if not np.isfinite(x).all():
        return {"skip": "unreadable"}
    if np.max(np.abs(x)) < criteria.silent_peak:
        return {"skip": "silent"}
    if x.size < criteria.min_seconds * rate:
        return {"skip": "short"}
    cut, content = band_edges(x, rate, criteria.content_db, criteria.cut_db)
    if cut < criteria.min_cut_hz or content < criteria.min_content_hz:
        return {"skip": "band", "cut_hz": cut, "content_hz": content}
    if rate != sample_rate:
        x = soxr.resample(x, rate, sample_rate, quality="VHQ")
    peak = float(np.max(np.abs(x)))
    if peak > 1.0:  # resampling overshoot or a loud MIDI render; integer WAVs would clip
        x = x / peak
    rel = Path(cand.split) / f"{cand.name}.wav"
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(out / rel), x, sample_rate, subtype=subtype)
    return {
        "path": rel.as_posix(),
        "speaker": cand.speaker,
        "frames": int(x.size),
        "seconds": round(x.size / sample_rate, 3),
        "cut_hz": round(cut),
        "content_hz": round(content),
        "source": str(cand.source),
    }


# ---- finding files ------------------------------------------------------------------------------
def audio_files(root: Path, midi: bool = True) -> list[Path]:
    """Audio files below `root`, and MIDI files unless `midi` is False."""
    kinds = AUDIO_EXTENSIONS + (MIDI_EXTENSIONS if midi else ())
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in kinds)


def speaker_of(path: Path, root: Path) -> str:
    """The parent folder below `root`, or for files in `root` itself the file-name prefix."""
    rel = path.relative_to(root)
    if len(rel.parts) > 1:
        return rel.parent.name
    return re.split(r"[_\- ]", path.stem, maxsplit=1)[0] or path.stem


def folder_candidates(
    root: Path, test_speakers: Sequence[str] | None = None, test_fraction: float = 0.1, min_files: int = 4
) -> list[Candidate]:
    """Every audio file below `root`, split by speaker (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"--source must be 'debian' or a folder of audio files, got {root}")
    files = audio_files(root)
    if len(files) < min_files:
        raise ValueError(
            f"found {len(files)} audio file(s) ({', '.join(AUDIO_EXTENSIONS + MIDI_EXTENSIONS)}) under {root}; "
            f"need at least {min_files} to make a train and a test split"
        )
    speakers = {p: speaker_of(p, root) for p in files}
    names = sorted(set(speakers.values()))
    if len(names) < 2:
        raise ValueError(
            f"all {len(files)} files under {root} belong to one speaker/track ({names[0]!r}); splits are by "
            "speaker: put each speaker's files in its own sub-folder or name them SPEAKER_*.wav"
        )
    if test_speakers:
        missing = sorted(set(test_speakers) - set(names))
        if missing:
            raise ValueError(f"--test-speakers {missing} not found; speakers: {', '.join(names)}")
        test = set(test_speakers)
    else:
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        count = min(len(names) - 1, max(1, round(test_fraction * len(names))))
        test = set(names[-count:])
    if test == set(names):
        raise ValueError("every speaker is in the test split; leave at least one for training")
    return [
        Candidate(
            p,
            "test" if speakers[p] in test else "train",
            speakers[p],
            p.relative_to(root).with_suffix("").as_posix(),
        )
        for p in files
    ]


def fetch_package(package: str, cache: Path) -> Path:
    """`apt-get download` + `dpkg-deb -x` into `cache/package/` (reused when already there)."""
    target = cache / package
    if (target / ".extracted").exists():
        return target
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise ValueError(f"--source debian needs `{tool}` (a Debian or Ubuntu system)")
    cache.mkdir(parents=True, exist_ok=True)
    debs = sorted(cache.glob(f"{package}_*.deb"))
    if not debs:
        run = subprocess.run(["apt-get", "download", package], cwd=cache, capture_output=True, text=True)
        debs = sorted(cache.glob(f"{package}_*.deb"))
        if run.returncode or not debs:
            raise ValueError(
                f"apt-get download {package} failed ({run.stderr.strip()[-300:]}); run `apt-get update` first"
            )
    if target.exists():
        shutil.rmtree(target)
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(target)], check=True)
    unpack_archives(target)
    (target / ".extracted").touch()
    return target


def unpack_archives(root: Path) -> int:
    """Extract the audio members of every `.pk3` (zip) below `root` into `NAME.pk3.d/`; returns the count."""
    count = 0
    for pk3 in sorted(root.rglob("*.pk3")):
        with zipfile.ZipFile(pk3) as z:
            for member in z.namelist():
                parts = Path(member).parts
                if (
                    member.lower().endswith(AUDIO_EXTENSIONS)
                    and ".." not in parts
                    and not Path(member).is_absolute()
                ):
                    z.extract(member, pk3.with_suffix(".pk3.d"))
                    count += 1
    return count


def unique_names(paths: Sequence[Path]) -> list[str]:
    """A name per path: its stem, with as many of its closest folders prefixed ("us_coins_penny") as it
    takes to tell apart the paths that share the stem, so no output file overwrites another."""
    by_stem: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        by_stem.setdefault(p.stem, []).append(i)
    names = [p.stem for p in paths]
    for stem, group in by_stem.items():
        if len(group) == 1:
            continue
        depth = max(len(paths[i].parent.parts) for i in group)
        for k in range(1, depth + 1):
            tried = ["_".join((*paths[i].parent.parts[-k:], stem)) for i in group]
            if len(set(tried)) == len(group):
                break
        else:  # the same stem in one folder: only the extension tells them apart
            tried = [f"{name}_{paths[i].suffix.lstrip('.')}" for i, name in zip(group, tried)]
        for i, name in zip(group, tried):
            names[i] = name
    return names


def debian_candidates(kind: str, cache: Path) -> list[Candidate]:
    """The Debian sources of DATA.md for `kind`, split by reader (speech) or by package (music)."""
    out = []
    if kind == "speech":
        root = fetch_package(SPEECH_PACKAGE, cache)
        pattern = re.compile(r"_desc_([a-z]+)\.ogg$")
        files = [(p, m.group(1)) for p in audio_files(root) if (m := pattern.search(p.name))]
        names = unique_names([p.relative_to(root) for p, _ in files])
        for (p, lang), name in zip(files, names):
            if lang in SPEECH_TRAIN + SPEECH_TEST:
                split = "test" if lang in SPEECH_TEST else "train"
                out.append(Candidate(p, split, lang, f"{lang}/{name}"))
        words = fetch_package(WORDS_PACKAGE, cache)
        for p in audio_files(words, midi=False):
            lang = p.parent.name
            if (
                p.parent.parent.name == "sounds" and lang not in SPEECH_TEST
            ):  # the test language stays unheard
                speaker = f"{WORDS_PREFIX}{lang}"
                out.append(Candidate(p, "train", speaker, f"{speaker}/{p.stem}"))
        return out
    sources = [("train", MUSIC_TRAIN), ("test", MUSIC_TEST)]
    if midi_renderer() is not None:
        sources.append(("train", MUSIC_MIDI))
    else:
        print("prepare: fluidsynth or a GM soundfont is missing, so the MIDI songs are left out")
    for split, packages in sources:
        for package in packages:
            root = fetch_package(package, cache)
            for p in audio_files(root, midi=package in MUSIC_MIDI):
                rel = p.relative_to(root)
                only = MUSIC_ONLY_UNDER.get(package)
                if only is None or only in (part.lower() for part in rel.parts[:-1]):
                    name = f"{package}/{rel.with_suffix('').as_posix()}"
                    out.append(Candidate(p, split, name, name))
    return out


# ---- the command ----------------------------------------------------------------------------------
def _process_star(args: tuple) -> dict:
    return process(*args)


def prepare(
    out: Path,
    source: str | Path = "debian",
    kind: str = "speech",
    *,
    cache: Path | None = None,
    criteria: Criteria | None = None,
    sample_rate: int | None = None,
    test_speakers: Sequence[str] | None = None,
    test_fraction: float = 0.1,
    subtype: str = "PCM_16",
    min_files: int = 4,
    jobs: int = 1,
    progress: bool = True,
) -> dict:
    """Build OUT (WAVs + manifest.json); returns the manifest."""
    if kind not in KIND_RATES:
        raise ValueError(f"kind must be one of {', '.join(KIND_RATES)}, got {kind!r}")
    if subtype not in sf.available_subtypes("WAV"):
        raise ValueError(f"subtype {subtype!r} is not a WAV subtype; try PCM_16, PCM_24 or FLOAT")
    criteria = criteria or Criteria(min_seconds=0.5 if kind == "speech" else 10.0)
    sample_rate = sample_rate or KIND_RATES[kind]
    out = Path(out)
    if str(source) == "debian":
        cache = Path(cache) if cache is not None else Path.home() / ".cache" / "livesr" / "debian"
        candidates = debian_candidates(kind, cache)
        if len(candidates) < min_files:
            raise ValueError(
                f"the Debian packages for {kind} gave {len(candidates)} audio files; need {min_files}"
            )
    else:
        candidates = folder_candidates(Path(source), test_speakers, test_fraction, min_files)
    out.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    work = [(c, out, sample_rate, criteria, subtype) for c in candidates]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            results = list(
                tqdm(pool.map(_process_star, work, chunksize=8), total=len(work), disable=not progress)
            )
    else:
        results = [_process_star(w) for w in tqdm(work, desc="prepare", disable=not progress)]
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    skipped = Counter({r: 0 for r in SKIP_REASONS})
    for cand, res in zip(candidates, results):
        if "skip" in res:
            skipped[res["skip"]] += 1
        else:
            splits[cand.split].append(res)
    empty = [s for s, entries in splits.items() if not entries]
    if empty:
        raise ValueError(
            f"no usable file left in split(s) {empty} after checks (skipped: {dict(skipped)}); "
            f"criteria: codec cut >= {criteria.min_cut_hz:.0f} Hz, content >= {criteria.min_content_hz:.0f} Hz"
        )
    manifest = {
        "version": 1,
        "kind": kind,
        "sample_rate": sample_rate,
        "source": str(source),
        "criteria": asdict(criteria),
        "splits": splits,
        "skipped": dict(skipped),
        "seconds": {s: round(sum(e["seconds"] for e in v), 1) for s, v in splits.items()},
        "speakers": {s: sorted({e["speaker"] for e in v}) for s, v in splits.items()},
    }
    atomic_write(out / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1) + "\n"))
    return manifest


def summary(manifest: dict) -> str:
    sp, sec = manifest["speakers"], manifest["seconds"]
    lines = [
        f"{split}: {len(manifest['splits'][split])} files, {sec[split] / 60:.1f} min, "
        f"{len(sp[split])} speaker(s)/track(s)"
        for split in ("train", "test")
    ]
    skipped = ", ".join(f"{k} {v}" for k, v in manifest["skipped"].items())
    return "\n".join(lines + [f"skipped: {skipped}"])
