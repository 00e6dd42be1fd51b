"""Every CPU scan backend equals the sequential reference; the conv carries its state exactly."""

import pytest
import torch

from kernels import causal_conv1d, selective_scan
from kernels.reference import selective_scan_ref


def make_inputs(batch=2, dim=6, length=37, dstate=5, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(
        u=r(batch, dim, length).to(dtype),
        delta=(r(batch, dim, length) * 0.5).to(dtype),
        A=-torch.rand(dim, dstate, generator=g) * 3 - 0.1,
        B=r(batch, dstate, length).to(dtype),
        C=r(batch, dstate, length).to(dtype),
        D=r(dim),
        z=r(batch, dim, length).to(dtype),
        delta_bias=r(dim) * 0.3,
        initial_state=r(batch, dim, dstate),
    )


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


OPTIONS = [
    dict(),
    dict(delta_softplus=True),
    dict(delta_softplus=True, D=True, z=True, delta_bias=True),
    dict(D=True),
    dict(z=True, delta_bias=True),
]


@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("length", [1, 2, 7, 37, 301])
def test_chunked_equals_reference(opts, length):
    x = make_inputs(length=length, seed=length)
    if not opts.get("delta_softplus"):
        x["delta"] = x["delta"].abs()  # a raw delta must be positive for a decaying scan
    kw = {k: x[k] for k in ("D", "z", "delta_bias") if opts.get(k)}
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"])
    common = dict(delta_softplus=opts.get("delta_softplus", False), initial_state=x["initial_state"])
    y_ref, h_ref = selective_scan_ref(*args, **kw, **common, return_final_state=True)
    y, h = selective_scan(*args, **kw, **common, return_final_state=True, backend="chunked")
    assert torch.isfinite(y).all()
    assert rel_err(y, y_ref) <= 1e-5
    assert rel_err(h, h_ref) <= 1e-5


def test_chunked_long_sequence_across_super_blocks():
    # Several super-blocks and a ragged last chunk.
    x = make_inputs(batch=1, dim=64, length=5000, dstate=16, seed=3)
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"])
    kw = dict(D=x["D"], delta_bias=x["delta_bias"], delta_softplus=True, initial_state=x["initial_state"])
    y_ref, h_ref = selective_scan_ref(*args, **kw, return_final_state=True)
    y, h = selective_scan(*args, **kw, return_final_state=True, backend="chunked")
    assert rel_err(y, y_ref) <= 1e-5 and rel_err(h, h_ref) <= 1e-5


def test_chunked_is_safe_for_huge_decays():
    # delta*A summed over a chunk is far below -88: a cumsum-then-exp scan would overflow to inf/nan.
    x = make_inputs(batch=1, dim=4, length=400, dstate=4, seed=5)
    delta = torch.full_like(x["delta"], 30.0)
    args = (x["u"], delta, x["A"] * 10, x["B"], x["C"])
    y_ref, h_ref = selective_scan_ref(*args, initial_state=x["initial_state"], return_final_state=True)
    y, h = selective_scan(*args, initial_state=x["initial_state"], return_final_state=True, backend="chunked")
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    assert rel_err(y, y_ref) <= 1e-5 and rel_err(h, h_ref) <= 1e-5


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_split_equals_one_pass(backend):
    x = make_inputs(batch=2, dim=8, length=203, dstate=6, seed=11)
    kw = dict(D=x["D"], delta_bias=x["delta_bias"], delta_softplus=True)
    full, h_full = selective_scan(
        x["u"],
        x["delta"],
        x["A"],
        x["B"],
        x["C"],
        z=x["z"],
        **kw,
        initial_state=x["initial_state"],
        return_final_state=True,
        backend=backend,
    )
    g = torch.Generator().manual_seed(1)
    cuts = sorted(torch.randperm(202, generator=g)[:9].add(1).tolist())
    h, parts = x["initial_state"], []
    for a, b in zip([0] + cuts, cuts + [203]):
        sl = slice(a, b)
        y, h = selective_scan(
            x["u"][..., sl],
            x["delta"][..., sl],
            x["A"],
            x["B"][..., sl],
            x["C"][..., sl],
            z=x["z"][..., sl],
            **kw,
            initial_state=h,
            return_final_state=True,
            backend=backend,
        )
        parts.append(y)
    assert (torch.cat(parts, -1) - full).abs().max() <= 1e-5
    assert (h - h_full).abs().max() <= 1e-5


def test_half_precision_inputs_keep_fp32_state():
    x = make_inputs(length=20, seed=2, dtype=torch.bfloat16)
    y, h = selective_scan(
        x["u"],
        x["delta"],
        x["A"],
        x["B"],
        x["C"],
        delta_softplus=True,
        initial_state=x["initial_state"],
        return_final_state=True,
        backend="chunked",
    )
    assert y.dtype == torch.bfloat16 and h.dtype == torch.float32


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("delta", lambda x: x["delta"][..., :-1], "delta has shape"),
        ("A", lambda x: x["A"].double(), "A has dtype"),
        ("B", lambda x: x["B"][:, :-1], "B has shape"),
        ("C", lambda x: x["C"].unsqueeze(0), "C has shape"),
        ("z", lambda x: x["z"][:1], "z has shape"),
        ("D", lambda x: x["D"][:-1], "D has shape"),
        ("delta_bias", lambda x: x["delta_bias"].half(), "delta_bias has dtype"),
        ("initial_state", lambda x: x["initial_state"][:, :, :-1], "initial_state has shape"),
    ],
)
def test_bad_arguments_name_the_argument_and_expected_shape(name, change, message):
    x = make_inputs(length=9)
    x[name] = change(x)
    with pytest.raises(ValueError, match=message):
        selective_scan(**x)


def test_unknown_backend():
    x = make_inputs(length=3)
    with pytest.raises(ValueError, match="unknown backend"):
        selective_scan(**x, backend="fast")


def test_causal_conv_split_equals_one_pass_and_matches_padded_conv():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, 101, generator=g)
    w = torch.randn(5, 4, generator=g)
    b = torch.randn(5, generator=g)
    full, state_full = causal_conv1d(x, w, b, activation="silu")
    padded = torch.nn.functional.conv1d(x, w.unsqueeze(1), b, padding=3, groups=5)[..., :101]
    assert (full - torch.nn.functional.silu(padded)).abs().max() <= 1e-5
    state, parts = None, []
    for a, c in [(0, 1), (1, 3), (3, 40), (40, 40), (40, 101)]:
        y, state = causal_conv1d(x[..., a:c], w, b, state, activation="silu")
        parts.append(y)
    assert (torch.cat(parts, -1) - full).abs().max() <= 1e-6
    assert torch.equal(state, state_full)


def test_causal_conv_rejects_bad_state():
    with pytest.raises(ValueError, match="conv_state has shape"):
        causal_conv1d(torch.zeros(1, 3, 5), torch.zeros(3, 4), conv_state=torch.zeros(1, 3, 2))
