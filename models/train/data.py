"""Training examples from a prepared folder: deterministic crops, random gains and degradations.

Every example is a pure function of (seed, global example index g): which file (an epoch-wise
permutation of "slots", one slot per segment length of audio, so long tracks are drawn in proportion
to their length), where to crop, the gain and the degradation. A batch of step s holds examples
g = s * global_batch + rank * local_batch + i. So the data order needs no state beyond the step, a
resumed run sees exactly the batches the uninterrupted run saw, and the number of loader workers or
ranks never changes what a step trains on. With an `AugmentConfig`, the full-band window is coloured
(`augment.augment`, its own rng of (seed, g)) before the gain and the degradation: the target is the
augmented signal.

Splits are derived at read time (`models.train.splits.split_entries`), so existing manifests need no rebuild: "valid" is
every 10th clip of each speaker of the manifest's "train" split (settings are chosen on it, never on
"test"), "train" the rest, and speakers named in `hold_out` leave both for a "held_out" split.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .augment import AugmentConfig, augment
from .degrade import Degradation, DegradeConfig, apply, draw
from .splits import DERIVED_SPLITS, VALID_EVERY, load_manifest, split_entries

CONTEXT = 4096  # samples read on each side of a crop so filter edges fall outside it
GAIN_RANGE = (0.3, 0.95)  # peak level of a training segment
SILENT_PEAK = 1e-4  # segments quieter than this are left at their level rather than normalised


@dataclass(frozen=True)
class Clip:
    path: Path
    frames: int
    speaker: str


def clips(
    data_dir: Path,
    split: str,
    sample_rate: int,
    *,
    hold_out: Sequence[str] = (),
    valid_every: int = VALID_EVERY,
) -> list[Clip]:
    """The clips of `split` (see `split_entries`), checked against the model's `sample_rate`."""
    meta = load_manifest(data_dir)
    if int(meta["sample_rate"]) != sample_rate:
        raise ValueError(
            f"{data_dir} was prepared at {meta['sample_rate']} Hz but the model runs at {sample_rate} Hz; "
            f"prepare it again with the matching --kind"
        )
    entries = split_entries(meta, split, hold_out, valid_every)
    if not entries:
        have = sorted(set(meta["splits"]) | set(DERIVED_SPLITS))
        hint = (
            f" (it takes one in {valid_every} train clips of each speaker with >= 2 clips)"
            if split == "valid"
            else ""
        )
        raise ValueError(f"{data_dir}: split {split!r} is empty or missing{hint} (splits: {have})")
    return [Clip(Path(data_dir) / e["path"], int(e["frames"]), str(e["speaker"])) for e in entries]


class UnreadableAudio(ValueError):
    """A training file that cannot be read (missing, corrupt, or NaN/Inf samples)."""


def read_window(path: Path, start: int, length: int) -> np.ndarray:
    """Samples [start, start + length) of a mono file as float64, zeros outside the file.

    Raises UnreadableAudio when the file is missing, corrupt or holds non-finite samples."""
    out = np.zeros(length)
    try:
        with sf.SoundFile(str(path)) as f:
            lo, hi = max(0, start), min(f.frames, start + length)
            if hi > lo:
                f.seek(lo)
                data = f.read(hi - lo, dtype="float64", always_2d=True).mean(axis=1)
                out[lo - start : lo - start + data.size] = data
    except (OSError, RuntimeError) as err:  # libsndfile's errors are RuntimeErrors
        raise UnreadableAudio(f"{path}: {err}") from err
    if not np.isfinite(out).all():
        raise UnreadableAudio(f"{path}: non-finite samples")
    return out


def readable_clips(found: list[Clip]) -> tuple[list[Clip], list[str]]:
    """The clips whose files still open with the frame count the manifest recorded, and a reason
    for each one left out (a file removed or damaged after `prepare`)."""
    keep, dropped = [], []
    for clip in found:
        try:
            frames = sf.info(str(clip.path)).frames
        except (OSError, RuntimeError) as err:
            dropped.append(f"{clip.path}: {err}")
            continue
        if frames != clip.frames:
            dropped.append(f"{clip.path}: {frames} frames, the manifest says {clip.frames}")
        else:
            keep.append(clip)
    return keep, dropped


