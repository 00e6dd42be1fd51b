"""A prepared folder's manifest and its splits (torch-free: the evaluator reads them too).

The validation split and leave-one-source-out hold-outs are derived at read time, so prepared
folders need no rebuild.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

MANIFEST = "manifest.json"
VALID_EVERY = 10  # every 10th train clip of a speaker is for validation
DERIVED_SPLITS = ("train", "valid", "held_out")


def load_manifest(data_dir: Path) -> dict:
    """The manifest of a folder written by `python -m models.train prepare`."""
    path = Path(data_dir) / MANIFEST
    if not path.exists():
        raise ValueError(
            f"{data_dir} has no {MANIFEST}; build one with "
            f"`python -m models.train prepare --source FOLDER --out {data_dir}`"
        )
    meta = json.loads(path.read_text())
    if "splits" not in meta or "sample_rate" not in meta:
        raise ValueError(f"{path} is not a livesr manifest (missing 'splits' or 'sample_rate')")
    return meta


def split_entries(
    meta: dict, split: str, hold_out: Sequence[str] = (), valid_every: int = VALID_EVERY
) -> list[dict]:
    """The manifest entries of `split`, with the validation split derived at read time.

    - "valid": of each speaker of the manifest's "train" split with >= 2 clips, every `valid_every`-th
      clip by sorted path (the first included, so at least one); speakers with a single clip (a music
      track) are pooled and every `valid_every`-th of them (when there are >= 2) goes whole to "valid";
    - "train": the manifest's train split minus "valid", in manifest order;
    - "held_out": the train-split clips of the `hold_out` speakers, who leave "train" and "valid" (a
      name also holds out every speaker below it, e.g. a music package "ufoai-music" its tracks);
    - "test" (or any other stored split): as stored.

    `valid_every=0` derives no validation split ("train" is the whole stored train split, as runs made
    before the split existed trained). Which clips are "valid" does not depend on `hold_out`."""
    if valid_every < 0:
        raise ValueError(f"valid_every must be >= 0, got {valid_every}")
    stored = meta["splits"]
    if split not in DERIVED_SPLITS:
        return list(stored.get(split) or [])
    train = list(stored.get("train") or [])
    speakers = sorted({str(e["speaker"]) for e in train})
    # A name holds out that speaker, or every speaker below it ("ufoai-music": a package's tracks).
    names = [str(h).rstrip("/") for h in hold_out]
    held = {s for s in speakers if any(s == h or s.startswith(h + "/") for h in names)}
    unknown = sorted(h for h in names if not any(s == h or s.startswith(h + "/") for s in speakers))
    if unknown:
        shown = ", ".join(speakers[:12]) + (f", ... ({len(speakers)} in all)" if len(speakers) > 12 else "")
        raise ValueError(f"hold-out speaker(s) {unknown} are not in the train split; it has: {shown}")
    if held and held == set(speakers):
        raise ValueError(f"hold-out {sorted(names)} leaves no speaker to train on")
    if split == "held_out":
        return [e for e in train if str(e["speaker"]) in held]
    valid: set[str] = set()
    if valid_every > 0:
        by_speaker: dict[str, list[dict]] = {}
        for e in sorted(train, key=lambda e: str(e["path"])):
            by_speaker.setdefault(str(e["speaker"]), []).append(e)
        singles = [v[0] for v in by_speaker.values() if len(v) == 1]
        for v in by_speaker.values():
            if len(v) >= 2:
                valid.update(str(e["path"]) for e in v[::valid_every])
        if len(singles) >= 2:  # whole tracks: validation on tracks the model never trained on
            valid.update(str(e["path"]) for e in sorted(singles, key=lambda e: str(e["path"]))[::valid_every])
    want = split == "valid"
    return [e for e in train if str(e["speaker"]) not in held and (str(e["path"]) in valid) == want]
