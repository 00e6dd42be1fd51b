"""Streaming generators (Wave-U-Mamba, AEROMamba), their layers, presets and weights."""
