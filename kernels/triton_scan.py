"""Triton selective-scan kernels with an initial and a final state.

Two kernels share the recurrence of `kernels.reference.selective_scan_ref`:

- `block_scan`: grid over (batch, blocks of channels); the (BLOCK_D, N) state stays in registers
  while a runtime-length loop walks along L in chunks of BLOCK_T steps. Inside a chunk the steps
  are combined by a parallel associative scan of the affine maps h -> a*h + b, so loads are
  coalesced along L and the serial dependency is one multiply-add per chunk.
- `multistep_update`: short blocks (L <= MULTISTEP_MAX_LEN), the multi-token generalisation of
  mamba-ssm's `selective_state_update`: L is a compile-time constant, the per-step loop is
  unrolled (every load can be issued before the state chain needs it), channel blocks are small
  so even batch 1 launches many programs, and the state is written once at the end.

Both fuse the delta bias and softplus, the D skip and the silu(z) gate, accumulate in fp32 for
fp16/bf16 inputs, and accept preallocated output buffers. `final_state_out` may be the same tensor
as `initial_state` (in-place update): each program reads its state slice before writing it.

On CPU the kernels run under Triton's interpreter, which is chosen when the kernels are decorated:
TRITON_INTERPRET=1 must be set before this module is imported.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

from .validate import validate_scan_args

MULTISTEP_MAX_LEN = 64

__all__ = ["MULTISTEP_MAX_LEN", "block_scan", "multistep_update", "selective_scan_triton"]


@triton.jit
def _softplus(x):
    # log1p(exp(x)) via Kahan's log1p (no tl.log1p), identity above 20 as torch and mamba-ssm.
    e = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + e
    log1p = tl.where(w == 1.0, e, tl.log(w) * e / tl.where(w == 1.0, 1.0, w - 1.0))
    return tl.where(x <= 20.0, log1p, x)


@triton.jit
def _prepare_delta(dt, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    if HAS_BIAS:
        dt = dt + bias
    if SOFTPLUS:
        dt = _softplus(dt)
    return dt


@triton.jit
def _finish(y, u, d_skip, z, HAS_D: tl.constexpr, HAS_Z: tl.constexpr):
    if HAS_D:
        y = y + d_skip * u
    if HAS_Z:
        y = y * z * tl.sigmoid(z)
    return y


@triton.jit
def _affine_combine(a1, b1, a2, b2):
    # (h -> a2*h + b2) after (h -> a1*h + b1)
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _load_A_and_state(
    A_ptr, h0_ptr, pid_b, offs_d, offs_n, dim, dstate,
    HAS_H0: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Masks, A and the initial state of one (batch, channel block) program, shared by both kernels.

    Padded channels/states get A = 0 and h = 0 (and B = C = 0 from their loads): they carry zeros and
    never reach memory.
    """
    mask_d = offs_d < dim
    mask_n = offs_n < dstate
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A = tl.load(A_ptr + offs_d[:, None] * dstate + offs_n[None, :], mask=mask_dn, other=0.0)
    state_offs = pid_b * dim * dstate + offs_d[:, None] * dstate + offs_n[None, :]
    if HAS_H0:
        h = tl.load(h0_ptr + state_offs, mask=mask_dn, other=0.0)
    else:
        h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    return mask_d, mask_n, mask_dn, A, h, state_offs


