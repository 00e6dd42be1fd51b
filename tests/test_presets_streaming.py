"""Every preset streams exactly like its offline pass: 20 random block partitions of a 3 s signal.

The compact presets run this in their own fast tests; this file is the full check for all four
presets, including the paper ones, and is marked slow (minutes on a 2-core CPU).
"""

import numpy as np
import pytest
import torch

from models.registry import PRESETS, load_model


def partition(total: int, multiple: int, rng: np.random.Generator) -> list[int]:
    """Random block lengths (multiples of `multiple`, the smallest included) that sum to `total`."""
    sizes, left = [multiple], total - multiple
    while left > 0:
        size = min(left, multiple * int(rng.integers(1, 4800 // multiple + 2)))
        sizes.append(size)
        left -= size
    rng.shuffle(sizes)
    return sizes


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PRESETS))
def test_twenty_random_partitions_of_three_seconds_equal_offline(name):
    torch.manual_seed(0)
    model = load_model(name, pretrained=False)
    multiple = model.block_multiple
    length = (3 * model.sample_rate // multiple) * multiple
    t = torch.arange(length) / model.sample_rate
    x = (0.3 * torch.sin(2 * torch.pi * 440 * t * (1 + t)) + 0.05 * torch.randn(length)).unsqueeze(0)
    rng = np.random.default_rng(1)
    with torch.inference_mode():
        offline = model(x)
        for _ in range(20):
            state, parts, pos = model.init_state(1), [], 0
            for size in partition(length, multiple, rng):
                y, state = model.step(x[:, pos : pos + size], state)
                parts.append(y)
                pos += size
            assert (torch.cat(parts, dim=1) - offline).abs().max() <= 1e-5
