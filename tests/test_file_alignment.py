"""File mode puts an impulse back on its own sample, for every preset and every supported input rate.

Random weights would smear an impulse, so each generator's correction is silenced first (Wave-U-Mamba:
its output conv zeroed; AEROMamba is the identity until trained; built without the noise excitation): the
model is then a pure delay of its declared latency, and the whole path — input resampler, block FIFO, model, latency compensation — must
land the impulse at t * ratio, its resampling kernel symmetric around that sample.
"""

from fractions import Fraction

import numpy as np
import pytest
import torch

from models.dsp.resample import SUPPORTED_RATES
from models.registry import build_from_spec, family_of, load_model
from realtime.processor import process_offline

RATES = {  # the compact presets at every supported rate; the slower paper presets at their main ones
    "speech": SUPPORTED_RATES,
    "music": SUPPORTED_RATES,
    "wave-u-mamba-paper": (8000, 16000, 24000, 48000),
    "aeromamba-paper": (11025, 22050, 44100),
}


def pure_delay(name: str):
    template = load_model(name, pretrained=False)
    model = build_from_spec(family_of(template), {**template.config.to_dict(), "noise_bands": 0}, name)
    if hasattr(model, "post"):  # Wave-U-Mamba: tanh(conv(...)) + input -> input
        conv = model.post.layers[1].conv
        with torch.no_grad():
            conv.parametrizations.weight.original0.zero_()
            conv.bias.zero_()
    return model


@pytest.mark.parametrize("name", list(RATES))
def test_impulse_lands_on_its_sample_for_every_rate(name):
    model = pure_delay(name)
    for rate in RATES[name]:
        ratio = Fraction(model.sample_rate, rate)
        at = 7 * ratio.denominator * 8  # an input sample that maps onto a whole output sample
        x = np.zeros(round(0.12 * rate) + at, np.float32)
        x[at] = 1.0
        y = process_offline(model, x, rate, backend="torch")
        assert len(y) == round(len(x) * ratio)
        expected = int(at * ratio)
        peak = int(np.argmax(np.abs(y)))
        assert peak == expected, f"{name} at {rate} Hz: impulse at {peak}, expected {expected}"
        k = 6  # the resampler's kernel is symmetric about the impulse
        np.testing.assert_allclose(
            y[expected - k : expected], y[expected + 1 : expected + k + 1][::-1], atol=1e-4
        )