@triton.jit
def _block_scan_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, out_ptr, hT_ptr,
    dim, dstate, length,
    s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_zb, s_zd, s_zl, s_Bb, s_Bn, s_Bl, s_Cb, s_Cn, s_Cl,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, BLOCK_T)
    mask_d, mask_n, mask_dn, A, h, state_offs = _load_A_and_state(
        A_ptr, h0_ptr, pid_b, offs_d, offs_n, dim, dstate, HAS_H0, BLOCK_D, BLOCK_N
    )
    d_skip = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0)[:, None] if HAS_D else 0.0
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0)[:, None] if HAS_BIAS else 0.0
    is_last = (offs_t == BLOCK_T - 1)[None, :, None]

    u_base = u_ptr + pid_b * s_ub + offs_d[:, None] * s_ud
    dt_base = delta_ptr + pid_b * s_tb + offs_d[:, None] * s_td
    z_base = z_ptr + pid_b * s_zb + offs_d[:, None] * s_zd
    B_base = B_ptr + pid_b * s_Bb + offs_n[None, :] * s_Bn
    C_base = C_ptr + pid_b * s_Cb + offs_n[None, :] * s_Cn
    out_base = out_ptr + pid_b * dim * length + offs_d[:, None] * length
    for t0 in range(0, length, BLOCK_T):
        t = t0 + offs_t
        mask_t = t < length
        mask_dt = mask_d[:, None] & mask_t[None, :]
        mask_tn = mask_t[:, None] & mask_n[None, :]
        u = tl.load(u_base + t[None, :] * s_ul, mask=mask_dt, other=0.0).to(tl.float32)
        dt = tl.load(dt_base + t[None, :] * s_tl, mask=mask_dt, other=0.0).to(tl.float32)
        # Steps past the end get delta = 0, i.e. the identity map, so the last column is h_L.
        dt = tl.where(mask_dt, _prepare_delta(dt, bias, HAS_BIAS, SOFTPLUS), 0.0)
        Bt = tl.load(B_base + t[:, None] * s_Bl, mask=mask_tn, other=0.0).to(tl.float32)
        Ct = tl.load(C_base + t[:, None] * s_Cl, mask=mask_tn, other=0.0).to(tl.float32)
        dA = tl.exp(dt[:, :, None] * A[:, None, :])
        dBu = (dt * u)[:, :, None] * Bt[None, :, :]
        a, b = tl.associative_scan((dA, dBu), axis=1, combine_fn=_affine_combine)
        hs = a * h[:, None, :] + b
        y = tl.sum(hs * Ct[None, :, :], axis=2)
        h = tl.sum(tl.where(is_last, hs, 0.0), axis=1)
        z = tl.load(z_base + t[None, :] * s_zl, mask=mask_dt, other=0.0).to(tl.float32) if HAS_Z else 0.0
        y = _finish(y, u, d_skip, z, HAS_D, HAS_Z)
        tl.store(out_base + t[None, :], y.to(out_ptr.dtype.element_ty), mask=mask_dt)
    if STORE_FINAL:
        tl.store(hT_ptr + state_offs, h, mask=mask_dn)


@triton.jit
def _multistep_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, out_ptr, hT_ptr,
    dim, dstate,
    s_ub, s_ud, s_ul, s_tb, s_td, s_tl, s_zb, s_zd, s_zl, s_Bb, s_Bn, s_Bl, s_Cb, s_Cn, s_Cl,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr,
    LENGTH: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d, mask_n, mask_dn, A, h, state_offs = _load_A_and_state(
        A_ptr, h0_ptr, pid_b, offs_d, offs_n, dim, dstate, HAS_H0, BLOCK_D, BLOCK_N
    )
    d_skip = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0) if HAS_D else 0.0
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0) if HAS_BIAS else 0.0

    u_base = u_ptr + pid_b * s_ub + offs_d * s_ud
    dt_base = delta_ptr + pid_b * s_tb + offs_d * s_td
    z_base = z_ptr + pid_b * s_zb + offs_d * s_zd
    B_base = B_ptr + pid_b * s_Bb + offs_n * s_Bn
    C_base = C_ptr + pid_b * s_Cb + offs_n * s_Cn
    out_base = out_ptr + pid_b * dim * LENGTH + offs_d * LENGTH
    for t in tl.static_range(LENGTH):
        u = tl.load(u_base + t * s_ul, mask=mask_d, other=0.0).to(tl.float32)
        dt = tl.load(dt_base + t * s_tl, mask=mask_d, other=0.0).to(tl.float32)
        dt = _prepare_delta(dt, bias, HAS_BIAS, SOFTPLUS)
        Bt = tl.load(B_base + t * s_Bl, mask=mask_n, other=0.0).to(tl.float32)
        Ct = tl.load(C_base + t * s_Cl, mask=mask_n, other=0.0).to(tl.float32)
        h = h * tl.exp(dt[:, None] * A) + (dt * u)[:, None] * Bt[None, :]
        y = tl.sum(h * Ct[None, :], axis=1)
        z = tl.load(z_base + t * s_zl, mask=mask_d, other=0.0).to(tl.float32) if HAS_Z else 0.0
        y = _finish(y, u, d_skip, z, HAS_D, HAS_Z)
        tl.store(out_base + t, y.to(out_ptr.dtype.element_ty), mask=mask_d)
    if STORE_FINAL:
        tl.store(hT_ptr + state_offs, h, mask=mask_dn)


