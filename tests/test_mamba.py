"""The streaming Mamba block: mamba-ssm's parameter layout, exact block-by-block streaming."""

import math

import pytest
import torch
import torch.nn.functional as F

from kernels.reference import selective_scan_ref
from models.mamba import Mamba


def mamba_ssm_shapes(d_model, d_state=16, d_conv=4, expand=2):
    """The state_dict of mamba_ssm.Mamba(d_model, d_state, d_conv, expand), as documented upstream."""
    d_inner, dt_rank = expand * d_model, math.ceil(d_model / 16)
    return {
        "A_log": (d_inner, d_state),
        "D": (d_inner,),
        "in_proj.weight": (2 * d_inner, d_model),
        "conv1d.weight": (d_inner, 1, d_conv),
        "conv1d.bias": (d_inner,),
        "x_proj.weight": (dt_rank + 2 * d_state, d_inner),
        "dt_proj.weight": (d_inner, dt_rank),
        "dt_proj.bias": (d_inner,),
        "out_proj.weight": (d_model, d_inner),
    }


@pytest.mark.parametrize("d_model", [16, 40, 256])
def test_loads_a_mamba_ssm_state_dict_strictly(d_model):
    g = torch.Generator().manual_seed(d_model)
    foreign = {k: torch.randn(*s, generator=g) for k, s in mamba_ssm_shapes(d_model).items()}
    m = Mamba(d_model)
    m.load_state_dict(foreign, strict=True)
    assert torch.equal(m.A_log, foreign["A_log"])


def offline_mamba(m: Mamba, x: torch.Tensor) -> torch.Tensor:
    """mamba-ssm's slow-path forward written out independently: padded conv, reference scan, zero state."""
    L = x.shape[1]
    xz = F.linear(x, m.in_proj.weight).transpose(1, 2)
    xs, z = xz.chunk(2, dim=1)
    xs = F.silu(m.conv1d(xs)[..., :L])
    x_dbl = F.linear(xs.transpose(1, 2), m.x_proj.weight)
    dt, B, C = torch.split(x_dbl, [m.dt_rank, m.d_state, m.d_state], dim=-1)
    delta = F.linear(dt, m.dt_proj.weight).transpose(1, 2)
    y = selective_scan_ref(
        xs,
        delta,
        -torch.exp(m.A_log),
        B.transpose(1, 2),
        C.transpose(1, 2),
        m.D,
        z,
        m.dt_proj.bias,
        delta_softplus=True,
    )
    return F.linear(y.transpose(1, 2), m.out_proj.weight)


def random_mamba(d_model=24, seed=0):
    torch.manual_seed(seed)
    m = Mamba(d_model)
    with torch.no_grad():  # move away from the init so every path (A, D, biases) matters
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


@torch.no_grad()
def test_forward_equals_independent_offline_implementation():
    m = random_mamba()
    x = torch.randn(2, 157, 24)
    assert (m(x) - offline_mamba(m, x)).abs().max() <= 1e-5


@torch.no_grad()
@pytest.mark.parametrize("seed", range(5))
def test_random_partitions_equal_one_pass(seed):
    m = random_mamba(seed=seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 311, 24, generator=g)
    full = m(x)
    cuts = sorted(set(torch.randint(1, 311, (12,), generator=g).tolist()))
    state, parts = m.init_state(2), []
    for a, b in zip([0] + cuts, cuts + [311]):
        y, state = m.step(x[:, a:b], state)
        parts.append(y)
    assert (torch.cat(parts, 1) - full).abs().max() <= 1e-5
    assert state["ssm"].dtype == torch.float32


@torch.no_grad()
def test_step_is_pure_and_restarts_identically():
    m = random_mamba()
    x = torch.randn(1, 40, 24)
    s0 = m.init_state(1)
    y1, s1 = m.step(x, s0)
    assert all(torch.count_nonzero(v) == 0 for v in s0.values())  # input state untouched
    y2, _ = m.step(x, m.init_state(1))
    assert torch.equal(y1, y2)
    y3, _ = m.step(x, s1)
    assert not torch.allclose(y3, y1)  # the carried state matters


def test_wrong_input_shape():
    with pytest.raises(ValueError, match=r"\(batch, length, 24\)"):
        Mamba(24).step(torch.zeros(1, 10, 23), Mamba(24).init_state(1))


@pytest.mark.gpu
def test_matches_mamba_ssm_forward_on_gpu():
    mamba_ssm = pytest.importorskip("mamba_ssm")
    torch.manual_seed(0)
    ref = mamba_ssm.Mamba(64).cuda()
    m = Mamba(64).cuda()
    m.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 1000, 64, device="cuda")
    with torch.no_grad():
        err = (m(x) - ref(x)).abs().max() / ref(x).abs().max()
    assert err <= 1e-3  # TF32 matmuls in both
