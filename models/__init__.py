"""Generators, their streaming contract, training and evaluation. `WEIGHTS_DIR` holds the shipped
presets' weights, configs and exported graphs; importing this package imports no torch."""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
