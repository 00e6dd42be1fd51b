"""`python -m models.train {prepare,fit,export}`: data sets, training runs, weights export."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

PROG = "python -m models.train"

FIT_HELP = """\
Train a generator with the GAN recipe of a preset on a prepared folder (see `prepare`).

Each step crops segments of --segment-seconds from the train split, randomly colours the full-band
crop (spectral tilt, peaking EQ, a mild room, microphone low-cut/shelf, low-level noise; --no-augment:
off) so the model cannot memorise how bright the few training voices are, draws a random degradation
per segment (input rate from the preset's list or a same-rate cutoff, filter family and order,
optional MP3 round trip), brings it back to the model rate with the live path's resampler and
trains the generator to restore the target: multi-resolution STFT + mel-STFT losses, plus
adversarial and feature-matching losses against the preset's discriminators.

RUN_DIR gets: config.json, checkpoint.pt (resumable bit for bit), train.csv (losses),
valid.csv (LSD / LSD-HF of input, noisefill and model on crops of the validation split: one in 10
train clips of each speaker, never trained on and never the reported test split; per input rate)
and, at the end, generator.safetensors + generator.json (loadable with
`models.registry.load_model(PATH)`, `python -m models.evaluate --model PATH`).

Running `fit` again on the same RUN_DIR resumes from its checkpoint; the settings must be the
ones it was started with (only run-length, device and logging options may change). Multi-GPU:
`torchrun --nproc-per-node N -m models.train fit ... --device cuda` (the batch is split over ranks).

presets:
  speech  Wave-U-Mamba compact, 48 kHz; inputs 8/12/16/24 kHz; MPD + MSD, LSGAN; 1 s x 16
  music   AEROMamba compact, 44.1 kHz; inputs 11.025/22.05 kHz + same-rate 4-16 kHz cutoffs;
          MelGAN multi-scale, hinge; 2 s x 8
  mambawave  MambaWave small, 48 kHz; inputs 8/12/16/24 kHz; the denoiser on epsilon-MSE (a
          diffusion model: no discriminators, one process); 0.25 s x 8
