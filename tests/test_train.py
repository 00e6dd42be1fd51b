"""Training pieces: degradation, data order, losses, discriminators, and a bit-exact resume."""

import csv
import dataclasses
import json
import math
import random
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import welch

from models.evaluate import alignment_lag
from models.registry import build_model, load_model
from models.train import degrade as dg
from models.train import trainer as trainer_module
from models.train.__main__ import main, parser, train_config
from models.train.augment import AugmentConfig
from models.train.data import (
    BatchStream,
    SegmentSampler,
    UnreadableAudio,
    clips,
)
from models.train.discriminators import Discriminators
from models.train.losses import (
    MultiResolutionSTFTLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
    given_band_loss,
    mel_filterbank,
)
from models.train.prepare import prepare
from models.train.splits import load_manifest, split_entries
from models.train.trainer import CONFIG, PRESETS, RunOptions, TrainConfig, Trainer, generator_spec, lr_factor

SR = 48000


def white(seconds: float, seed: int = 0, rate: int = SR) -> np.ndarray:
    return 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate))


def band_db(x: np.ndarray, lo: float, hi: float, rate: int = SR) -> float:
    """Mean power in [lo, hi) Hz (Welch, Hann: no rectangular-window leakage from the clip's ends)."""
    f, p = welch(x, rate, nperseg=4096)
    return 10 * math.log10(p[(f >= lo) & (f < hi)].mean() + 1e-30)


# ---- degradation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", dg.FAMILIES)
@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_every_family_band_limits_to_the_input_rate_aligned(family, rate):
    x = white(0.5, seed=rate)
    d = dg.Degradation(rate, 0.92 * rate / 2, family, order=6, soxr_quality="HQ")
    y = dg.apply(x, d, SR)
    nyq = rate / 2
    assert y.shape == x.shape
    assert abs(band_db(y, 100, 0.6 * nyq) - band_db(x, 100, 0.6 * nyq)) < 1.5  # the kept band is kept
    assert (
        band_db(y, 1.05 * nyq, SR / 2) - band_db(x, 1.05 * nyq, SR / 2) < -60
    )  # the live resampler's stopband
    assert alignment_lag(x, y, SR, 0.5 * nyq, max_lag=256) == 0


@pytest.mark.parametrize("family", dg.FAMILIES)
def test_same_rate_mode_cuts_without_a_rate_change(family):
    x = white(0.5, seed=1)
    d = dg.Degradation(SR, 6000.0, family, order=2)  # the softest filters
    y = dg.apply(x, d, SR)
    assert abs(band_db(y, 100, 3000) - band_db(x, 100, 3000)) < 1.0
    assert band_db(y, 12000, 14000) - band_db(x, 12000, 14000) < -10
    assert alignment_lag(x, y, SR, 3000, max_lag=256) == 0


def test_draw_is_seeded_and_covers_the_preset():
    cfg = dg.DegradeConfig(SR, (8000, 12000, 16000, 24000), same_rate_prob=0.2, mp3_prob=0.1)
    first = [dg.draw(cfg, np.random.default_rng([7, g])) for g in range(400)]
    again = [dg.draw(cfg, np.random.default_rng([7, g])) for g in range(400)]
    assert first == again
    assert {d.family for d in first} == set(dg.FAMILIES)
    assert {d.input_rate for d in first} == {8000, 12000, 16000, 24000, SR}
    assert {d.order for d in first} == set(range(2, 11))
    same = [d for d in first if d.input_rate == SR]
    assert 0.1 < len(same) / len(first) < 0.3
    assert all(4000 <= d.cutoff_hz <= 16000 for d in same)
    assert all(0.85 * d.input_rate / 2 <= d.cutoff_hz <= d.input_rate / 2 for d in first if d.input_rate < SR)
    assert any(d.mp3_level is not None for d in first) == dg.mp3_available()


@pytest.mark.skipif(not dg.mp3_available(), reason="libsndfile without MP3 encoding")
def test_mp3_round_trip_keeps_length_and_alignment():
    x = white(1.0, seed=2)
    y = dg.mp3_roundtrip(x, SR, 0.7)
    assert y.shape == x.shape
    assert alignment_lag(x, y, SR, 4000, max_lag=2048) == 0
    assert band_db(y, 18000, 20000) - band_db(x, 18000, 20000) < -20  # the encoder's low-pass


