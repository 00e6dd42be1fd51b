"""The default model block: shared by the live Processor and the ONNX exporter (torch-free on purpose)."""

from __future__ import annotations

DEFAULT_BLOCK_SECONDS = 0.01  # 10 ms: the usual audio period; longer blocks cost less per second, add latency


def default_block_size(sample_rate: int, block_multiple: int, seconds: float = DEFAULT_BLOCK_SECONDS) -> int:
    """About `seconds` (10 ms) of audio at `sample_rate`, rounded to a multiple of `block_multiple` (at
    least one)."""
    return max(1, round(sample_rate * seconds / block_multiple)) * block_multiple
