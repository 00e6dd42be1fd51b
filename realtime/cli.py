"""`python -m realtime`: live duplex processing, file processing, device listing.

Every user error (unknown device, unsupported rate, missing or corrupt weights, bad arguments) ends
as one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.atomic import atomic_write

PROG = "python -m realtime"
STANDARD_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
NO_DEVICES = "no audio devices found (PortAudio lists none; is a sound server or ALSA device available?)"


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


# ---- devices ------------------------------------------------------------------------------------------
def _sd() -> Any:
    # Imported late: PortAudio enumerates devices (and JACK servers) when sounddevice is first imported.
    import sounddevice

    return sounddevice


def device_table(kind: str | None = None) -> str:
    """All devices as sounddevice prints them, or the usable ones for `kind` on one line."""
    sd = _sd()
    devices = sd.query_devices()
    if kind is None:
        return str(devices) if len(devices) else NO_DEVICES
    key = f"max_{kind}_channels"
    usable = [f"{d['index']} {d['name']!r} ({d[key]} ch)" for d in devices if d[key] > 0]
    return ", ".join(usable) or "none"


def resolve_device(spec: str | int | None, kind: str) -> int:
    """A device index from an index or a case-insensitive name substring; `None` = the default device."""
    if kind not in ("input", "output"):
        raise ValueError(f"kind must be 'input' or 'output', got {kind!r}")
    sd = _sd()
    devices = list(sd.query_devices())
    key = f"max_{kind}_channels"
    usable = [d for d in devices if d[key] > 0]
    if spec is None or spec == "":
        default = sd.default.device[0 if kind == "input" else 1]
        if default is None or default < 0:
            if not usable:
                raise CliError(f"no {kind} device found (see --list-devices)")
            return int(usable[0]["index"])
        return int(default)
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        match = [d for d in usable if d["index"] == index]
        if not match:
            raise CliError(f"no {kind} device {index}; {kind} devices: {device_table(kind)}")
        return index
    match = [d for d in usable if text.lower() in d["name"].lower()]
    exact = [d for d in match if d["name"].lower() == text.lower()]
    if len(exact) == 1:
        return int(exact[0]["index"])
    if len(match) != 1:
        what = "matches no" if not match else f"matches {len(match)}"
        raise CliError(f"{kind} device {text!r} {what} {kind} devices; {kind} devices: {device_table(kind)}")
    return int(match[0]["index"])


def check_device_rate(device: int, rate: int, channels: int, kind: str) -> None:
    """Raise a CliError naming the supported rates when `device` cannot run at `rate` Hz."""
    sd = _sd()
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    try:
        check(device=device, samplerate=rate, channels=channels, dtype="float32")
        return
    except sd.PortAudioError as err:
        error = err
    name = sd.query_devices(device)["name"]
    if "channel" in str(error).lower():
        raise CliError(f"{kind} device {device} ({name}) cannot open {channels} channel(s): {error}")
    supported = []
    for candidate in STANDARD_RATES:
        try:
            check(device=device, samplerate=candidate, channels=channels, dtype="float32")
            supported.append(str(candidate))
        except sd.PortAudioError:
            pass
    raise CliError(
        f"{kind} device {device} ({name}) does not support {rate} Hz; supported: {', '.join(supported) or 'none'}"
    )


# ---- model ------------------------------------------------------------------------------------------------
MODEL_HELP = (
    "a preset (speech: Wave-U-Mamba, music: AEROMamba, mambawave: the MambaWave diffusion generator "
    "for speech) or a .safetensors file with its .json config beside it"
)


def load_generator(
    name: str,
    random_init: bool,
    fallback_random: bool = False,
    backend: str = "auto",
    threads: int = 1,
    block_size: int | None = None,
) -> tuple[Any, bool]:
    """(generator, trained?) for a preset name or a .safetensors path (see `realtime.generators`:
    a shipped preset runs its ONNX graph without torch).

    A preset without shipped weights is refused unless `random_init` (live and file mode: the output
    would be untrained) or `fallback_random` (profiling: timing does not depend on weight values).
    """
    from .generators import GeneratorUnavailable
    from .generators import load_generator as load

    def build(pretrained: bool) -> Any:
        return load(name, backend, pretrained, threads, block_size)

    try:
        if random_init:
            return build(False), False
        try:
            return build(True), True
        except FileNotFoundError as err:
            from models.registry import PRESETS, WeightsNotFoundError  # the torch path: torch is there

            if not isinstance(err, WeightsNotFoundError) or name not in PRESETS:
                raise
            if not fallback_random:
                raise CliError(
                    f"preset {name!r} ships no trained weights yet; pass --random-init to run it with untrained "
                    "random weights (for testing the audio path)"
                ) from None
            print(
                f"note: {name!r} ships no trained weights yet; timing random weights (same cost)",
                file=sys.stderr,
            )
            return build(False), False
    except GeneratorUnavailable as err:
        raise CliError(str(err)) from None
    except (ValueError, OSError) as err:  # models.registry.WeightsError / WeightsNotFoundError
        raise CliError(f"cannot load model {name!r}: {err}") from None


def warn_untrained(name: str) -> None:
    bar = "!" * 78
    print(
        f"{bar}\n WARNING: model {name!r} runs with RANDOM, UNTRAINED weights (--random-init).\n"
        f" The output is not super-resolved audio; use this only to test the audio path.\n{bar}",
        file=sys.stderr,
    )


def build_processor(model: Any, input_rate: int, output_rate: int | None, backend: str, **kwargs: Any) -> Any:
    """A Processor, or a one-line CliError (bad rates or block sizes, a backend that cannot run this model)."""
    from .processor import Processor

    try:
        return Processor(model, input_rate, output_rate, backend=backend, **kwargs)
    except ValueError as err:
        raise CliError(str(err)) from None
    except Exception as err:  # an explicitly requested backend failed to build (e.g. the ONNX export)
        if backend == "auto":
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CliError(f"backend {backend!r} cannot run this model: {type(err).__name__}: {first}") from None


def check_new_band_trim(model: Any, args: argparse.Namespace, input_rate: int) -> None:
    """--new-band-db needs a band edge and a generator with a band level: a CliError before any export."""
    from models.dsp.level import has_band_level

    edge_known = input_rate < int(model.sample_rate) or args.input_cutoff is not None
    if args.new_band_db and not (edge_known and has_band_level(getattr(model, "config", None))):
        raise CliError(
            "--new-band-db needs a known band edge and a model with a band level: an input below the "
            "model's rate, or --input-cutoff for one at its rate"
        )


def make_processor(
    model: Any, args: argparse.Namespace, input_rate: int, output_rate: int | None, channels: int
) -> Any:
    check_new_band_trim(model, args, input_rate)
    proc = build_processor(
        model,
        input_rate,
        output_rate,
        args.backend,
        channels=channels,
        block_size=args.model_block,
        dry_wet=args.dry_wet,
        input_cutoff_hz=args.input_cutoff,
        new_band_db=args.new_band_db,
    )
    proc.bypass = args.bypass
    return proc


# ---- file mode ----------------------------------------------------------------------------------------------
# Sample encodings copied from the input to the output when the output format takes them; any other
# input encoding (MP3, Vorbis, Opus, ADPCM, ...) is not re-used: the output gets its format's default.
PCM_SUBTYPES = frozenset({"PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"})


def output_subtype(fmt: str, input_subtype: str) -> str | None:
    """The input's subtype when it is plain PCM or float and `fmt` can hold it, else `fmt`'s default."""
    import soundfile as sf

    if input_subtype in PCM_SUBTYPES and sf.check_format(fmt, input_subtype):
        return input_subtype
    return sf.default_subtype(fmt)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether `a` and `b` name the same file: the same inode when both exist, else the same resolved path."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return Path(a).resolve() == Path(b).resolve()


def check_file_mode(src: str | os.PathLike, dst: str | os.PathLike) -> tuple[Any, str]:
    """(soundfile info of `src`, output format of `dst`), or a one-line CliError.

    Refuses what would fail or do harm: a missing, unreadable or empty input, an output that is the
    input, a folder, or in a missing folder, and an unknown output format. It reads only headers, so
    the CLI runs it before loading any model.
    """
    import soundfile as sf

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise CliError(f"input file not found: {src}")
    if same_file(src, dst):
        raise CliError(f"output {dst} is the input file; refusing to overwrite it (choose another --output)")
    if dst.is_dir():
        raise CliError(f"output {dst} is a folder; --output needs a file name")
    if not dst.parent.is_dir():
        raise CliError(f"output folder {dst.parent} does not exist")
    if not os.access(dst.parent, os.W_OK | os.X_OK):
        raise CliError(f"output folder {dst.parent} is not writable")
    fmt = dst.suffix[1:].upper()
    if fmt not in sf.available_formats():
        raise CliError(f"unsupported output format {dst.suffix!r}; use one of .wav, .flac, .ogg, ...")
    try:
        info = sf.info(str(src))
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise CliError(f"cannot read {src}: {err}") from None
    if info.frames <= 0:
        raise CliError(f"input file {src} holds no audio samples")
    return info, fmt


def stream_file(
    processor: Any,
    read: Callable[[int], np.ndarray],
    frames: int,
    write: Callable[[np.ndarray], None],
    block: int,
    progress: Callable[[int], None] | None = None,
) -> int:
    """`Processor.process_stream` for a file being read: a short read becomes a one-line error."""
    try:
        return processor.process_stream(read, frames, write, block, progress)
    except EOFError as err:
        raise CliError(str(err)) from None


def process_file(
    processor_for: Callable[[int, int], Any],
    src: str | os.PathLike,
    dst: str | os.PathLike,
    progress: Callable[[int], None] | None = None,
    show_bar: bool = True,
) -> dict:
    """Process the audio file `src` into `dst`, written atomically.

    `processor_for(input_rate, channels)` makes the processor once the file's format is known. The
    output goes to a hidden temporary file beside `dst` that replaces `dst` only when complete, so an
    interruption or a crash never leaves a partial `dst`. NaN/Inf input samples are replaced by 0.0
    one by one before the processor sees them (it would silence the whole block holding them) and
    counted in `nonfinite_samples` (one per channel value).
    """
    import soundfile as sf

    src, dst = Path(src), Path(dst)
    info, fmt = check_file_mode(src, dst)
    subtype = output_subtype(fmt, info.subtype)
    processor = processor_for(info.samplerate, info.channels)
    block = -(-processor.model_block * processor.input_rate // processor.model_rate)
    bar = None
    run: dict[str, Any] = {"frames": 0, "nonfinite": 0}

    def write(tmp: str) -> None:
        hooks = [h for h in (bar.update if bar else None, progress) if h is not None]
        try:
            writer = sf.SoundFile(
                tmp,
                "w",
                samplerate=processor.output_rate,
                channels=info.channels,
                format=fmt,
                subtype=subtype,
            )
        except (sf.LibsndfileError, ValueError) as err:  # e.g. a rate the format cannot hold
            raise CliError(f"cannot write {dst} ({fmt}, {subtype}): {err}") from None
        with sf.SoundFile(str(src)) as reader, writer:

            def read(k: int) -> np.ndarray:
                try:
                    chunk = reader.read(k, dtype="float32", always_2d=True)
                except sf.LibsndfileError as err:
                    raise CliError(f"cannot read {src}: {err}") from None
                finite = np.isfinite(chunk)
                if not finite.all():
                    run["nonfinite"] += int(chunk.size - np.count_nonzero(finite))
                    chunk[~finite] = 0.0
                return chunk

            run["frames"] = stream_file(
                processor,
                read,
                info.frames,
                writer.write,
                block,
                (lambda k: [h(k) for h in hooks]) if hooks else None,
            )

    start = time.perf_counter()
    try:
        if show_bar:
            from tqdm import tqdm

            bar = tqdm(total=info.frames, unit="sample", unit_scale=True, desc=src.name, file=sys.stderr)
        atomic_write(dst, write, suffix=".part")
    finally:
        if bar is not None:
            bar.close()
    return {
        "input": str(src),
        "output": str(dst),
        "input_rate": info.samplerate,
        "output_rate": processor.output_rate,
        "input_frames": info.frames,
        "output_frames": run["frames"],
        "latency_compensated": processor.latency,
        "processor_stats": dict(vars(processor.stats)),
        "nonfinite_samples": run["nonfinite"],
        "seconds": time.perf_counter() - start,
    }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def format_file_summary(result: dict) -> str:
    """The one line file mode ends with: what was written, how fast, and what was repaired."""
    seconds = result["seconds"]
    speed = result["input_frames"] / result["input_rate"] / seconds if seconds > 0 else float("inf")
    resets = result["processor_stats"].get("state_resets", 0)
    return (
        f"wrote {result['output']}: {result['input_frames']} samples at {result['input_rate']} Hz -> "
        f"{result['output_frames']} samples at {result['output_rate']} Hz in {seconds:.2f} s "
        f"({speed:.1f}x real time); latency {result['latency_compensated']} samples compensated; "
        f"{_plural(result['nonfinite_samples'], 'non-finite sample')} replaced; "
        f"{_plural(resets, 'model state reset')}"
    )


# ---- live mode ----------------------------------------------------------------------------------------------
def open_devices(args: argparse.Namespace) -> dict:
    """Resolve and check the live devices and rates first: a typo should not wait for a model to load."""
    sd = _sd()
    in_dev = resolve_device(args.input_device if args.input_device is not None else args.device, "input")
    out_dev = resolve_device(args.output_device if args.output_device is not None else args.device, "output")
    in_info, out_info = sd.query_devices(in_dev), sd.query_devices(out_dev)
    in_rate = args.input_samplerate or args.samplerate or int(in_info["default_samplerate"])
    out_rate = args.output_samplerate or args.samplerate or int(out_info["default_samplerate"])
    check_device_rate(in_dev, in_rate, args.channels, "input")
    check_device_rate(out_dev, out_rate, args.channels, "output")
    return {
        "in_dev": in_dev,
        "out_dev": out_dev,
        "in_info": in_info,
        "out_info": out_info,
        "in_rate": in_rate,
        "out_rate": out_rate,
    }


def run_live_mode(args: argparse.Namespace, model: Any, devices: dict) -> dict:
    from .engine import Engine, format_summary, run_live

    sd = _sd()
    in_dev, out_dev, in_info, out_info = (devices[k] for k in ("in_dev", "out_dev", "in_info", "out_info"))
    in_rate, out_rate = devices["in_rate"], devices["out_rate"]
    proc = make_processor(model, args, in_rate, out_rate, args.channels)
    blocksize = args.blocksize or round(0.01 * in_rate)
    separate = in_rate != out_rate or in_info["hostapi"] != out_info["hostapi"]
    try:
        engine = Engine(proc, proc.dry_path(), blocksize, args.crossfade_ms, separate_streams=separate)
    except ValueError as err:
        raise CliError(str(err)) from None
    engine.warm_up()

    def started(summary: dict) -> None:
        print(
            f"streaming {in_info['name']} ({in_rate} Hz) -> {out_info['name']} ({out_rate} Hz), "
            f"block {blocksize}, backend {proc.backend}, latency {summary['reported_latency_ms']:.1f} ms"
            + ("" if args.duration else "; Ctrl-C to stop"),
            file=sys.stderr,
            flush=True,
        )

    try:
        summary = run_live(engine, in_dev, out_dev, args.duration, args.latency, on_started=started)
    except sd.PortAudioError as err:
        raise CliError(f"audio device error: {err}") from None
    summary.update(model=args.model, backend=proc.backend, input_device=in_dev, output_device=out_dev)
    print(format_summary(summary))
    return summary


# ---- entry point ------------------------------------------------------------------------------------------
def positive(kind: type) -> Callable[[str], Any]:
    """An argparse type: `kind(text)`, which must be > 0."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse


