"""Triton scan kernels vs the sequential reference: CPU interpreter (tiny shapes) and GPU (real shapes)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from kernels import selective_scan  # noqa: E402
from kernels.reference import selective_scan_ref  # noqa: E402
from kernels.triton_scan import (  # noqa: E402
    MULTISTEP_MAX_LEN,
    block_scan,
    multistep_update,
    selective_scan_triton,
)

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_inputs(batch, dim, dstate, length, dtype=torch.float32, device=DEVICE, seed=0):
    """Mamba-like inputs: u a per-channel chirp plus noise, A = -(n+1) jittered, dt biased to [1e-3, 0.1]."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float64)
    f0 = torch.rand(batch, dim, 1, generator=g, dtype=torch.float64) * 0.05
    chirp = torch.sin(2 * math.pi * (f0 * t + 1e-4 * t**2))
    u = (chirp + 0.3 * torch.randn(batch, dim, length, generator=g, dtype=torch.float64)).float()
    dt_init = torch.exp(torch.rand(dim, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    args = dict(
        u=u,
        delta=0.5 * torch.randn(batch, dim, length, generator=g),
        A=-(
            torch.arange(1, dstate + 1).float().expand(dim, dstate)
            * (1 + 0.1 * torch.rand(dim, dstate, generator=g))
        ),
        B=torch.randn(batch, dstate, length, generator=g),
        C=torch.randn(batch, dstate, length, generator=g),
        D=torch.randn(dim, generator=g),
        z=torch.randn(batch, dim, length, generator=g),
        delta_bias=dt_init + torch.log(-torch.expm1(-dt_init)),  # inverse softplus
        initial_state=torch.randn(batch, dim, dstate, generator=g),
    )
    low = ("u", "delta", "B", "C", "z")
    return {k: v.to(device=device, dtype=dtype if k in low else torch.float32) for k, v in args.items()}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30)).item()


def nan_buffers(x: dict, length: int | None = None) -> dict:
    batch, dim, full = x["u"].shape
    dstate = x["A"].shape[1]
    out = torch.full((batch, dim, length if length is not None else full), float("nan"), dtype=x["u"].dtype)
    final = torch.full((batch, dim, dstate), float("nan"))
    return dict(out=out.to(x["u"].device), final_state_out=final.to(x["u"].device))


# Which optional inputs are passed: (D, z, delta_bias + softplus, initial_state).
OPTIONS = [
    (True, True, True, True),
    (False, False, False, True),
    (True, False, True, False),
    (False, True, False, True),
]


def pick(x: dict, use_d: bool, use_z: bool, use_bias: bool, use_h0: bool) -> dict:
    # Without the in-kernel softplus, pass the positive step it would have produced.
    delta = (
        x["delta"] if use_bias else F.softplus(x["delta"].float() + x["delta_bias"][:, None]).to(x["u"].dtype)
    )
    return dict(
        u=x["u"], delta=delta, A=x["A"], B=x["B"], C=x["C"],
        D=x["D"] if use_d else None,
        z=x["z"] if use_z else None,
        delta_bias=x["delta_bias"] if use_bias else None,
        delta_softplus=use_bias,
        initial_state=x["initial_state"] if use_h0 else None,
        return_final_state=True,
    )  # fmt: skip


@pytest.mark.triton_interpreter
@pytest.mark.parametrize("length", [1, 7, 33, 70])
@pytest.mark.parametrize("options", OPTIONS)
def test_block_scan_matches_reference(length, options):
    x = make_inputs(2, 6, 5, length, seed=length)  # dim 6, dstate 5: padded channel and state lanes
    kw = pick(x, *options)
    ref, ref_h = selective_scan_ref(**kw)
    bufs = nan_buffers(x)
    out, h = block_scan(**kw, **bufs, block_d=4, block_t=16)
    assert out.data_ptr() == bufs["out"].data_ptr() and h.data_ptr() == bufs["final_state_out"].data_ptr()
    assert rel_err(out, ref) <= 1e-5
    assert rel_err(h, ref_h) <= 1e-5