def test_degrade_config_errors_name_the_argument():
    with pytest.raises(ValueError, match="input_rates must lie below sample_rate=48000"):
        dg.DegradeConfig(SR, (48000,))
    with pytest.raises(ValueError, match="families must be a non-empty subset"):
        dg.DegradeConfig(SR, (16000,), families=("sinc",))
    with pytest.raises(ValueError, match="mp3_prob must be a probability"):
        dg.DegradeConfig(SR, (16000,), mp3_prob=1.5)


# ---- losses and discriminators --------------------------------------------------------------------
def test_mel_filterbank_has_unit_area_filters_in_order():
    bank = mel_filterbank(SR, 2048, 64).double()
    df = SR / 2048
    areas = bank.sum(dim=1) * df
    assert torch.allclose(areas[8:], torch.ones_like(areas[8:]), rtol=0.05)  # low filters are only a few bins
    peaks = bank.argmax(dim=1)
    assert bool((peaks[1:] >= peaks[:-1]).all()) and peaks[-1] > peaks[0]


def test_stft_losses_vanish_on_the_target_and_grow_with_the_error():
    ref = torch.from_numpy(white(0.2, seed=3)).float()[None]
    for loss in (
        MultiResolutionSTFTLoss([(512, 128, 512), (1024, 256, 1024)]),
        MultiResolutionSTFTLoss([(1024, 256, 1024)], 64, SR),
    ):
        noise = torch.from_numpy(white(0.2, seed=4)).float()[None]
        values = [float(loss(ref + a * noise, ref)) for a in (0.0, 0.1, 0.5)]
        assert values[0] == 0.0 and 0 < values[1] < values[2]


def test_given_band_loss_sees_phase_below_the_cutoff_only():
    ref = torch.from_numpy(white(0.2, seed=5)).float()[None].repeat(2, 1)
    cutoffs = torch.tensor([4000.0, 8000.0])
    assert float(given_band_loss(ref, ref, cutoffs, SR)) == 0.0
    assert float(given_band_loss(0.9 * ref, ref, cutoffs, SR)) == pytest.approx(0.01, rel=1e-4)
    assert float(given_band_loss(-ref, ref, cutoffs, SR)) == pytest.approx(4.0, rel=1e-4)  # phase counts
    t = torch.arange(ref.shape[1]) / SR
    tone = torch.sin(2 * np.pi * 12000 * t) * torch.hann_window(t.numel())  # faded: no edge clicks
    assert float(given_band_loss(ref + tone, ref, cutoffs, SR)) < 1e-5  # far above both cutoffs
    with pytest.raises(ValueError, match="cutoff_hz"):
        given_band_loss(ref, ref, cutoffs[:1], SR)


def test_adversarial_losses_by_hand():
    real, fake = [torch.tensor([1.0, 0.5])], [torch.tensor([0.0, -2.0])]
    assert float(discriminator_loss(real, fake, "lsgan")) == pytest.approx((0 + 0.25) / 2 + (0 + 4) / 2)
    assert float(discriminator_loss(real, fake, "hinge")) == pytest.approx((0 + 0.5) / 2 + (1 + 0) / 2)
    assert float(generator_loss(fake, "lsgan")) == pytest.approx((1 + 9) / 2)
    assert float(generator_loss(fake, "hinge")) == pytest.approx(1.0)
    feats_r = [[torch.zeros(3), torch.ones(2)]]
    feats_f = [[torch.ones(3), torch.ones(2)]]
    assert float(feature_matching_loss(feats_r, feats_f)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="adversarial loss must be one of"):
        generator_loss(fake, "wgan")


def test_discriminators_give_one_output_per_sub_discriminator():
    d = Discriminators(["mpd", "msd", "melgan"], width=1 / 32)
    logits, feats = d(torch.randn(2, 4001))  # odd length: MPD pads to a multiple of each period
    assert len(logits) == 5 + 3 + 3 and len(feats) == len(logits)
    assert all(y.shape[0] == 2 and y.dim() == 2 for y in logits)
    assert [len(f) for f in feats[:5]] == [6] * 5  # 5 convs + the output conv per period discriminator
    with pytest.raises(ValueError, match="discriminator kinds"):
        Discriminators(["wavenet"])


def test_lr_warmup_then_halving():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100) == 1.0
    assert lr_factor(110, 10, 100) == pytest.approx(0.5)


