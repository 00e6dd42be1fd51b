"""Streaming layers on (batch, channels, time) tensors, all following the `StreamingModule` contract.

Every layer is causal when streamed. A layer converted from a non-causal offline layer (a convolution
with right padding, a transposed convolution with `padding`) reproduces that layer's output delayed by
a fixed number of samples, its `latency`. Left context is cached with `with_context`.

Delay bookkeeping across layers of different rates uses three attributes besides `latency`:

- `down`: input samples per output sample of the layer's stride (1 for same-rate layers);
- `up`: output samples per input sample (transposed convolutions);
- `input_phase`: the residue `input_delay % down` the layer was built for.

If a layer's input stream lags the offline reference by `d` input samples, its output lags the offline
reference by `output_delay(layer, d) = (d // down) * up + latency` output samples. A strided layer only
reproduces the offline decimation when its window lines up with the offline one; `stride_alignment`
(the one place the phase rule lives) gives the extra delay that achieves that, and strided layers take
the delay of their input (`input_delay`) to build it in.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from .streaming import State, StreamingModule, init_children, prefixed, substate, with_context

__all__ = [
    "AvgPool1d",
    "ChannelLayerNorm",
    "Delay",
    "LeakyReLU",
    "Residual",
    "Sequential",
    "Snake",
    "StreamingConv1d",
    "StreamingConvTranspose1d",
    "output_delay",
    "remove_weight_norm",
    "stride_alignment",
]


def stride_alignment(delay: int, stride: int) -> int:
    """Extra delay (input samples) that rounds `delay` up to a multiple of `stride`.

    A stride-s layer fed blocks that are multiples of s decimates at stream positions fixed by the block
    grid; it reproduces the offline decimation only when the stream's lag behind the offline window
    grid is a multiple of s (cached_conv's phase rule).
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    return (-delay) % stride


def output_delay(module: nn.Module, input_delay: int) -> int:
    """Lag of `module`'s output behind its offline reference when its input lags by `input_delay`."""
    down = getattr(module, "down", 1)
    up = getattr(module, "up", 1)
    phase = getattr(module, "input_phase", 0)
    if input_delay < 0:
        raise ValueError(f"input_delay must be >= 0, got {input_delay}")
    if input_delay % down != phase:
        raise ValueError(
            f"{type(module).__name__} was built for an input delay of {phase} (mod {down}), "
            f"got {input_delay}: build it with input_delay={input_delay}"
        )
    return (input_delay // down) * up + module.latency


def remove_weight_norm(module: nn.Module) -> nn.Module:
    """Fold every weight-norm parametrisation under `module` into a plain weight, in place.

    For inference: the weights stop being recomputed at every block. Load trained weights first (the
    parameter names change).
    """
    for sub in module.modules():
        if parametrize.is_parametrized(sub, "weight"):
            parametrize.remove_parametrizations(sub, "weight", leave_parametrized=True)
    return module


def _check_input(module: StreamingModule, x: Tensor, channels: int | None) -> None:
    if x.dim() != 3:
        raise ValueError(
            f"{type(module).__name__} expects (batch, channels, time), got shape {tuple(x.shape)}"
        )
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{type(module).__name__} expects {channels} channels, got {x.shape[1]}")
    module.check_block(x.shape[-1])


def _device(module: nn.Module, device: torch.device | str | None) -> torch.device | str:
    if device is not None:
        return device
    first = next(module.parameters(), None)
    return first.device if first is not None else "cpu"


class _Windowed(StreamingModule):
    """A sliding window of `span + 1` input samples every `stride` samples, streamed causally.

    The offline reference window for output n covers input samples [n*stride + lookahead - span,
    n*stride + lookahead] (zeros outside the signal). Streamed, output m is computed as soon as the last
    sample of its stride group (m*stride + stride - 1) is in, so its window ends there minus the phase
    alignment; the lag is rounded up to whole output samples by `stride_alignment`.
    """

    def _setup_window(self, channels: int, span: int, stride: int, lookahead: int, input_delay: int) -> None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if not 0 <= lookahead <= span:
            raise ValueError(f"lookahead must be in 0..{span} (the window span), got {lookahead}")
        if input_delay < 0:
            raise ValueError(f"input_delay must be >= 0, got {input_delay}")
        self.channels, self.lookahead = channels, lookahead
        self.down = stride
        self.input_phase = input_delay % stride
        self.block_multiple = stride
        # Lag (input samples) between the newest sample of a stride group and the offline window end.
        lag = input_delay + lookahead - (stride - 1)
        align = stride_alignment(lag, stride)
        self.latency = (lag + align) // stride - input_delay // stride
        # Samples of the previous blocks the window needs; negative: skip the first samples instead.
        self.context = span + align - (stride - 1)

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        if self.context <= 0:
            return {}
        return {"ctx": torch.zeros(batch, self.channels, self.context, device=_device(self, device))}

    def _window_input(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        _check_input(self, x, self.channels)
        if self.context <= 0:
            return x[..., -self.context :], {}
        full, ctx = with_context(x, state["ctx"])
        return full, {"ctx": ctx}


class StreamingConv1d(_Windowed):
    """Conv1d streamed causally; `lookahead` future samples of the offline layer become latency.

    The offline reference is `nn.Conv1d` on the input padded with (span - lookahead) zeros on the left
    and `lookahead` on the right, span = (kernel_size - 1) * dilation: lookahead = 0 is a causal conv,
    lookahead = span a right-padded one, lookahead = span // 2 a 'same' one.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        lookahead: int = 0,
        weight_norm: bool = False,
        input_delay: int = 0,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or dilation < 1:
            raise ValueError(f"kernel_size and dilation must be >= 1, got {kernel_size}, {dilation}")
        conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride, 0, dilation, groups, bias)
        self.conv = _weight_norm(conv) if weight_norm else conv
        self.dilation, self.groups = dilation, groups
        self._setup_window(in_channels, (kernel_size - 1) * dilation, stride, lookahead, input_delay)

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        full, new_state = self._window_input(x, state)
        # Functional call: the module-call machinery costs more than a small conv on one block.
        conv = self.conv
        return F.conv1d(full, conv.weight, conv.bias, self.down, 0, self.dilation, self.groups), new_state


class AvgPool1d(_Windowed):
    """Average pooling streamed causally; the offline reference is `nn.AvgPool1d(kernel_size, stride)`.

    `lookahead` defaults to kernel_size - 1 (torch's window starts at n*stride, no padding).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 2,
        stride: int | None = None,
        lookahead: int | None = None,
        input_delay: int = 0,
    ) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        self.kernel_size = kernel_size
        stride = kernel_size if stride is None else stride
        lookahead = kernel_size - 1 if lookahead is None else lookahead
        self._setup_window(channels, kernel_size - 1, stride, lookahead, input_delay)

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        full, new_state = self._window_input(x, state)
        return F.avg_pool1d(full, self.kernel_size, self.down), new_state


class StreamingConvTranspose1d(StreamingModule):
    """ConvTranspose1d streamed causally: the overlap tail of each block is carried to the next.

    The offline reference is `nn.ConvTranspose1d(..., stride, padding)`; its `padding` (samples cropped
    at the start of the output) becomes latency. Each input block of N samples gives N * stride outputs.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        weight_norm: bool = False,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or stride < 1:
            raise ValueError(f"kernel_size and stride must be >= 1, got {kernel_size}, {stride}")
        if not 0 <= padding < kernel_size:
            raise ValueError(f"padding must be in 0..{kernel_size - 1}, got {padding}")
        conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride, bias=bias)
        self.conv = _weight_norm(conv) if weight_norm else conv
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.up, self.padding = kernel_size, stride, padding
        self.latency = padding
        self.tail = max(kernel_size - stride, 0)

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        if self.tail == 0:
            return {}
        return {"tail": torch.zeros(batch, self.out_channels, self.tail, device=_device(self, device))}

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        _check_input(self, x, self.in_channels)
        n_out = x.shape[-1] * self.up
        full = F.conv_transpose1d(x, self.conv.weight, None, self.up)
        if full.shape[-1] < n_out:  # kernel shorter than the stride: gaps are zeros
            full = F.pad(full, (0, n_out - full.shape[-1]))
        if self.tail:
            full = torch.cat([full[..., : self.tail] + state["tail"], full[..., self.tail :]], dim=-1)
        y = full[..., :n_out]
        if self.conv.bias is not None:
            y = y + self.conv.bias[:, None]
        return y, ({"tail": full[..., n_out:]} if self.tail else {})


class Delay(StreamingModule):
    """Delays the stream by `samples` (aligns parallel branches)."""

    def __init__(self, samples: int, channels: int) -> None:
        super().__init__()
        if samples < 0:
            raise ValueError(f"samples must be >= 0, got {samples}")
        self.latency, self.channels = samples, channels

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        if self.latency == 0:
            return {}
        device = device if device is not None else "cpu"
        return {"buf": torch.zeros(batch, self.channels, self.latency, device=device)}

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        _check_input(self, x, self.channels)
        if self.latency == 0:
            return x, {}
        full, buf = with_context(x, state["buf"])
        return full[..., : x.shape[-1]], {"buf": buf}


class _Pointwise(StreamingModule):
    """A per-sample map: no state, no latency (stateless layers keep the contract for uniformity)."""

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        return {}

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        _check_input(self, x, None)
        return self.apply_pointwise(x), {}

    def apply_pointwise(self, x: Tensor) -> Tensor:
        raise NotImplementedError


class ChannelLayerNorm(_Pointwise):
    """LayerNorm over channels at each time step (per-step statistics: streaming-safe)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)
        self.shape, self.eps = (channels,), eps

    def apply_pointwise(self, x: Tensor) -> Tensor:
        norm = self.norm
        return F.layer_norm(x.transpose(1, 2), self.shape, norm.weight, norm.bias, self.eps).transpose(1, 2)


class LeakyReLU(_Pointwise):
    def __init__(self, negative_slope: float = 0.1) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def apply_pointwise(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)


class Snake(_Pointwise):
    """Snake activation x + sin^2(alpha x) / alpha with a learnable alpha per channel."""

    def __init__(self, channels: int, alpha: float = 1.0, eps: float = 1e-9) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((channels, 1), float(alpha)))
        self.eps = eps

    def apply_pointwise(self, x: Tensor) -> Tensor:
        return x + torch.sin(self.alpha * x).pow(2) / (self.alpha + self.eps)


def _rates(layers: list[nn.Module]) -> tuple[int, int, int]:
    """(block_multiple, down, up) of a chain: the block lengths every layer accepts, total strides."""
    multiple, rate, down, up = 1, Fraction(1), 1, 1
    for layer in layers:
        need = getattr(layer, "block_multiple", 1)
        # The layer sees N * rate samples; that must be a multiple of `need`.
        step = need * rate.denominator // math.gcd(need * rate.denominator, rate.numerator)
        multiple = math.lcm(multiple, step)
        layer_up, layer_down = getattr(layer, "up", 1), getattr(layer, "down", 1)
        rate *= Fraction(layer_up, layer_down)
        down, up = down * layer_down, up * layer_up
    return multiple, down, up


class Sequential(StreamingModule):
    """Streaming layers in a chain; child states live under "0.", "1.", ...

    `input_delay` is the lag of the chain's input behind its offline reference; strided children must
    have been built for the delay that reaches them (checked here).
    """

    def __init__(self, *layers: StreamingModule, input_delay: int = 0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        # Stateless children (activations, norms) skip the state plumbing: it costs more than they do.
        self._stateful = [bool(layer.init_state(1, "cpu")) for layer in layers]
        self.block_multiple, self.down, self.up = _rates(list(layers))
        self.input_phase = input_delay % self.down
        delay = input_delay
        for layer in layers:
            delay = output_delay(layer, delay)
        self.latency = delay - (input_delay // self.down) * self.up

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        return init_children({str(i): layer for i, layer in enumerate(self.layers)}, batch, device)

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        self.check_block(x.shape[-1])
        new_state: State = {}
        for i, (layer, stateful) in enumerate(zip(self.layers, self._stateful)):
            if stateful:
                x, sub = layer.step(x, substate(state, str(i)))
                new_state.update(prefixed(str(i), sub))
            else:
                x, _ = layer.step(x, {})
        return x, new_state


class Residual(StreamingModule):
    """x + body(x), with x delayed by the body's latency so both branches line up."""

    def __init__(self, body: StreamingModule, channels: int) -> None:
        super().__init__()
        if getattr(body, "down", 1) != 1 or getattr(body, "up", 1) != 1:
            raise ValueError("Residual needs a same-rate body (no strides or upsampling inside)")
        self.body = body
        self.skip = Delay(body.latency, channels)
        self.block_multiple, self.latency = body.block_multiple, body.latency

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        return init_children({"body": self.body, "skip": self.skip}, batch, device)

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        y, body_state = self.body.step(x, substate(state, "body"))
        new_state = prefixed("body", body_state)
        if self.latency == 0:  # nothing to align: skip the delay's plumbing
            return y + x, new_state
        skip, skip_state = self.skip.step(x, substate(state, "skip"))
        new_state.update(prefixed("skip", skip_state))
        return y + skip, new_state