def _unit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _new_band_db(text: str) -> float:
    from models.dsp.level import NEW_BAND_MAX_DB, check_new_band_db

    try:
        return check_new_band_db(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected dB within +-{NEW_BAND_MAX_DB:g}, got {text!r}") from None


def _latency(text: str) -> str | float:
    if text in ("low", "high"):
        return text
    try:
        return positive(float)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'low', 'high' or seconds, got {text!r}") from None


class OneLineParser(argparse.ArgumentParser):
    """argparse with errors as one line and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .processor import BACKENDS

    p = OneLineParser(
        prog=PROG,
        description=(
            "Real-time audio super-resolution: band-limited audio in, full-band audio out, with a fixed, "
            "known latency. Live through an audio device (default), or a file with --input/--output. "
            f"Latency profiling: '{PROG} profile --help'."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            f"  {PROG} --list-devices\n"
            f"  {PROG} --device 1 --model speech\n"
            f"  {PROG} --input-device USB --output-device speakers --input-samplerate 16000 --samplerate 48000\n"
            f"  {PROG} --input lowres.wav --output fullband.wav --model music\n"
            f"  {PROG} profile --model speech --blocksize 480 --json profile.json"
        ),
    )
    dev = p.add_argument_group("devices (live mode)")
    dev.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    dev.add_argument("--device", metavar="N|NAME", help="device for both directions: index or name substring")
    dev.add_argument("--input-device", metavar="N|NAME", help="input device (overrides --device)")
    dev.add_argument("--output-device", metavar="N|NAME", help="output device (overrides --device)")
    dev.add_argument(
        "--samplerate",
        type=positive(int),
        metavar="HZ",
        help="device rate for both directions (default: the device's); in file mode the output rate",
    )
    dev.add_argument("--input-samplerate", type=positive(int), metavar="HZ", help="input device rate")
    dev.add_argument("--output-samplerate", type=positive(int), metavar="HZ", help="output rate")
    dev.add_argument(
        "--blocksize",
        type=positive(int),
        metavar="N",
        help="host block in input samples (default: 10 ms); the engine adds one block of hand-off latency",
    )
    dev.add_argument(
        "--channels", type=positive(int), default=1, metavar="N", help="live channels (default 1)"
    )
    dev.add_argument(
        "--latency",
        type=_latency,
        default="low",
        metavar="low|high|SECONDS",
        help="device buffering asked of PortAudio (default low)",
    )
    dev.add_argument(
        "--crossfade-ms",
        type=float,
        default=2.0,
        metavar="MS",
        help="cross-fade to and from the dry signal when the model is late (default 2 ms; adds to latency)",
    )
    dev.add_argument("--duration", type=positive(float), metavar="SECONDS", help="stop after SECONDS")
    dev.add_argument("--summary-json", metavar="PATH", help="write the end-of-run summary as JSON")
    mod = p.add_argument_group("model")
    mod.add_argument(
        "--model", default="speech", metavar="PRESET|PATH", help=MODEL_HELP + " (default speech)"
    )
    mod.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="torch (CPU), onnx (onnxruntime), triton (CUDA) or auto (default)",
    )
    mod.add_argument(
        "--dry-wet", type=_unit, default=1.0, metavar="0..1", help="1 = model only (default), 0 = dry"
    )
    mod.add_argument(
        "--input-cutoff",
        type=positive(float),
        metavar="HZ",
        help="where the input's band ends when it already runs at the model's rate (e.g. 8000 for a "
        "16 kHz recording saved at 48 kHz): the output keeps the input below it and fills the band "
        "above it. Inputs below the model's rate need none (their band ends at their Nyquist frequency)",
    )
    mod.add_argument(
        "--new-band-db",
        type=_new_band_db,
        default=0.0,
        metavar="DB",
        help="raise (+) or lower (-) the new band by DB dB from the level the model sets (default 0; "
        "within +-24). Voices differ above the band edge by several dB that the given band does not "
        "reveal: if the result sounds hissy or dull, trim it by ear",
    )
    mod.add_argument(
        "--model-block",
        type=positive(int),
        metavar="N",
        help="model block in model-rate samples (default ~10 ms); longer blocks cost less per second, add latency",
    )
    mod.add_argument("--bypass", action="store_true", help="skip the model (dry signal, same latency)")
    mod.add_argument(
        "--random-init",
        action="store_true",
        help="run a preset with random, untrained weights (tests the audio path; output is not super-resolved)",
    )
    mod.add_argument(
        "--threads",
        type=positive(int),
        default=1,
        metavar="N",
        help="threads the model may use (torch or onnxruntime; default 1)",
    )
    fm = p.add_argument_group("file mode")
    fm.add_argument("--input", metavar="FILE", help="process this audio file instead of a live device")
    fm.add_argument(
        "--output", metavar="FILE", help="write the result here (atomically; format from extension)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Live or file mode (`python -m realtime` dispatches the subcommands, e.g. `profile`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except CliError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.list_devices:
        try:
            table = device_table()
        except (OSError, ImportError) as err:  # no PortAudio library
            raise CliError(f"cannot list audio devices: {err}") from None
        print(table)
        return 0
    if (args.input is None) != (args.output is None):
        raise CliError("file mode needs both --input FILE and --output FILE")
    if args.input is not None:
        check_file_mode(args.input, args.output)  # before a model loads: a bad path should not wait for it
    if args.summary_json and not Path(args.summary_json).parent.is_dir():
        raise CliError(f"--summary-json folder {Path(args.summary_json).parent} does not exist")
    devices = open_devices(args) if args.input is None else None
    model, trained = load_generator(
        args.model, args.random_init, backend=args.backend, threads=args.threads, block_size=args.model_block
    )
    if not trained:
        warn_untrained(args.model)
    if args.input is not None:
        out_rate = args.output_samplerate or args.samplerate
        result = process_file(
            lambda rate, ch: make_processor(model, args, rate, out_rate, ch), args.input, args.output
        )
        print(format_file_summary(result), file=sys.stderr)
        summary = result
    else:
        summary = run_live_mode(args, model, devices)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return 0