@pytest.mark.triton_interpreter
@pytest.mark.parametrize("length", [1, 7, 33, MULTISTEP_MAX_LEN])
@pytest.mark.parametrize("options", OPTIONS[:2])
def test_multistep_update_matches_reference(length, options):
    x = make_inputs(2, 8, 16, length, seed=100 + length)
    kw = pick(x, *options)
    ref, ref_h = selective_scan_ref(**kw)
    bufs = nan_buffers(x)
    out, h = multistep_update(**kw, **bufs, block_d=4)
    assert rel_err(out, ref) <= 1e-5
    assert rel_err(h, ref_h) <= 1e-5


@pytest.mark.triton_interpreter
def test_strided_inputs():
    # B and C as transposed views (as sliced from a projection output), u/delta/z non-contiguous along L.
    x = make_inputs(1, 4, 4, 38, seed=3)
    kw = pick(x, True, True, True, True)
    kw["B"] = x["B"].transpose(1, 2).contiguous().transpose(1, 2)  # dstate innermost
    for k in ("u", "delta", "z", "B", "C"):
        kw[k] = kw[k][:, :, ::2]
    assert not kw["u"].is_contiguous() and kw["B"].stride(1) == 1
    ref, ref_h = selective_scan_ref(**kw)
    for fn in (block_scan, multistep_update):
        out, h = fn(**kw)
        assert rel_err(out, ref) <= 1e-5 and rel_err(h, ref_h) <= 1e-5


@pytest.mark.triton_interpreter
def test_split_equals_one_pass():
    length = 70
    x = make_inputs(1, 8, 8, length, seed=7)
    kw = pick(x, True, True, True, True)
    one, one_h = selective_scan_triton(**kw)
    g = torch.Generator().manual_seed(1)
    cuts = sorted(torch.randperm(length - 1, generator=g)[:4].add(1).tolist())
    bounds = [0, *cuts, length]
    assert (
        max(b - a for a, b in zip(bounds, bounds[1:], strict=False)) <= MULTISTEP_MAX_LEN
    )  # both kernels get used
    h, pieces = kw["initial_state"], []
    for a, b in zip(bounds, bounds[1:], strict=False):
        part = {k: (v[..., a:b] if k in ("u", "delta", "z", "B", "C") else v) for k, v in kw.items()}
        y, h = selective_scan_triton(**{**part, "initial_state": h})
        pieces.append(y)
    assert rel_err(torch.cat(pieces, dim=-1), one) <= 1e-5
    assert rel_err(h, one_h) <= 1e-5
    # One pass through the block scan too: the two kernels agree on the same sequence.
    blk, blk_h = block_scan(**kw)
    assert rel_err(blk, one) <= 1e-5 and rel_err(blk_h, one_h) <= 1e-5


@pytest.mark.triton_interpreter
@pytest.mark.parametrize("fn", [block_scan, multistep_update])
def test_state_updated_in_place(fn):
    x = make_inputs(2, 4, 4, 9, seed=11)
    kw = pick(x, True, True, True, True)
    ref, ref_h = selective_scan_ref(**kw)
    state = x["initial_state"].clone()
    out = fn(**{**kw, "initial_state": state, "return_final_state": False}, final_state_out=state)
    assert rel_err(out, ref) <= 1e-5
    assert rel_err(state, ref_h) <= 1e-5


@pytest.mark.triton_interpreter
def test_dispatch_through_public_api():
    x = make_inputs(1, 4, 4, 65, seed=5)  # one step past the multi-step limit, then within it
    kw = pick(x, True, True, True, True)
    for length in (65, 64):
        part = {k: (v[..., :length] if k in ("u", "delta", "z", "B", "C") else v) for k, v in kw.items()}
        ref, ref_h = selective_scan_ref(**part)
        out, h = selective_scan(**part, backend="triton")
        assert rel_err(out, ref) <= 1e-5 and rel_err(h, ref_h) <= 1e-5


@pytest.mark.triton_interpreter
@pytest.mark.parametrize("fn", [block_scan, multistep_update])
def test_empty_length_returns_initial_state(fn):
    x = make_inputs(1, 4, 4, 0)
    out, h = fn(**pick(x, True, True, True, True))
    assert out.shape == (1, 4, 0)
    assert torch.equal(h, x["initial_state"])
    _, h_zero = fn(**pick(x, True, True, True, False))
    assert torch.equal(h_zero, torch.zeros_like(h_zero))


