"""Processor: exact latency, host-block independence, file mode alignment, guards, bypass and dry path."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from math import gcd

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import models.dsp.chain as chain_module
from models.dsp.resample import Resampler
from models.streaming import StreamingModule, with_context
from realtime.processor import DryPath, Processor, make_stepper, process_offline


class FirModel(StreamingModule):
    """A same-rate causal FIR generator: linear-phase `taps` (odd length) declare latency len // 2.

    With `poison_above`, a block holding a sample above it leaves NaN in the state (a broken model).
    """

    block_multiple = 16

    def __init__(self, taps: np.ndarray, sample_rate: int, poison_above: float | None = None) -> None:
        super().__init__()
        kernel = torch.tensor(np.asarray(taps, np.float32)[::-1].copy())
        self.register_buffer("kernel", kernel[None, None])
        self.sample_rate = sample_rate
        self.latency = (len(taps) - 1) // 2
        self.poison_above = poison_above

    def init_state(self, batch, device=None):
        return {"ctx": torch.zeros(batch, self.kernel.shape[-1] - 1, device=device)}

    def step(self, x, state):
        self.check_block(x.shape[-1])
        full, ctx = with_context(x, state["ctx"])
        # Row by row: torch's batched conv1d rounds differently per batch size, and the tests compare
        # stereo with mono runs exactly.
        y = torch.cat([F.conv1d(row[None, None], self.kernel)[0] for row in full])
        if self.poison_above is not None and bool((x.abs() > self.poison_above).any()):
            ctx = torch.full_like(ctx, float("nan"))
        return y, {"ctx": ctx}


def delay_model(rate: int, latency: int = 24) -> FirModel:
    """Passes the signal through unchanged, `latency` samples late."""
    taps = np.zeros(2 * latency + 1)
    taps[latency] = 1.0
    return FirModel(taps, rate)


def smoothing_model(rate: int, **kw) -> FirModel:
    """A symmetric low-pass smoother: output differs from input, so mixing and state are exercised."""
    taps = np.hanning(33)
    return FirModel(taps / taps.sum(), rate, **kw)


def signal(rate: int, seconds: float = 0.1, channels: int = 0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    shape = (n,) if channels == 0 else (n, channels)
    tone = 0.5 * np.sin(2 * np.pi * 0.11 * rate * t)
    x = 0.3 * rng.standard_normal(shape) + (tone if channels == 0 else tone[:, None])
    return x.astype(np.float32)


def live(proc: Processor, x: np.ndarray, lengths) -> np.ndarray:
    """Concatenated outputs of `process` over host blocks of the given lengths, checking each count."""
    outs, i = [], 0
    for n in lengths:
        y = proc.process(x[i : i + n])
        i += n
        assert y.shape[0] == proc.output_length(i) - proc.output_length(i - n)
        outs.append(y)
    assert i == x.shape[0]
    return np.concatenate(outs)


def blocks_of(size: int, total: int) -> list[int]:
    return [size] * (total // size) + ([total % size] if total % size else [])


def live_compensated(proc: Processor, x: np.ndarray, size: int) -> np.ndarray:
    """Live run over fixed-size host blocks, flushed with zeros, latency dropped: comparable to file mode."""
    n_out = round(x.shape[0] * proc.output_rate / proc.input_rate)
    total = -(-(n_out + proc.latency) * proc.input_rate // proc.output_rate) + size
    padded = np.concatenate([x, np.zeros((total - x.shape[0],) + x.shape[1:], x.dtype)])
    return live(proc, padded, blocks_of(size, total))[proc.latency : proc.latency + n_out]


ALIGNMENT = [(r, m, None) for m in (48000, 44100) for r in (8000, 16000, 22050, 44100, 48000)] + [
    (44100, 48000, 44100),
    (16000, 48000, 44100),
    (22050, 44100, 48000),
]


@pytest.mark.parametrize("rates", ALIGNMENT, ids=lambda r: "-".join(map(str, r)))
def test_file_mode_is_time_aligned(rates):
    rate_in, rate_model, rate_out = rates
    proc = Processor(delay_model(rate_model), rate_in, rate_out, backend="torch")
    rate_out = proc.output_rate
    n = rate_in // 10
    # An impulse at an input sample that falls on the output grid lands exactly there.
    t0 = (n // 3) // (rate_in // gcd(rate_in, rate_out)) * (rate_in // gcd(rate_in, rate_out))
    x = np.zeros(n, np.float32)
    x[t0] = 1.0
    y = proc.process_file_array(x)
    assert y.shape == (round(n * rate_out / rate_in),)
    peak = t0 * rate_out // rate_in
    assert int(np.argmax(np.abs(y))) == peak
    side = np.arange(1, 40)
    np.testing.assert_allclose(y[peak - side], y[peak + side], atol=1e-6)  # symmetric about it: exact
    # An in-band sine comes out as the same sine on the output grid, no phase shift.
    f = 0.3 * min(rate_in, rate_out) / 2
    sine = np.sin(2 * np.pi * f * np.arange(n) / rate_in).astype(np.float32)
    y = proc.process_file_array(sine)
    expect = np.sin(2 * np.pi * f * np.arange(y.size) / rate_out)
    edge = rate_out // 100
    np.testing.assert_allclose(y[edge:-edge], expect[edge:-edge], atol=2e-4)


@pytest.mark.parametrize("rates", ALIGNMENT, ids=lambda r: "-".join(map(str, r)))
def test_latency_is_what_an_impulse_measures(rates):
    rate_in, rate_model, rate_out = rates
    proc = Processor(delay_model(rate_model), rate_in, rate_out, backend="torch")
    ratio = proc.output_rate / rate_in
    assert proc.latency >= proc.model_block - 1
    n = int((proc.latency + 200) / ratio) + proc.model_block
    x = np.zeros(n, np.float32)
    x[0] = 1.0
    lengths = [int(v) for v in np.random.default_rng(rate_in).integers(0, 300, 1000)]
    lengths = [v for v in np.cumsum(lengths) if v < n]
    y = live(proc, x, np.diff([0, *lengths, n]))
    assert int(np.argmax(np.abs(y))) == proc.latency


BLOCK_CONFIGS = [(16000, 48000, None), (44100, 48000, 44100), (22050, 44100, 48000)]


@pytest.mark.parametrize("rates", BLOCK_CONFIGS, ids=lambda r: "-".join(map(str, r)))
def test_every_host_block_size_equals_file_mode(rates):
    rate_in, rate_model, rate_out = rates
    proc = Processor(smoothing_model(rate_model), rate_in, rate_out, backend="torch")
    x = signal(rate_in, 0.1)
    ref = proc.process_file_array(x)
    assert ref.shape == (round(x.size * proc.output_rate / rate_in),)
    for size in (1, 7, 64, 441, 480, 1000, 4096):
        proc.reset()
        np.testing.assert_array_equal(live_compensated(proc, x, size), ref, err_msg=f"host block {size}")
    proc.reset()
    rng = np.random.default_rng(3)
    parts = np.diff([0, *sorted(rng.integers(0, x.size, 40)), x.size])
    np.testing.assert_array_equal(
        live(proc, x, parts), live(Processor(proc.stepper, rate_in, rate_out), x, [x.size])
    )


def test_integral_ratio_gives_len_times_ratio_per_call():
    proc = Processor(smoothing_model(48000), 16000, backend="torch")
    x = signal(16000, 0.05)
    for n in (0, 1, 7, 160, 333):
        assert proc.process(x[:n]).shape == (3 * n,)


def test_stereo_equals_two_mono_runs():
    x = signal(22050, 0.1, channels=2)
    stereo = Processor(smoothing_model(48000), 22050, backend="torch", channels=2)
    mono = Processor(smoothing_model(48000), 22050, backend="torch")
    lengths = blocks_of(300, x.shape[0])
    y = live(stereo, x, lengths)
    assert y.shape == (x.shape[0] * 48000 // 22050, 2)
    for c in range(2):
        mono.reset()
        np.testing.assert_array_equal(y[:, c], live(mono, np.ascontiguousarray(x[:, c]), lengths))
    np.testing.assert_array_equal(stereo.process_file_array(x)[:, 1], mono.process_file_array(x[:, 1]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_silenced_and_counted(bad):
    proc = Processor(smoothing_model(48000), 16000, backend="torch")
    x = signal(16000, 0.1)
    lengths = blocks_of(160, x.size)
    dirty = x.copy()
    dirty[800 + 17] = bad  # inside host block 5
    y = live(proc, dirty, lengths)
    assert np.isfinite(y).all()
    assert proc.stats.bad_blocks == 1 and proc.stats.blocks == len(lengths) and proc.stats.state_resets == 0
    clean = x.copy()
    clean[800:960] = 0.0  # the documented replacement: that whole host block becomes silence
    proc.reset()
    np.testing.assert_array_equal(y, live(proc, clean, lengths))


def test_non_finite_model_state_is_reset_and_counted():
    flag = 1e4
    x = signal(48000, 0.1)
    x[1000] = 10 * flag  # the test model poisons its state on this block
    broken = Processor(smoothing_model(48000, poison_above=flag), 48000, backend="torch")
    healthy = Processor(smoothing_model(48000), 48000, backend="torch")
    lengths = blocks_of(256, x.size)
    y = live(broken, x, lengths)
    ref = live(healthy, x, lengths)
    assert np.isfinite(y).all()
    assert broken.stats.state_resets == 1 and broken.stats.bad_blocks == 0
    # The reset state forgets the spike's tail; once the FIR's memory has passed, both agree exactly.
    settled = broken.latency + (1000 // broken.model_block + 2) * broken.model_block
    np.testing.assert_array_equal(y[settled:], ref[settled:])
    assert not np.array_equal(y[:settled], ref[:settled])


def test_bad_input_is_rejected_with_the_expected_shape():
    proc = Processor(smoothing_model(48000), 16000, backend="torch", channels=2)
    with pytest.raises(ValueError, match=r"\(samples, 2\)"):
        proc.process(np.zeros(64, np.float32))
    with pytest.raises(ValueError, match=r"\(samples, 2\)"):
        proc.process(np.zeros((64, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(samples, 2\)"):
        proc.process(np.zeros((64, 2, 1), np.float32))
    with pytest.raises(ValueError, match="float32 or float64"):
        proc.process(np.zeros((64, 2), np.int16))
    with pytest.raises(ValueError, match="float32 or float64"):
        proc.process([[0.0, 0.0]])
    assert proc.stats.blocks == 0
    with pytest.raises(ValueError, match="8000, 11025, 12000"):
        Processor(smoothing_model(48000), 96000, backend="torch")
    with pytest.raises(ValueError, match="output_rate"):
        Processor(smoothing_model(48000), 16000, 96000, backend="torch")
    with pytest.raises(ValueError, match="multiple of 16"):
        Processor(smoothing_model(48000), 16000, backend="torch", block_size=100)
    with pytest.raises(ValueError, match="channels"):
        Processor(smoothing_model(48000), 16000, backend="torch", channels=0)
    with pytest.raises(ValueError, match="dry_wet"):
        Processor(smoothing_model(48000), 16000, backend="torch", dry_wet=1.5)
    with pytest.raises(ValueError, match="backend"):
        Processor(smoothing_model(48000), 16000, backend="cuda")


def test_reset_reproduces_a_fresh_run():
    x = signal(16000, 0.1)
    proc = Processor(smoothing_model(48000), 16000, backend="torch")
    live(proc, signal(16000, 0.07, seed=5), blocks_of(100, 1120))
    proc.bypass = True
    proc.reset()
    proc.bypass = False
    assert proc.stats.blocks == 0
    fresh = Processor(smoothing_model(48000), 16000, backend="torch")
    np.testing.assert_array_equal(
        live(proc, x, blocks_of(123, x.size)), live(fresh, x, blocks_of(123, x.size))
    )


def test_bypass_and_dry_wet_keep_time_alignment():
    x = signal(16000, 0.1)
    lengths = blocks_of(97, x.size)
    # With a model that only delays, wet == dry exactly, so every mix and bypass must agree exactly.
    outs = []
    for dry_wet, bypass in ((1.0, False), (0.0, False), (0.37, False), (1.0, True)):
        proc = Processor(delay_model(48000), 16000, backend="torch", dry_wet=dry_wet)
        proc.bypass = bypass
        outs.append(live(proc, x, lengths))
    for y in outs[1:]:
        np.testing.assert_allclose(y, outs[0], atol=1e-7, rtol=0)
    # With a real effect, the mix is the same weighted sum of the two aligned paths.
    wet = Processor(smoothing_model(48000), 16000, backend="torch")
    dry = Processor(smoothing_model(48000), 16000, backend="torch", dry_wet=0.0)
    mix = Processor(smoothing_model(48000), 16000, backend="torch", dry_wet=0.25)
    y_wet, y_dry, y_mix = (live(p, x, lengths) for p in (wet, dry, mix))
    np.testing.assert_allclose(y_mix, 0.25 * y_wet + 0.75 * y_dry, atol=2e-6)
    np.testing.assert_array_equal(y_dry, live(wet.dry_path(), x, lengths))


def test_toggling_bypass_never_shifts_time():
    x = signal(16000, 0.2)
    lengths = blocks_of(160, x.size)
    plain = live(Processor(smoothing_model(48000), 16000, backend="torch"), x, lengths)
    dry = live(Processor(smoothing_model(48000), 16000, backend="torch").dry_path(), x, lengths)
    proc = Processor(smoothing_model(48000), 16000, backend="torch")
    outs, i = [], 0
    for k, n in enumerate(lengths):
        proc.bypass = 6 <= k < 12  # model blocks are 10 ms = one host block here
        outs.append(proc.process(x[i : i + n]))
        i += n
    y = np.concatenate(outs)
    # Model-rate sample t of the resampled input leaves as output sample t + buffering.
    buffering = proc.latency - proc.model_latency - Resampler(16000, 48000).latency
    start, stop = 6 * 480 + buffering, 12 * 480 + buffering
    np.testing.assert_array_equal(y[:start], plain[:start])
    np.testing.assert_array_equal(y[start:stop], dry[start:stop])
    settled = stop + 480  # after one model block the restarted FIR has its full memory again
    np.testing.assert_array_equal(y[settled:], plain[settled:])


@pytest.mark.parametrize("rates", BLOCK_CONFIGS, ids=lambda r: "-".join(map(str, r)))
def test_dry_path_matches_bypass_sample_for_sample(rates):
    rate_in, rate_model, rate_out = rates
    proc = Processor(smoothing_model(rate_model), rate_in, rate_out, backend="torch")
    dry = proc.dry_path()
    assert isinstance(dry, DryPath) and dry.latency == proc.latency
    proc.bypass = True
    x = signal(rate_in, 0.1)
    rng = np.random.default_rng(7)
    parts = np.diff([0, *sorted(rng.integers(0, x.size, 60)), x.size])
    np.testing.assert_array_equal(live(dry, x, parts), live(proc, x, parts))
    dry.reset()
    x[0] = 1.0
    y = dry.process(np.concatenate([x[:1], np.zeros(2 * x.size, np.float32)]))
    assert int(np.argmax(np.abs(y))) == proc.latency


def test_default_and_given_model_blocks():
    assert Processor(smoothing_model(48000), 16000, backend="torch").model_block == 480
    assert Processor(smoothing_model(44100), 16000, backend="torch").model_block == 448
    proc = Processor(smoothing_model(48000), 48000, backend="torch", block_size=64)
    assert proc.model_block == 64 and proc.latency == 63 + 16


def test_prefill_bound_covers_the_exact_need(monkeypatch):
    configs = [
        (r, m, o, b)
        for r in (8000, 11025, 44100)
        for m in (44100, 48000)
        for o in (44100, 48000)
        for b in (448, 480)
    ]
    exact = [chain_module.prefill(*c) for c in configs]
    x = signal(11025, 0.05)
    ref = Processor(smoothing_model(44100), 11025, 48000, backend="torch").process_file_array(x)
    monkeypatch.setattr(chain_module, "_MAX_PERIOD", 0)  # force the closed-form bound
    bound = [chain_module.prefill(*c) for c in configs]
    assert all(e <= b for e, b in zip(exact, bound, strict=True)) and exact != bound
    proc = Processor(smoothing_model(44100), 11025, 48000, backend="torch")
    np.testing.assert_array_equal(live_compensated(proc, x, 1), ref)


def test_process_offline_function():
    x = signal(16000, 0.05, channels=2)
    y = process_offline(smoothing_model(48000), x, 16000, backend="torch")
    proc = Processor(smoothing_model(48000), 16000, backend="torch", channels=2)
    np.testing.assert_array_equal(y, proc.process_file_array(x))
    assert y.shape == (x.shape[0] * 3, 2)


class NumpyFir:
    """A numpy stepper (the contract an exported graph's runtime follows), here with a fixed block."""

    sample_rate = 48000
    block_multiple = 16
    block_size = 256
    latency = 3

    def init_state(self, batch):
        return {"ctx": np.zeros((batch, 6), np.float32)}

    def step(self, x, state):
        full = np.concatenate([state["ctx"], x], axis=1)
        kernel = np.array([1, 2, 3, 4, 3, 2, 1], np.float32) / 16
        y = np.stack([np.convolve(row, kernel, mode="valid") for row in full]).astype(np.float32)
        return y, {"ctx": full[:, -6:]}


def test_numpy_stepper_with_a_fixed_block():
    proc = Processor(NumpyFir(), 16000)
    assert proc.backend == "onnx" and proc.model_block == 256
    x = signal(16000, 0.1)
    ref = proc.process_file_array(x)
    proc.reset()
    np.testing.assert_array_equal(live_compensated(proc, x, 7), ref)
    with pytest.raises(ValueError, match="256"):
        Processor(NumpyFir(), 16000, block_size=512)
    with pytest.raises(ValueError, match="torch model"):
        make_stepper(NumpyFir(), "torch")


def test_numpy_path_never_imports_torch():
    code = "\n".join(
        [
            "import sys",
            "import numpy as np",
            "from realtime.processor import Processor",
            textwrap.dedent(inspect.getsource(NumpyFir)),
            "proc = Processor(NumpyFir(), 22050, 44100)",
            "y = proc.process_file_array(np.random.default_rng(0).standard_normal(2205).astype(np.float32))",
            "assert y.shape == (4410,) and np.isfinite(y).all()",
            "assert 'torch' not in sys.modules, 'torch was imported'",
            "print('ok')",
        ]
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_triton_backend_needs_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        Processor(smoothing_model(48000), 16000, backend="triton")


@pytest.mark.gpu
def test_triton_backend_matches_cpu():
    x = signal(16000, 0.1)
    cpu = Processor(smoothing_model(48000), 16000, backend="torch").process_file_array(x)
    gpu = Processor(smoothing_model(48000), 16000, backend="triton")
    assert gpu.backend == "triton"
    np.testing.assert_allclose(gpu.process_file_array(x), cpu, atol=1e-5)


def test_building_processors_leaves_the_callers_generator_untouched():
    """The stepper folds weight norm in its own copy; the caller's model keeps its parameters and output."""
    import torch

    from models.registry import load_model

    model = load_model("speech", pretrained=False)
    names = set(dict(model.named_parameters()))
    x = torch.randn(1, 480)
    with torch.no_grad():
        before = model(x)
    for _ in range(2):
        Processor(model, 48000, backend="torch")
    assert set(dict(model.named_parameters())) == names
    with torch.no_grad():
        assert torch.equal(model(x), before)
