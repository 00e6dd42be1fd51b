"""The initial-state correction behind the mamba_ssm backend, checked on CPU with the reference scan."""

from __future__ import annotations

import sys

import pytest
import torch

from kernels.mamba_ssm_scan import _selective_scan_fn, add_initial_state, selective_scan_mamba_ssm
from kernels.reference import prepare_delta, selective_scan_ref


def ref_zero_state_scan(u, delta, A, B, C, D, delta_bias, delta_softplus):
    """The reference standing where mamba-ssm's kernel stands: h_0 = 0, no gate, last state returned."""
    return selective_scan_ref(u, delta, A, B, C, D, None, delta_bias, delta_softplus, None, True)


def make_inputs(batch, dim, dstate, length, decay=1.0, device="cpu", seed=0):
    """Noise-driven Mamba-like inputs; `decay` scales A (large values make sum(delta*A) << -88)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float32)
    x = dict(
        u=torch.sin(0.05 * t * torch.arange(1, dim + 1)[:, None]).expand(batch, dim, length)
        + 0.2 * torch.randn(batch, dim, length, generator=g),
        delta=torch.randn(batch, dim, length, generator=g),
        A=-decay * torch.arange(1, dstate + 1).float().expand(dim, dstate).contiguous(),
        B=torch.randn(batch, dstate, length, generator=g),
        C=torch.randn(batch, dstate, length, generator=g),
        D=torch.randn(dim, generator=g),
        z=torch.randn(batch, dim, length, generator=g),
        delta_bias=torch.full((dim,), -2.0),
        delta_softplus=True,
        initial_state=3.0 * torch.randn(batch, dim, dstate, generator=g),
    )
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in x.items()}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("chunk_len", [None, 1, 5, 64])
@pytest.mark.parametrize("use_z", [True, False])
def test_correction_equals_scan_from_initial_state(chunk_len, use_z):
    x = make_inputs(2, 6, 4, 37)
    if not use_z:
        x["z"] = None
    ref, ref_h = selective_scan_ref(**x, return_final_state=True)
    out, h = add_initial_state(ref_zero_state_scan, **x, return_final_state=True, chunk_len=chunk_len)
    assert rel_err(out, ref) <= 1e-5
    assert rel_err(h, ref_h) <= 1e-5
    # The correction is not a no-op: the zero-state run differs from the reference.
    zero, _ = ref_zero_state_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["delta_bias"], True)
    assert rel_err(zero * torch.nn.functional.silu(x["z"]) if use_z else zero, ref) > 1e-2


def test_large_decays_do_not_overflow():
    x = make_inputs(1, 4, 16, 300, decay=8.0, seed=1)
    S_L = (prepare_delta(x["delta"], x["delta_bias"], True)[..., None] * x["A"][:, None, :]).sum(dim=2)
    assert S_L.max() < -88  # exp(-S) would be inf: the formula must only use exp(S)
    assert torch.isinf(torch.exp(-S_L)).all()
    ref, ref_h = selective_scan_ref(**x, return_final_state=True)
    out, h = add_initial_state(ref_zero_state_scan, **x, return_final_state=True, chunk_len=7)
    assert torch.isfinite(out).all() and torch.isfinite(h).all()
    assert rel_err(out, ref) <= 1e-5
    assert rel_err(h, ref_h) <= 1e-5


def test_split_through_correction_equals_one_pass():
    x = make_inputs(1, 4, 8, 50, seed=2)
    one, one_h = selective_scan_ref(**x, return_final_state=True)
    h, pieces = x["initial_state"], []
    for a, b in [(0, 1), (1, 20), (20, 50)]:
        part = {k: (v[..., a:b] if k in ("u", "delta", "z", "B", "C") else v) for k, v in x.items()}
        y, h = add_initial_state(ref_zero_state_scan, **{**part, "initial_state": h}, return_final_state=True)
        pieces.append(y)
    assert rel_err(torch.cat(pieces, dim=-1), one) <= 1e-5
    assert rel_err(h, one_h) <= 1e-5


def test_bad_arguments_and_missing_package(monkeypatch):
    x = make_inputs(1, 2, 2, 5)
    with pytest.raises(ValueError, match="chunk_len"):
        add_initial_state(ref_zero_state_scan, **x, chunk_len=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            selective_scan_mamba_ssm(**x)
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)  # import of mamba_ssm now fails
    with pytest.raises(ImportError, match="pip install --no-build-isolation mamba-ssm==2.3.2.post1"):
        _selective_scan_fn()


@pytest.mark.gpu
@pytest.mark.parametrize("length", [1, 100, 4099])
def test_gpu_mamba_ssm_with_initial_state(length):
    pytest.importorskip("mamba_ssm.ops.selective_scan_interface")
    x = make_inputs(2, 256, 16, length, device="cuda", seed=length)
    ref, ref_h = selective_scan_ref(**x, return_final_state=True)
    out, h = selective_scan_mamba_ssm(**x, return_final_state=True)
    torch.testing.assert_close(out, ref, rtol=3e-4, atol=1e-3)
    torch.testing.assert_close(h, ref_h, rtol=3e-4, atol=1e-3)