# ---- data and the trainer ---------------------------------------------------------------------------
TINY = {
    "family": "wave-u-mamba",
    "preset": "tiny",
    "config": {
        "channels": [4, 8],
        "final_channels": 4,
        "down_mambas": [0, 1],
        "bottleneck_mambas": 1,
        "up_kernels": [4, 4],
        "up_mambas": [1, 0],
        "d_state": 4,
        "causal": True,
        "noise_bands": 2,  # the excitation draws random start positions: resume must restore them
        "level_hop": 4,
        "level_window": 64,
    },
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A prepared speech folder: two readers of full-band sweeps + noise (ann trains: 3 train + 1 valid
    clips; ben is the test reader)."""
    root = tmp_path_factory.mktemp("train")
    src = root / "src"
    rate = 44100
    t = np.arange(int(0.6 * rate)) / rate
    for s, speaker in enumerate(("ann", "ben")):
        (src / speaker).mkdir(parents=True)
        for i in range(4):
            sweep = 0.3 * np.sin(2 * np.pi * (100 + 3000 * (i + 1) * t) * t)
            x = sweep + 0.03 * np.random.default_rng(10 * s + i).standard_normal(t.size)
            sf.write(src / speaker / f"{speaker}_{i}.wav", x, rate)
    prepare(root / "data", src, "speech", progress=False)
    return root / "data"


def tiny_config(**changes):
    base = dataclasses.replace(
        PRESETS["speech"],
        generator_spec=TINY,
        segment_seconds=0.05,
        batch_size=2,
        discriminators=("mpd",),
        disc_width=1 / 32,
        adv_start=1,
        ema_decay=0.9,
        mp3_prob=0.0,
        mel_resolutions=((512, 128, 512),),
        mel_bins=32,
        stft_scale=0.25,
    )
    return dataclasses.replace(base, **changes)


def options(steps: int, **kw) -> RunOptions:
    return RunOptions(
        max_steps=steps, num_workers=0, log_every=1, checkpoint_every=100, eval_every=0, progress=False, **kw
    )


def test_examples_are_a_function_of_seed_and_index(data_dir):
    cfg = dg.DegradeConfig(SR, (8000, 16000))
    sampler = SegmentSampler(clips(data_dir, "train", SR), SR, 2400, cfg, seed=3)
    lr1, hr1, d1 = sampler.example(5)
    lr2, hr2, d2 = SegmentSampler(clips(data_dir, "train", SR), SR, 2400, cfg, seed=3).example(5)
    assert np.array_equal(lr1, lr2) and np.array_equal(hr1, hr2) and d1 == d2
    assert 0.3 <= np.max(np.abs(hr1)) <= 0.95 + 1e-6  # normalised to a random peak level
    full_lr, full_hr, cutoffs, edges = sampler.batch(4, 4)
    drawn = [sampler.example(16 + i)[2] for i in range(4)]
    assert cutoffs.tolist() == [np.float32(d.cutoff_hz) for d in drawn]
    assert edges.tolist() == [np.float32(d.input_rate / 2) for d in drawn]  # where a host knows the band ends
    halves = [sampler.batch(4, 4, rank=r, world=2) for r in (0, 1)]
    assert np.array_equal(
        np.concatenate([h[0] for h in halves]), full_lr
    )  # ranks split the same global batch
    # an epoch visits every clip once per segment length of audio it holds
    counts = np.bincount(
        [sampler.clip_index(g) for g in range(sampler.epoch_size)], minlength=len(sampler.clips)
    )
    assert counts.tolist() == [c.frames // 2400 for c in sampler.clips]


def test_a_file_damaged_during_a_run_is_skipped_once_and_deterministically(data_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    cfg = dg.DegradeConfig(SR, (8000, 16000))
    samplers = [SegmentSampler(clips(data, "train", SR), SR, 2400, cfg, seed=2) for _ in range(2)]
    bad = samplers[0].clips[1].path
    bad.write_bytes(b"RIFF, then nothing a decoder can use")
    with pytest.warns(UserWarning, match="skipping unreadable training file") as caught:
        first = [samplers[0].example(g) for g in range(samplers[0].epoch_size)]
    assert len(caught) == 1  # reported once, not at every example
    assert samplers[0].unreadable == {1}
    with pytest.warns(UserWarning):
        second = [samplers[1].example(g) for g in range(samplers[1].epoch_size)]
    for (lr1, hr1, d1), (lr2, hr2, d2) in zip(first, second, strict=True):
        assert np.array_equal(lr1, lr2) and np.array_equal(hr1, hr2) and d1 == d2
    for c in samplers[0].clips:
        c.path.write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(UnreadableAudio, match="none of the"):
        SegmentSampler(clips(data, "train", SR), SR, 2400, cfg, seed=2).example(0)


def test_fit_skips_training_files_damaged_after_prepare(data_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    broken = clips(data, "train", SR)
    broken[0].path.unlink()
    sf.write(broken[1].path, np.full(100, np.nan), SR, subtype="FLOAT")  # readable, wrong length, NaN
    trainer = Trainer(tiny_config(), data, tmp_path / "run", options(2))
    assert "skipping 2 unreadable training file(s)" in capsys.readouterr().err
    assert [c.path for c in trainer.sampler.clips] == [c.path for c in broken[2:]]
    assert trainer.fit() == 2
    for c in broken[2:]:
        c.path.unlink()
    with pytest.raises(ValueError, match="no training file can be read"):
        Trainer(tiny_config(), data, tmp_path / "run2", options(1))


def test_loader_workers_deliver_steps_in_order(data_dir):
    sampler = SegmentSampler(
        clips(data_dir, "train", SR), SR, 2400, dg.DegradeConfig(SR, (8000, 16000)), seed=1
    )
    loader = torch.utils.data.DataLoader(
        BatchStream(sampler, 2, start=5, stop=9), batch_size=None, num_workers=2
    )
    got = list(loader)
    assert [int(step) for step, *_ in got] == [5, 6, 7, 8]
    for step, *tensors in got:
        want = sampler.batch(int(step), 2)
        assert all(np.array_equal(t.numpy(), w) for t, w in zip(tensors, want, strict=True))


def _run(data_dir, out, steps, cfg=None):
    trainer = Trainer(cfg or tiny_config(), data_dir, out, options(steps, command="test"))
    trainer.fit()
    return trainer


def _rows(path):
    with path.open() as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(data_dir, tmp_path):
    whole = _run(data_dir, tmp_path / "whole", 4)
    _run(data_dir, tmp_path / "split", 2)
    # Disturb every global RNG: the checkpoint must restore them.
    torch.manual_seed(1234)
    np.random.seed(99)
    random.seed(5)
    resumed = _run(data_dir, tmp_path / "split", 4)
    assert whole.step == resumed.step == 4
    pairs = [
        (whole.generator.state_dict(), resumed.generator.state_dict()),
        (whole.discriminators.state_dict(), resumed.discriminators.state_dict()),
        (whole.ema.module.state_dict(), resumed.ema.module.state_dict()),
    ]
    for a, b in pairs:
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    for opt_a, opt_b in ((whole.opt_g, resumed.opt_g), (whole.opt_d, resumed.opt_d)):
        sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
    assert _rows(tmp_path / "whole" / "train.csv") == _rows(tmp_path / "split" / "train.csv")
    gen, ema = whole.generator.state_dict(), whole.ema.module.state_dict()
    assert any(not torch.equal(gen[k], ema[k]) for k in gen)  # the EMA copy is an average, not the generator


def test_export_loads_through_the_registry(data_dir, tmp_path):
    trainer = _run(data_dir, tmp_path / "run", 1)
    meta = json.loads((tmp_path / "run" / "generator.json").read_text())
    assert meta["training"]["steps"] == 1 and meta["training"]["command"] == "test"
    model = load_model(tmp_path / "run" / "generator.safetensors")
    x = torch.randn(1, 64)
    with torch.no_grad():
        assert torch.equal(model(x), trainer.ema.module.eval()(x))


def test_init_fine_tunes_from_weights_without_a_new_head(data_dir, tmp_path):
    plain = {**TINY, "config": {**TINY["config"], "noise_bands": 0}}
    _run(data_dir, tmp_path / "plain", 1, tiny_config(generator_spec=plain))
    weights = tmp_path / "plain" / "generator.safetensors"
    trainer = Trainer(tiny_config(init=str(weights)), data_dir, tmp_path / "tuned", options(1))
    loaded = load_model(weights).state_dict()
    tuned = trainer.generator.state_dict()
    assert all(torch.equal(tuned[k], v) for k, v in loaded.items())
    assert {k for k in tuned if k not in loaded} == {k for k in tuned if k.startswith("noise_head.")}
    # the other way round, a tensor the generator lacks is refused
    _run(data_dir, tmp_path / "noisy", 1)
    with pytest.raises(ValueError, match="does not have: noise_head"):
        Trainer(
            tiny_config(generator_spec=plain, init=str(tmp_path / "noisy" / "generator.safetensors")),
            data_dir,
            tmp_path / "bad",
            options(1),
        )


def test_checkpoint_of_an_older_config_version_still_loads(data_dir, tmp_path):
    _run(data_dir, tmp_path / "run", 1)
    path = tmp_path / "run" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    del ckpt["generator_spec"]["config"]["level_offset_db"]  # a field added after the run was made
    torch.save(ckpt, path)
    trainer = Trainer(tiny_config(), data_dir, tmp_path / "run", options(1))
    trainer.load_checkpoint()
    assert trainer.step == 1


def test_max_minutes_stops_and_exports(data_dir, tmp_path):
    opts = dataclasses.replace(options(None), max_minutes=0.0)  # the budget is spent after one step
    trainer = Trainer(tiny_config(), data_dir, tmp_path / "run", opts)
    assert trainer.fit() == 1
    assert {"generator.safetensors", "checkpoint.pt"} <= {p.name for p in (tmp_path / "run").iterdir()}


def test_checkpoint_restores_the_global_rngs(data_dir, tmp_path):
    trainer = Trainer(tiny_config(), data_dir, tmp_path / "run", options(1))
    trainer.save_checkpoint()

    def draws():
        return torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)]

    first = draws()
    trainer.load_checkpoint()
    second = draws()
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]


def test_resume_with_other_settings_is_refused(data_dir, tmp_path):
    _run(data_dir, tmp_path / "run", 1)
    with pytest.raises(ValueError, match=r"different settings \(batch_size\)"):
        _run(data_dir, tmp_path / "run", 2, tiny_config(batch_size=4))


def test_fit_cli_help_and_errors(data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = capsys.readouterr().out
    assert "bit for bit" in text and "torchrun" in text and "--max-minutes" in text
    assert main(["fit", "--data", str(data_dir), "--out", str(tmp_path / "r")]) == 2
    assert "give --max-steps and/or --max-minutes" in capsys.readouterr().err
    assert main(["fit", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--max-steps", "1"]) == 2
    assert "has no manifest.json" in capsys.readouterr().err


# ---- splits: validation and held-out speakers --------------------------------------------------------
def _manifest(train: dict[str, int], test: dict[str, int]) -> dict:
    """A manifest dict with `n` clips per speaker (paths out of order, as a manifest may list them)."""

    def entries(split, speakers):
        found = [
            {"path": f"{split}/{s}/{s}_{i:02d}.wav", "speaker": s, "frames": 1000}
            for s, n in speakers.items()
            for i in range(n)
        ]
        return found[::-1]

    return {"sample_rate": SR, "splits": {"train": entries("train", train), "test": entries("test", test)}}


def _paths(entries):
    return [e["path"] for e in entries]


def test_split_entries_derive_a_validation_split_per_speaker():
    tracks = {f"track{i:02d}": 1 for i in range(12)}  # music: one clip per track
    meta = _manifest({"fr": 25, "ru": 2, "be": 1, **tracks}, {"es": 3})
    stored = _paths(meta["splits"]["train"])
    train, valid = _paths(split_entries(meta, "train")), _paths(split_entries(meta, "valid"))
    assert not set(train) & set(valid) and sorted(train + valid) == sorted(stored)
    assert train == [p for p in stored if p not in valid]  # manifest order kept
    by = {s: [p for p in valid if f"/{s}/" in p] for s in ("fr", "ru")}
    assert by["fr"] == ["train/fr/fr_20.wav", "train/fr/fr_10.wav", "train/fr/fr_00.wav"]  # one in 10
    assert by["ru"] == ["train/ru/ru_00.wav"]  # at least one of a speaker with >= 2 clips
    singles = [p for p in valid if "/fr/" not in p and "/ru/" not in p]
    assert singles == ["train/track09/track09_00.wav", "train/be/be_00.wav"]  # whole one-clip speakers
    assert split_entries(meta, "test") == meta["splits"]["test"]
    shuffled = {
        **meta,
        "splits": {
            **meta["splits"],
            "train": meta["splits"]["train"][::3]
            + meta["splits"]["train"][1::3]
            + meta["splits"]["train"][2::3],
        },
    }
    assert sorted(_paths(split_entries(shuffled, "valid"))) == sorted(valid)  # by path, not by listing order
    assert _paths(split_entries(meta, "train", valid_every=0)) == stored  # runs made before the split
    assert split_entries(meta, "valid", valid_every=0) == []


def test_hold_out_moves_speakers_out_of_train_and_valid():
    meta = _manifest({"fr": 12, "ru": 5, "be": 4}, {"es": 2})
    valid = _paths(split_entries(meta, "valid"))
    train = split_entries(meta, "train", hold_out=["ru"])
    held = split_entries(meta, "held_out", hold_out=["ru"])
    assert {e["speaker"] for e in train} == {"fr", "be"}
    assert _paths(split_entries(meta, "valid", hold_out=["ru"])) == [p for p in valid if "/ru/" not in p]
    assert sorted(_paths(held)) == [f"train/ru/ru_{i:02d}.wav" for i in range(5)]  # its valid clip too
    assert split_entries(meta, "held_out") == []
    assert split_entries(meta, "test", hold_out=["ru"]) == meta["splits"]["test"]
    with pytest.raises(ValueError, match=r"hold-out speaker\(s\) \['es'\] are not in the train split"):
        split_entries(meta, "train", hold_out=["es"])
    music = _manifest({"pkg-a/t1": 1, "pkg-a/t2": 1, "pkg-b/t1": 1}, {"pkg-c/t1": 1})
    assert _paths(split_entries(music, "held_out", hold_out=["pkg-a"])) == [
        "train/pkg-a/t2/pkg-a/t2_00.wav",
        "train/pkg-a/t1/pkg-a/t1_00.wav",
    ]  # a package holds out its tracks
    assert {e["speaker"] for e in split_entries(music, "train", hold_out=["pkg-a"])} <= {"pkg-b/t1"}
    with pytest.raises(ValueError, match="leaves no speaker to train on"):
        split_entries(meta, "train", hold_out=["fr", "ru", "be"])


def test_clips_reads_the_derived_splits(data_dir):
    stored = {e["path"] for e in load_manifest(data_dir)["splits"]["train"]}
    train, valid = clips(data_dir, "train", SR), clips(data_dir, "valid", SR)
    assert len(train) == 3 and len(valid) == 1
    assert {str(c.path.relative_to(data_dir)) for c in train + valid} == stored
    assert len(clips(data_dir, "train", SR, valid_every=0)) == 4
    assert {c.speaker for c in clips(data_dir, "test", SR)} == {"ben"}
    with pytest.raises(ValueError, match="split 'held_out' is empty"):
        clips(data_dir, "held_out", SR)


def _relabelled(data_dir, tmp_path):
    """A copy of data_dir whose last train clip belongs to a second reader, cat."""
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    meta = load_manifest(data)
    cat = max(meta["splits"]["train"], key=lambda e: e["path"])
    cat["speaker"] = "cat"
    (data / "manifest.json").write_text(json.dumps(meta))
    return data, cat["path"]


def test_trainer_holds_out_speakers_augments_and_validates_on_valid(data_dir, tmp_path, monkeypatch):
    data, cat = _relabelled(data_dir, tmp_path)
    trainer = Trainer(tiny_config(hold_out=("cat",)), data, tmp_path / "run", options(1))
    assert {c.speaker for c in trainer.sampler.clips} == {"ann"}
    assert all(not str(c.path).endswith(cat) for c in trainer.sampler.clips)
    assert trainer.sampler.augment == AugmentConfig()
    assert Trainer(tiny_config(augment=False), data, tmp_path / "off", options(1)).sampler.augment is None
    seen = []
    monkeypatch.setattr(
        trainer_module, "validation_segments", lambda found, segment, count: seen.extend(found) or []
    )
    monkeypatch.setattr(Trainer, "validate", lambda self, segments: [])
    trainer.opt = dataclasses.replace(trainer.opt, eval_every=1)
    assert trainer.fit() == 1
    valid = [e["path"] for e in split_entries(load_manifest(data), "valid", ["cat"])]
    assert len(valid) == 1 and [str(c.path.relative_to(data)) for c in seen] == valid  # not test, not cat


def test_fit_cli_no_augment_and_hold_out_are_fixed_for_the_run(data_dir, tmp_path):
    out = tmp_path / "run"
    base = ["fit", "--data", str(data_dir), "--out", str(out), "--max-steps", "1"]
    cfg = train_config(parser().parse_args([*base, "--no-augment", "--hold-out", "ru", "fr"]))
    assert cfg.augment is False and cfg.hold_out == ("fr", "ru")
    assert train_config(parser().parse_args(base)).augment is True
    out.mkdir()
    (out / CONFIG).write_text(json.dumps(cfg.to_dict()))
    assert train_config(parser().parse_args(base)) == cfg  # resumed: the run's own settings
    assert train_config(parser().parse_args([*base, "--hold-out", "fr", "ru"])) == cfg
    with pytest.raises(ValueError, match=r"other values of \['hold_out'\]"):
        train_config(parser().parse_args([*base, "--hold-out", "fr"]))


def test_fit_cli_level_fit_replaces_the_rule_of_the_preset_or_a_given_config(data_dir, tmp_path):
    fit = tmp_path / "level.json"
    fit.write_text(json.dumps({"level_shape": [[1000.0, 0.0], [8000.0, -20.0]], "level_offset_db": -4.5}))
    base = ["fit", "--data", str(data_dir), "--out", str(tmp_path / "run"), "--level-fit", str(fit)]
    spec = train_config(parser().parse_args(base)).generator_spec
    preset = generator_spec(build_model("speech")).get("config")
    assert spec["config"]["level_offset_db"] == -4.5 and spec["config"]["level_shape"][1] == [8000.0, -20.0]
    assert {k: v for k, v in spec["config"].items() if not k.startswith("level_")} == {
        k: v for k, v in preset.items() if not k.startswith("level_")
    }
    custom = tmp_path / "gen.json"
    custom.write_text(json.dumps(TINY))
    spec = train_config(parser().parse_args([*base, "--generator-config", str(custom)])).generator_spec
    assert (
        spec["config"]["channels"] == TINY["config"]["channels"] and spec["config"]["level_offset_db"] == -4.5
    )
    with pytest.raises(ValueError, match="no level rule"):
        train_config(parser().parse_args([*base, "--generator", "mambawave-paper"]))
    fit.write_text(json.dumps({"level_offset_db": 1.0}))
    with pytest.raises(ValueError, match="lacks level_shape"):
        train_config(parser().parse_args(base))


def test_a_config_saved_before_augmentation_and_the_split_resumes_as_it_ran(data_dir, tmp_path):
    old = tiny_config().to_dict()
    for key in ("augment", "valid_every", "hold_out"):
        del old[key]
    cfg = TrainConfig.from_dict(old)
    assert (cfg.augment, cfg.valid_every, cfg.hold_out) == (False, 0, ())
    trainer = Trainer(cfg, data_dir, tmp_path / "run", options(1))
    assert trainer.sampler.augment is None and len(trainer.sampler.clips) == 4  # the whole train split


TINY_DIFFUSION = {
    "family": "mambawave",
    "preset": "tiny-mambawave",
    "config": {
        "channels": 4,
        "layers": 2,
        "d_state": 4,
        "step_embed_dim": 8,
        "step_hidden": 16,
        "noise_bands": 2,
    },
}


def test_a_diffusion_generator_trains_on_its_noise_loss_and_resumes_bit_for_bit(data_dir, tmp_path):
    cfg = dataclasses.replace(
        PRESETS["mambawave"], generator_spec=TINY_DIFFUSION, segment_seconds=0.05, batch_size=2, mp3_prob=0.0
    )
    whole = _run(data_dir, tmp_path / "whole", 4, cfg)
    _run(data_dir, tmp_path / "split", 2, cfg)
    torch.manual_seed(1234)  # the checkpoint must restore the RNG that draws t and the noise
    resumed = _run(data_dir, tmp_path / "split", 4, cfg)
    a, b = whole.generator.state_dict(), resumed.generator.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = _rows(tmp_path / "whole" / "train.csv")
    assert rows == _rows(tmp_path / "split" / "train.csv")
    assert all(0.0 < float(r["loss_g"]) < math.inf and r["stft"] == "" for r in rows)  # epsilon-MSE only
    assert a["denoiser.eps_out.weight"].abs().sum() > 0  # the zero-initialised head has moved
    model = load_model(tmp_path / "whole" / "generator.safetensors")
    assert type(model).__name__ == "MambaWave" and model.config.noise_bands == 2
    with pytest.raises(ValueError, match="noise-prediction loss alone"):
        Trainer(dataclasses.replace(cfg, discriminators=("mpd",)), data_dir, tmp_path / "gan", options(1))