"""


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="build a train/test folder from audio files or Debian packages",
        description=(
            "Downmix to mono, resample (soxr) to 44.1 kHz (music) or 48 kHz (speech), keep files whose codec "
            "cut and content reach the thresholds, split by speaker/track and write WAVs + manifest.json."
        ),
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--source",
        default="debian",
        help="'debian' or a folder of wav/flac/ogg/opus/mp3 files (and .mid, rendered with fluidsynth)",
    )
    p.add_argument("--kind", default="speech", choices=("speech", "music"))
    p.add_argument(
        "--cache", type=Path, help="where Debian packages are kept (default ~/.cache/livesr/debian)"
    )
    p.add_argument("--test-speakers", nargs="+", help="folder source: speakers for the test split")
    p.add_argument(
        "--test-fraction", type=float, default=0.1, help="folder source: share of speakers in test"
    )
    p.add_argument("--min-cut-hz", type=float, default=19000.0)
    p.add_argument("--min-content-hz", type=float, default=17000.0)
    p.add_argument("--min-seconds", type=float, help="shortest file kept (default 0.5 speech, 10 music)")
    p.add_argument("--min-files", type=int, default=4, help="fail up front with fewer audio files than this")
    p.add_argument("--subtype", default="PCM_16", help="WAV sample format: PCM_16, PCM_24, FLOAT")
    p.add_argument("--jobs", type=int, default=1, help="worker processes")


def _add_fit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit",
        help="train a generator",
        description=FIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset", default="speech", choices=("speech", "music", "mambawave"), help="training recipe"
    )
    p.add_argument("--data", required=True, type=Path, help="folder made by `prepare` (manifest.json)")
    p.add_argument("--out", required=True, type=Path, help="run folder (RUN_DIR)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in RUN_DIR")
    g = p.add_argument_group("run length and hardware (may change between a run and its resume)")
    g.add_argument("--max-steps", type=int, help="stop at this total step count")
    g.add_argument("--max-minutes", type=float, help="stop after this many minutes of this run")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    g.add_argument("--num-workers", type=int, default=2, help="data loader processes")
    g.add_argument("--log-every", type=int, default=50)
    g.add_argument("--checkpoint-every", type=int, default=1000)
    g.add_argument("--eval-every", type=int, default=2000, help="validation interval in steps (0: never)")
    g.add_argument("--eval-clips", type=int, default=8)
    g.add_argument("--no-progress", action="store_true")
    s = p.add_argument_group("training settings (default: the preset's; fixed for the life of a run)")
    s.add_argument("--generator", help="registry preset of the generator (e.g. speech, wave-u-mamba-paper)")
    s.add_argument(
        "--generator-config", type=Path, help='JSON {"family": ..., "config": {...}}: a custom generator'
    )
    s.add_argument(
        "--level-fit",
        type=Path,
        help="JSON of `fit-level --json`: its level_shape and level_offset_db replace the generator's",
    )
    s.add_argument("--segment-seconds", type=float)
    s.add_argument("--batch-size", type=int)
    s.add_argument("--lr", type=float)
    s.add_argument("--warmup-steps", type=int, help="linear learning-rate warm-up (default 1000 steps)")
    s.add_argument("--ema", type=float, dest="ema_decay", help="EMA decay of the generator (0: off)")
    s.add_argument("--adv-start", type=int, help="reconstruction-only steps before the discriminators join")
    s.add_argument("--disc-width", type=float, help="discriminator channel multiplier")
    s.add_argument("--no-discriminators", action="store_true", help="reconstruction losses only")
    s.add_argument("--input-rates", type=int, nargs="+")
    s.add_argument("--mp3-prob", type=float)
    s.add_argument("--same-rate-prob", type=float)
    s.add_argument(
        "--no-augment", action="store_true", help="train on the targets as recorded (no random colouring)"
    )
    s.add_argument(
        "--hold-out",
        nargs="+",
        metavar="SPEAKER",
        help="train-split speakers to leave out of training and validation (leave-one-source-out)",
    )
    s.add_argument("--seed", type=int)
    s.add_argument("--init", help="start from these generator weights (.safetensors): fine-tuning")
    s.add_argument("--w-band", type=float, dest="w_band", help="weight of the given-band (phase-aware) loss")
    s.add_argument(
        "--scan-backend", help="selective-scan backend: auto, chunked, triton, mamba_ssm, reference"
    )


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the generator of a run's checkpoint")
    p.add_argument("--run", required=True, type=Path, help="RUN_DIR of `fit`")
    p.add_argument("--data", required=True, type=Path, help="the folder the run was trained on")
    p.add_argument("--out", type=Path, help="weights path (default RUN_DIR/generator.safetensors)")


def _add_fit_level(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit-level",
        help="fit the new band's level rule (shape, offset) on the validation split",
        description=(
            "Fit the rule that sets the new band's level before any correction (models/band_level.py): the "
            "shape is the validation clips' mean log spectrum (each source weighted alike), the offset makes "
            "its level bias zero on average over the sources and the preset's input rates. Prints the "
            "config fields to put into the preset and the per-source validation bias; the test split is "
            "never read."
        ),
    )
    p.add_argument("--preset", default="speech", choices=("speech", "music"), help="whose input rates")
    p.add_argument("--data", required=True, type=Path, help="folder made by `prepare` (manifest.json)")
    p.add_argument("--max-seconds", type=float, help="read at most this much of each clip")
    p.add_argument("--hold-out", nargs="+", default=[], help="speakers/sources to leave out of the fit")
    p.add_argument("--json", type=Path, help="also write the fit here")


def _add_calibrate_level(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate-level",
        help="re-centre a trained generator's level offset on the validation split",
        description=(
            "Score a generator on the validation split (file mode, no ViSQOL), average its new band's "
            "level bias over the sources (each alike) at each input rate and over the rates, and write a "
            "copy whose level_offset_db cancels it. A trained correction shifts the band on average; this "
            "removes that shift without reading the test split. Each move is scored again and the next "
            "follows the measured response; a generator whose band barely follows the offset (its own "
            "content carries the band) is refused. The copy's JSON keeps the training record and adds "
            "the calibration with every pass."
        ),
    )
    p.add_argument("--model", required=True, help="preset name or .safetensors path")
    p.add_argument("--data", required=True, type=Path, help="folder made by `prepare` (manifest.json)")
    p.add_argument("--out", required=True, type=Path, help="calibrated weights (.safetensors)")
    p.add_argument("--rates", nargs="+", type=int, help="input rates (default: the family's list)")
    p.add_argument("--every", type=int, default=1, help="score every Nth validation clip")
    p.add_argument("--max-seconds", type=float, help="cut every clip to this length")
    p.add_argument("--hold-out", nargs="+", default=[], help="sources a leave-one-source-out model never saw")
    p.add_argument(
        "--max-passes",
        type=int,
        default=3,
        help="score at most this many offsets; stops once the mean bias is within 0.5 dB (1: one unverified move)",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="livesr training: data preparation, training, export, the level rule."
    )
    sub = p.add_subparsers(dest="command", required=True)
    _add_prepare(sub)
    _add_fit(sub)
    _add_export(sub)
    _add_fit_level(sub)
    _add_calibrate_level(sub)
    return p


SETTING_FLAGS = (
    "segment_seconds",
    "batch_size",
    "lr",
    "warmup_steps",
    "ema_decay",
    "adv_start",
    "disc_width",
    "input_rates",
    "mp3_prob",
    "same_rate_prob",
    "seed",
    "init",
    "w_band",
    "scan_backend",
)


def preset_spec(name: str) -> dict:
    """{"family", "config"} of a registry preset as built today."""
    from ..registry import build_model
    from .trainer import generator_spec

    return generator_spec(build_model(name))


def with_level_fit(spec: dict, fit: dict) -> dict:
    """`spec` with the level rule of a `fit-level --json` file (level_shape, level_offset_db)."""
    missing = [k for k in ("level_shape", "level_offset_db") if k not in fit]
    if missing:
        raise ValueError(f"--level-fit: the file lacks {', '.join(missing)} (write it with fit-level --json)")
    from ..registry import build_from_spec

    config = {**spec["config"], "level_shape": fit["level_shape"], "level_offset_db": fit["level_offset_db"]}
    if not getattr(build_from_spec(spec["family"], config).config, "noise_bands", 0):
        raise ValueError("--level-fit: this generator has no level rule (no noise excitation)")
    return {**spec, "preset": "custom", "config": config}


def train_config(args: argparse.Namespace):
    """The preset's TrainConfig with the explicitly given settings applied (or a resumed run's config)."""
    import dataclasses

    from .trainer import CONFIG, PRESETS, TrainConfig

    changes = {k: getattr(args, k) for k in SETTING_FLAGS if getattr(args, k) is not None}
    if args.generator is not None:
        changes["generator"] = args.generator
    if args.generator_config is not None:
        changes["generator_spec"] = json.loads(args.generator_config.read_text())
    if args.level_fit is not None:
        changes["generator_spec"] = with_level_fit(
            changes.get("generator_spec")
            or preset_spec(changes.get("generator", PRESETS[args.preset].generator)),
            json.loads(args.level_fit.read_text()),
        )
    if args.no_discriminators:
        changes["discriminators"] = ()
    if args.no_augment:
        changes["augment"] = False
    if args.hold_out is not None:
        changes["hold_out"] = tuple(args.hold_out)
    saved = args.out / CONFIG
    if saved.exists() and not args.restart:
        cfg = TrainConfig.from_dict(json.loads(saved.read_text()))
        if cfg.preset != args.preset:
            raise ValueError(
                f"{args.out} is a {cfg.preset!r} run; pass --preset {cfg.preset} or use --restart"
            )
        resumed = dataclasses.replace(cfg, **changes).to_dict()
        differ = sorted(k for k, v in cfg.to_dict().items() if resumed[k] != v)
        if differ:
            raise ValueError(
                f"{args.out} was started with other values of {differ}; use a new --out or --restart"
            )
        return cfg
    return dataclasses.replace(PRESETS[args.preset], **changes)


def _fit(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .trainer import CHECKPOINT, RunOptions, Trainer

    if args.max_steps is None and args.max_minutes is None:
        raise ValueError("give --max-steps and/or --max-minutes")
    cfg = train_config(args)
    options = RunOptions(
        max_steps=args.max_steps,
        max_minutes=args.max_minutes,
        device=args.device,
        num_workers=args.num_workers,
        log_every=args.log_every,
        checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every,
        eval_clips=args.eval_clips,
        progress=not args.no_progress,
        command=f"{PROG} {shlex.join(argv)}",
    )
    trainer = Trainer(cfg, args.data, args.out, options)
    try:
        if trainer.is_main and (args.out / CHECKPOINT).exists() and not args.restart:
            print(f"resuming {args.out / CHECKPOINT}", file=sys.stderr)
        step = trainer.fit(resume=not args.restart)
    finally:
        trainer.close()
    if trainer.is_main:
        print(f"stopped at step {step}; weights: {args.out / 'generator.safetensors'}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .trainer import CONFIG, RunOptions, TrainConfig, Trainer

    cfg = TrainConfig.from_dict(json.loads((args.run / CONFIG).read_text()))
    trainer = Trainer(cfg, args.data, args.run, RunOptions(command="export"))
    trainer.load_checkpoint()
    print(trainer.export(args.out))
    return 0


def _fit_level(args: argparse.Namespace) -> int:
    from models.dsp.resample import PASSBAND

    from .level_fit import fit_level, report, to_json
    from .trainer import PRESETS

    fit = fit_level(args.data, PRESETS[args.preset].input_rates, PASSBAND, args.max_seconds, args.hold_out)
    print(report(fit))
    if args.json is not None:
        args.json.write_text(to_json(fit))
    return 0


def _calibrate_level(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from ..evaluate import DEFAULT_RATES
    from ..registry import family_of, load_model, read_config, save_model, weights_path
    from .level_calibrate import calibrate_level, report

    if args.out.suffix != ".safetensors":
        raise ValueError(f"--out must be a .safetensors path, got {args.out}")
    source = weights_path(args.model)
    if args.out.resolve() == source.resolve():
        raise ValueError("--out must differ from --model: the uncalibrated weights are kept")
    model = load_model(source)
    rates = args.rates or DEFAULT_RATES[family_of(model)]
    calibrated, calibration = calibrate_level(
        model, args.data, rates, args.hold_out, args.every, args.max_seconds, max_passes=args.max_passes
    )
    print(report(calibration))
    kept = {k: v for k, v in read_config(source).items() if k in ("training", "note")}
    record = {"command": f"{PROG} {shlex.join(argv)}", **calibration.to_dict()}
    print(save_model(calibrated, args.out, **kept, calibration=record))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    try:
        if args.command == "prepare":
            from .prepare import Criteria, prepare, summary

            defaults = Criteria(min_seconds=0.5 if args.kind == "speech" else 10.0)
            criteria = Criteria(
                min_cut_hz=args.min_cut_hz,
                min_content_hz=args.min_content_hz,
                min_seconds=args.min_seconds if args.min_seconds is not None else defaults.min_seconds,
            )
            manifest = prepare(
                args.out,
                args.source,
                args.kind,
                cache=args.cache,
                criteria=criteria,
                test_speakers=args.test_speakers,
                test_fraction=args.test_fraction,
                subtype=args.subtype,
                min_files=args.min_files,
                jobs=args.jobs,
            )
            print(summary(manifest))
            return 0
        if args.command == "fit-level":
            return _fit_level(args)
        if args.command == "calibrate-level":
            return _calibrate_level(args, argv)
        if args.command == "fit":
            return _fit(args, argv)
        return _export(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