def _check_buffer(name: str, buf: Tensor, shape: tuple, dtype: torch.dtype, device: torch.device) -> None:
    if tuple(buf.shape) != tuple(shape) or buf.dtype != dtype or buf.device != device:
        raise ValueError(
            f"{name} must be a {dtype} tensor of shape {tuple(shape)} on {device}, "
            f"got {buf.dtype} {tuple(buf.shape)} on {buf.device}"
        )
    if not buf.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def _check_launchable(u: Tensor, kernel) -> None:
    from triton.runtime.interpreter import InterpretedFunction

    if not u.is_cuda and not isinstance(kernel, InterpretedFunction):
        raise ValueError(
            "the triton backend needs CUDA tensors; on CPU set TRITON_INTERPRET=1 before importing "
            f"kernels.triton_scan (got tensors on {u.device})"
        )


def _prepare(
    kernel,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    initial_state: Tensor | None,
    return_final_state: bool,
    out: Tensor | None,
    final_state_out: Tensor | None,
) -> tuple[list, dict, Tensor, Tensor | None]:
    """Validate, allocate outputs, and build the argument list shared by both kernels."""
    validate_scan_args(u, delta, A, B, C, D, z, delta_bias, initial_state)
    _check_launchable(u, kernel)
    batch, dim, length = u.shape
    dstate = A.shape[1]
    if out is None:
        out = torch.empty(batch, dim, length, dtype=u.dtype, device=u.device)
    else:
        _check_buffer("out", out, (batch, dim, length), u.dtype, u.device)
    store_final = return_final_state or final_state_out is not None
    if final_state_out is None and store_final:
        final_state_out = torch.empty(batch, dim, dstate, dtype=torch.float32, device=u.device)
    elif final_state_out is not None:
        _check_buffer("final_state_out", final_state_out, (batch, dim, dstate), torch.float32, u.device)
    h0 = initial_state.contiguous() if initial_state is not None else None
    z_arg = z if z is not None else u  # never read: HAS_Z is False
    args = [
        u, delta, A.contiguous(), B, C,
        D.contiguous() if D is not None else u,
        z_arg,
        delta_bias.contiguous() if delta_bias is not None else u,
        h0 if h0 is not None else u,
        out,
        final_state_out if final_state_out is not None else u,
    ]  # fmt: skip
    strides = [*u.stride(), *delta.stride(), *z_arg.stride(), *B.stride(), *C.stride()]
    flags = dict(
        HAS_D=D is not None,
        HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None,
        SOFTPLUS=bool(delta_softplus),
        HAS_H0=h0 is not None,
        STORE_FINAL=store_final,
    )
    return args + [dim, dstate], dict(strides=strides, flags=flags), out, final_state_out


def _device_context(u: Tensor):
    return torch.cuda.device(u.device.index) if u.is_cuda else contextlib.nullcontext()


def _result(
    u: Tensor,
    initial_state: Tensor | None,
    return_final_state: bool,
    out: Tensor,
    final: Tensor | None,
    launched: bool,
) -> Tensor | tuple[Tensor, Tensor]:
    if not launched and final is not None:
        # Nothing to scan (L == 0 or an empty batch/dim): the final state is the initial one.
        if initial_state is None:
            final.zero_()
        elif final.data_ptr() != initial_state.data_ptr():
            final.copy_(initial_state)
    return (out, final) if return_final_state else out


# Elements of one (BLOCK_D, BLOCK_T, BLOCK_N) chunk tile: at 4 warps ~16 fp32 registers per thread
# and tile, several tiles live at once (sm_90 build: ~100 registers, no spills at N = 16).
_TILE_ELEMENTS = 2048


def _power_of_two(name: str, value: int) -> int:
    if not isinstance(value, int) or value < 1 or value & (value - 1):
        raise ValueError(f"{name} must be a power of two, got {value!r}")
    return value