class SegmentSampler:
    """Example index -> (low-resolution input, target), both float32 `segment` samples at `sample_rate`."""

    def __init__(
        self,
        clips: list[Clip],
        sample_rate: int,
        segment: int,
        degrade: DegradeConfig,
        seed: int = 0,
        context: int = CONTEXT,
        augment: AugmentConfig | None = None,
    ) -> None:
        if not clips:
            raise ValueError("clips is empty: nothing to train on")
        if segment < 1:
            raise ValueError(f"segment must be >= 1 samples, got {segment}")
        if degrade.sample_rate != sample_rate:
            raise ValueError(
                f"degrade.sample_rate={degrade.sample_rate} differs from sample_rate={sample_rate}"
            )
        self.clips, self.sample_rate, self.segment = clips, sample_rate, segment
        self.degrade, self.seed, self.context = degrade, seed, context
        self.augment = augment
        slots = np.array([max(1, c.frames // segment) for c in clips])
        self._slot_clip = np.repeat(np.arange(len(clips)), slots)
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)
        self.unreadable: set[int] = set()  # indices of clips that failed to read

    @property
    def epoch_size(self) -> int:
        return int(self._slot_clip.size)

    def _order(self, epoch: int) -> np.ndarray:
        if self._epoch != epoch:  # examples run through epochs in order: one permutation is kept
            self._epoch = epoch
            self._perm = np.random.default_rng([self.seed, 0, epoch]).permutation(self.epoch_size)
        return self._perm

    def clip_index(self, g: int) -> int:
        epoch, pos = divmod(g, self.epoch_size)
        return int(self._slot_clip[self._order(epoch)[pos]])

    def example(self, g: int) -> tuple[np.ndarray, np.ndarray, Degradation]:
        """(lowres, target, degradation) of global example `g`.

        A file that fails to read is skipped (with a warning, once) for the next clip in the list, so
        a file damaged during a run costs its examples, never the run; which clip stands in depends
        only on which files are bad, so a resumed run still sees the same batches."""
        first = self.clip_index(g)
        for offset in range(len(self.clips)):
            index = (first + offset) % len(self.clips)
            if index in self.unreadable:
                continue
            try:
                return self._example(self.clips[index], g)
            except UnreadableAudio as err:
                self.unreadable.add(index)
                warnings.warn(
                    f"skipping unreadable training file ({len(self.unreadable)} so far): {err}", stacklevel=2
                )
        raise UnreadableAudio(f"none of the {len(self.clips)} training files can be read")

    def _example(self, clip: Clip, g: int) -> tuple[np.ndarray, np.ndarray, Degradation]:
        rng = np.random.default_rng([self.seed, 1, g])
        if clip.frames >= self.segment:
            start = int(rng.integers(0, clip.frames - self.segment + 1))
        else:  # a short clip lands at a random place inside the segment
            start = -int(rng.integers(0, self.segment - clip.frames + 1))
        window = read_window(clip.path, start - self.context, self.segment + 2 * self.context)
        if self.augment is not None:
            # Its own rng: the crop, gain and degradation stay those of the run without augmentation.
            window = augment(window, self.sample_rate, np.random.default_rng([self.seed, 2, g]), self.augment)
        core = window[self.context : self.context + self.segment]
        peak = float(np.max(np.abs(core))) if core.size else 0.0
        if peak > SILENT_PEAK:
            window = window * (rng.uniform(*GAIN_RANGE) / peak)
        d = draw(self.degrade, rng)
        lowres = apply(window, d, self.sample_rate)
        cut = slice(self.context, self.context + self.segment)
        return lowres[cut].astype(np.float32), window[cut].astype(np.float32), d

    def batch(
        self, step: int, batch: int, rank: int = 0, world: int = 1
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This rank's share of global batch `step`: (lowres, target), each (batch // world, segment),
        each example's low-pass cutoff in Hz (batch // world,), and where a host would know its band
        ends (the input rate's Nyquist frequency, or the same-rate cutoff), in Hz (batch // world,)."""
        if batch % world:
            raise ValueError(f"batch size {batch} must be divisible by the world size {world}")
        local = batch // world
        first = step * batch + rank * local
        examples = [self.example(first + i) for i in range(local)]
        cutoffs = np.array([d.cutoff_hz for _, _, d in examples], dtype=np.float32)
        # Where a host knows the band ends: the input's Nyquist frequency, or the same-rate cutoff.
        edges = np.array(
            [d.input_rate / 2 if d.input_rate < self.sample_rate else d.cutoff_hz for _, _, d in examples],
            dtype=np.float32,
        )
        return np.stack([e[0] for e in examples]), np.stack([e[1] for e in examples]), cutoffs, edges


class BatchStream(IterableDataset):
    """Yields (step, lowres, target, cutoffs, band edges) for steps start, start + 1, ...; loader workers
    interleave steps.

    With a DataLoader(batch_size=None, num_workers=W), worker w makes steps start + w, start + w + W,
    ... and the loader's round-robin hands them out in step order.
    """

    def __init__(
        self,
        sampler: SegmentSampler,
        batch: int,
        start: int,
        stop: int | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        super().__init__()
        self.sampler, self.batch, self.start, self.stop = sampler, batch, start, stop
        self.rank, self.world = rank, world

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        step = self.start + worker
        while self.stop is None or step < self.stop:
            arrays = self.sampler.batch(step, self.batch, self.rank, self.world)
            yield step, *(torch.from_numpy(a) for a in arrays)
            step += workers


def validation_segments(clips: list[Clip], segment: int, count: int) -> list[np.ndarray]:
    """Fixed crops for validation: the middle `segment` samples of `count` clips spread evenly over the
    split (clips at least a segment long first; shorter ones are zero-padded)."""
    ordered = sorted(clips, key=lambda c: (c.frames < segment, str(c.path)))
    long_enough = sum(c.frames >= segment for c in ordered) or len(ordered)
    pool = ordered[:long_enough] if long_enough >= count else ordered
    picks = [pool[i * len(pool) // count] for i in range(min(count, len(pool)))]
    return [read_window(c.path, (c.frames - segment) // 2, segment) for c in picks]