@pytest.mark.triton_interpreter
def test_bad_arguments():
    x = make_inputs(1, 4, 4, MULTISTEP_MAX_LEN + 1)
    kw = pick(x, True, True, True, True)
    with pytest.raises(ValueError, match="multistep_update takes"):
        multistep_update(**kw)
    with pytest.raises(ValueError, match="out must be"):
        block_scan(**kw, out=torch.empty(1, 4, 3))
    with pytest.raises(ValueError, match="final_state_out must be"):
        block_scan(**kw, final_state_out=torch.empty(1, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="block_t must be a power of two"):
        block_scan(**kw, block_t=12)
    with pytest.raises(ValueError, match="initial_state has shape"):
        block_scan(**{**kw, "initial_state": torch.zeros(1, 4, 5)})


_SUBPROCESS = """
import torch
from kernels.reference import selective_scan_ref
from kernels.triton_scan import selective_scan_triton
u, dt, B, C = torch.randn(1, 4, 5), torch.rand(1, 4, 5), torch.randn(1, 3, 5), torch.randn(1, 3, 5)
A, h0 = -torch.rand(4, 3), torch.randn(1, 4, 3)
try:
    out = selective_scan_triton(u, dt, A, B, C, initial_state=h0)
except ValueError as err:
    print("ValueError:", err)
else:
    print("max error", (out - selective_scan_ref(u, dt, A, B, C, initial_state=h0)).abs().max().item())
"""


@pytest.mark.triton_interpreter
@pytest.mark.parametrize("interpret", ["1", None])
def test_fresh_process_env(interpret):
    """Set before import: kernels run on CPU; unset on a CPU machine: a clear error, not a driver crash."""
    if interpret is None and torch.cuda.is_available():
        pytest.skip("CUDA present: CPU tensors are a plain device mismatch there")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret is not None:
        env["TRITON_INTERPRET"] = interpret
    proc = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    if interpret:
        assert float(proc.stdout.split()[-1]) <= 1e-5
    else:
        assert "TRITON_INTERPRET=1" in proc.stdout


# Tolerances (rtol, atol) from mamba-ssm's selective_state_update tests: the GPU computes exp with
# the fast approximate unit and bf16 inputs/outputs round to 8 mantissa bits.
GPU_TOLERANCES = {torch.float32: (3e-4, 1e-3), torch.bfloat16: (1e-2, 5e-2)}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", list(GPU_TOLERANCES))
@pytest.mark.parametrize("length", [1, 4, 16, 64, 65, 1000, 4099])
def test_gpu_realistic_shapes(dtype, length):
    x = make_inputs(2, 256, 16, length, dtype=dtype, device="cuda", seed=length)
    kw = pick(x, True, True, True, True)
    ref, ref_h = selective_scan_ref(**kw)  # fp32 math on the same (rounded) inputs
    out, h = selective_scan_triton(**kw)
    rtol, atol = GPU_TOLERANCES[dtype]
    torch.testing.assert_close(out.float(), ref.float(), rtol=rtol, atol=atol)
    torch.testing.assert_close(h, ref_h, rtol=rtol, atol=atol)
    if length > 1:
        blk, blk_h = block_scan(**kw)
        torch.testing.assert_close(blk.float(), ref.float(), rtol=rtol, atol=atol)
        torch.testing.assert_close(blk_h, ref_h, rtol=rtol, atol=atol)


@pytest.mark.gpu
@pytest.mark.parametrize("length", [16, 2048, 5000])
def test_gpu_matches_mamba_ssm(length):
    iface = pytest.importorskip("mamba_ssm.ops.selective_scan_interface")
    x = make_inputs(2, 512, 16, length, device="cuda", seed=length)
    kw = pick(x, True, True, True, False)
    out, h = selective_scan_triton(**kw)
    ref, ref_h = iface.selective_scan_fn(
        x["u"],
        x["delta"],
        x["A"],
        x["B"],
        x["C"],
        x["D"],
        x["z"],
        x["delta_bias"],
        True,
        return_last_state=True,
    )
    torch.testing.assert_close(out, ref, rtol=3e-4, atol=1e-3)
    torch.testing.assert_close(h, ref_h, rtol=3e-4, atol=1e-3)