def _block_scan_tiles(u: Tensor, block_n: int) -> tuple[int, int]:
    """(BLOCK_D, BLOCK_T): fewer channels per program, and longer chunks, until the grid fills the GPU."""
    batch, dim, _ = u.shape
    block_d = max(1, min(triton.next_power_of_2(max(dim, 1)), _TILE_ELEMENTS // (16 * block_n)))
    if u.is_cuda:
        sms = torch.cuda.get_device_properties(u.device).multi_processor_count
        while block_d > 1 and batch * triton.cdiv(dim, block_d) < sms:
            block_d //= 2
    block_t = max(16, min(64, _TILE_ELEMENTS // (block_d * block_n)))
    return block_d, block_t


def block_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
    *,
    out: Tensor | None = None,
    final_state_out: Tensor | None = None,
    block_d: int | None = None,
    block_t: int | None = None,
    num_warps: int = 4,
) -> Tensor | tuple[Tensor, Tensor]:
    """Chunked block scan for any L; layouts and semantics as `selective_scan_ref`.

    out / final_state_out: optional contiguous buffers to write into (final_state_out may alias
    initial_state). block_d, block_t (powers of two) and num_warps tune the launch.
    """
    args, extra, out, final = _prepare(
        _block_scan_kernel, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
        initial_state, return_final_state, out, final_state_out,
    )  # fmt: skip
    batch, dim, length = u.shape
    block_n = triton.next_power_of_2(A.shape[1])
    auto_d, auto_t = _block_scan_tiles(u, block_n)
    block_d, block_t = (
        _power_of_two("block_d", block_d or auto_d),
        _power_of_two("block_t", block_t or auto_t),
    )
    launched = length > 0 and batch * dim > 0
    if launched:
        grid = (batch, triton.cdiv(dim, block_d))
        with _device_context(u):
            _block_scan_kernel[grid](
                *args, length, *extra["strides"], **extra["flags"],
                BLOCK_D=block_d, BLOCK_T=block_t, BLOCK_N=block_n, num_warps=num_warps,
            )  # fmt: skip
    return _result(u, initial_state, return_final_state, out, final, launched)


def _multistep_block_d(dstate: int) -> tuple[int, int]:
    # Same table as mamba-ssm's selective_state_update: smaller channel blocks as N grows.
    if dstate <= 16:
        return 32, 4
    if dstate <= 32:
        return 16, 4
    if dstate <= 64:
        return 8, 4
    if dstate <= 128:
        return 4, 4
    return 4, 8


def multistep_update(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
    *,
    out: Tensor | None = None,
    final_state_out: Tensor | None = None,
    block_d: int | None = None,
    num_warps: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Multi-token state update for short blocks (1 <= L <= MULTISTEP_MAX_LEN).

    Same semantics as `block_scan`; each distinct L compiles its own unrolled kernel.
    """
    length = u.shape[-1] if isinstance(u, Tensor) and u.dim() == 3 else None
    if length is not None and not 0 <= length <= MULTISTEP_MAX_LEN:
        raise ValueError(f"u has length {length}; multistep_update takes 0..{MULTISTEP_MAX_LEN} steps")
    args, extra, out, final = _prepare(
        _multistep_kernel, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
        initial_state, return_final_state, out, final_state_out,
    )  # fmt: skip
    batch, dim, _ = u.shape
    block_n = triton.next_power_of_2(A.shape[1])
    default_block_d, default_warps = _multistep_block_d(A.shape[1])
    block_d = _power_of_two("block_d", block_d or min(default_block_d, triton.next_power_of_2(max(dim, 1))))
    launched = length > 0 and batch * dim > 0
    if launched:
        grid = (batch, triton.cdiv(dim, block_d))
        with _device_context(u):
            _multistep_kernel[grid](
                *args, *extra["strides"], **extra["flags"],
                LENGTH=length, BLOCK_D=block_d, BLOCK_N=block_n, num_warps=num_warps or default_warps,
            )  # fmt: skip
    return _result(u, initial_state, return_final_state, out, final, launched)


def selective_scan_triton(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """`multistep_update` for L <= MULTISTEP_MAX_LEN, `block_scan` otherwise."""
    short = isinstance(u, Tensor) and u.dim() == 3 and u.shape[-1] <= MULTISTEP_MAX_LEN
    fn = multistep_update if short else block_scan
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_final_state)
