"""`python -m export --model NAME|PATH --out FILE.onnx [--block N] [--random-init]` | `--shipped`

Exports a generator's streaming step to ONNX, then checks onnxruntime against torch on a few blocks.
`--shipped` regenerates the graphs the presets ship beside their weights (models/weights/NAME.onnx),
which the base install runs without torch. Progress goes to stderr; the written paths are the only
lines on stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .onnx import EXPORT_SCAN_BACKEND, VERIFY_ATOL, export_onnx, verify_export


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export", description=__doc__.splitlines()[2])
    p.add_argument("--model", help="preset name (speech, music, ...) or a .safetensors path")
    p.add_argument("--out", help="output .onnx file")
    p.add_argument(
        "--shipped",
        action="store_true",
        help="regenerate every preset's shipped graph (models/weights/NAME.onnx) from its shipped weights",
    )
    p.add_argument("--block", type=int, default=None, help="block length in samples (default ~10 ms)")
    p.add_argument("--random-init", action="store_true", help="export the preset with random weights")
    p.add_argument(
        "--backend",
        default=EXPORT_SCAN_BACKEND,
        choices=("chunked", "reference"),
        help="scan written into the graph: chunked (default; fewer nodes, faster) or reference",
    )
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-torch check")
    args = p.parse_args(argv)
    if args.shipped == bool(args.model or args.out):
        p.error("give either --model and --out, or --shipped")

    logger = logging.getLogger("export")
    if not logger.handlers:  # progress lines to stderr, once
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    from models import WEIGHTS_DIR
    from models.registry import PRESETS, WeightsNotFoundError, load_model

    if args.shipped:
        jobs = [
            (name, WEIGHTS_DIR / f"{name}.onnx")
            for name in PRESETS
            if (WEIGHTS_DIR / f"{name}.json").is_file()
        ]
    elif not (args.model and args.out):
        p.error("--model needs --out")
    else:
        jobs = [(args.model, args.out)]
    for name, out in jobs:
        try:
            model = load_model(name, pretrained=not args.random_init)
            path = export_onnx(model, out, args.block, backend=args.backend)
        except WeightsNotFoundError as err:
            print(f"error: {err} (or pass --random-init)", file=sys.stderr)
            return 2
        except (ValueError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if not args.no_verify:
            diff = verify_export(model, path)
            logger.info("onnxruntime vs torch over 4 blocks, 2 streams: max abs difference %.2e", diff)
            if diff > VERIFY_ATOL:
                print(
                    f"error: exported graph differs from torch by {diff:.2e} (> {VERIFY_ATOL})",
                    file=sys.stderr,
                )
                return 1
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
