"""Candidate operations on an edge, in a registry users can extend.

An operation builder takes ``(channels, stride)`` and returns an ``nn.Module`` mapping
(N, channels, H, W) to (N, channels, ceil(H/stride), ceil(W/stride)).

    @register_op("conv_1x1")
    def conv_1x1(channels, stride):
        return nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1, stride, bias=False),
                             nn.BatchNorm2d(channels))

Channel search (``WIDTH_SITES``): the separable and dilated convolutions have a hidden channel width
that can be narrowed. Their builders take ``width`` as a third argument; ``narrow_op`` rebuilds one
with only some hidden channels, copying the surviving weights.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

OpBuilder = Callable[[int, int], nn.Module]
OPS: dict[str, OpBuilder] = {}


def register_op(name: str) -> Callable[[OpBuilder], OpBuilder]:
    """Decorator: register an operation builder under ``name`` (names are unique)."""

    def add(builder: OpBuilder) -> OpBuilder:
        if name in OPS:
            raise ValueError(f"operation {name!r} is already registered")
        if not name or "." in name:
            raise ValueError(f"operation name {name!r} must be non-empty and contain no '.'")
        OPS[name] = builder
        return builder

    return add


def build_op(name: str, channels: int, stride: int, width: int | None = None) -> nn.Module:
    """The operation; ``width`` (channel search) narrows its hidden channels, None or ``channels`` is full."""
    try:
        builder = OPS[name]
    except KeyError:
        raise ValueError(f"unknown operation {name!r}; known: {', '.join(sorted(OPS))}") from None
    if width is not None and width != channels:
        if name not in WIDTH_SITES:
            raise ValueError(f"operation {name!r} has no hidden channel width to narrow")
        if width <= 0:
            raise ValueError(f"operation {name!r}: width must be positive, got {width}")
        return builder(channels, stride, width)
    return builder(channels, stride)


class Subsample(nn.Module):
    """Strided subsampling without parameters (keeps every stride-th pixel)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x


class ReLUSelect(nn.Module):
    """ReLU of the input channels ``keep`` only: the head of a narrowed dilated convolution, whose
    depthwise stage then sees only the channels that survived channel search."""

    def __init__(self, width: int):
        super().__init__()
        self.register_buffer("keep", torch.arange(width))

    def forward(self, x):
        return torch.relu(x.index_select(1, self.keep))


def separable_conv(channels: int, kernel: int, stride: int, dilation: int = 1,
                   out_channels: int | None = None) -> list[nn.Module]:
    padding = dilation * (kernel - 1) // 2
    out_channels = channels if out_channels is None else out_channels
    return [
        nn.ReLU(),
        nn.Conv2d(channels, channels, kernel, stride, padding, dilation=dilation, groups=channels, bias=False),
        nn.Conv2d(channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
    ]


@register_op("identity")
def identity(channels: int, stride: int) -> nn.Module:
    return Subsample(stride) if stride > 1 else nn.Identity()


@register_op("max_pool_3x3")
def max_pool_3x3(channels: int, stride: int) -> nn.Module:
    return nn.MaxPool2d(3, stride, padding=1)


@register_op("avg_pool_3x3")
def avg_pool_3x3(channels: int, stride: int) -> nn.Module:
    return nn.AvgPool2d(3, stride, padding=1, count_include_pad=False)


def _sep_conv(kernel: int) -> OpBuilder:
    # Two stacked depthwise-separable convolutions, as in DARTS; only the first one strides. The hidden
    # width is the channel count between the two (output of layer 3, the first BatchNorm).
    def build(channels: int, stride: int, width: int | None = None) -> nn.Module:
        width = channels if width is None else width
        return nn.Sequential(*separable_conv(channels, kernel, stride, out_channels=width),
                             *separable_conv(width, kernel, 1, out_channels=channels))

    return build


def _dil_conv(kernel: int) -> OpBuilder:
    # The hidden width is the depthwise stage's (output of layer 1); narrowed, layer 0 selects its inputs.
    def build(channels: int, stride: int, width: int | None = None) -> nn.Module:
        if width is None or width == channels:
            return nn.Sequential(*separable_conv(channels, kernel, stride, dilation=2))
        _, *narrow = separable_conv(width, kernel, stride, dilation=2, out_channels=channels)
        return nn.Sequential(ReLUSelect(width), *narrow)

    return build


register_op("sep_conv_3x3")(_sep_conv(3))
register_op("sep_conv_5x5")(_sep_conv(5))
register_op("dil_conv_3x3")(_dil_conv(3))
register_op("dil_conv_5x5")(_dil_conv(5))

# Channel search: op name -> index of the layer whose output carries the op's hidden channels.
WIDTH_SITES: dict[str, int] = {"sep_conv_3x3": 3, "sep_conv_5x5": 3, "dil_conv_3x3": 1, "dil_conv_5x5": 1}


def hidden_width(name: str, op: nn.Module) -> int:
    """The current hidden width of a narrowable operation (the channels its gated layer outputs)."""
    layer = op[WIDTH_SITES[name]]
    return layer.num_features if isinstance(layer, nn.BatchNorm2d) else layer.out_channels


def forward_with_channel_gate(name: str, op: nn.Sequential, x, gate):
    """The op's output with its hidden channels multiplied by ``gate`` (one value per channel)."""
    site = WIDTH_SITES[name]
    for index, layer in enumerate(op):
        x = layer(x)
        if index == site:
            x = x * gate.view(1, -1, 1, 1)
    return x


def narrow_op(name: str, op: nn.Module, channels: int, stride: int, keep: list[int], silent: bool = False) -> nn.Module:
    """A copy of ``op`` keeping only the hidden channels ``keep`` (indices into its current width).

    Every tensor is copied, indexed along the dimensions the narrower width shrinks, so when the other
    channels' gates are closed the narrowed op computes exactly what the gated one did. ``silent``
    (every channel was shut, one is kept): the kept channel's consumer is zeroed, so the op still
    computes what it did with every gate shut.
    """
    width = hidden_width(name, op)
    index = torch.as_tensor(sorted(keep), dtype=torch.long)
    device = next(op.parameters()).device
    narrow = build_op(name, channels, stride, width=len(index))
    current = op.state_dict()
    state = {}
    for key, target in narrow.state_dict().items():
        tensor = current.get(key)
        if tensor is None:  # a first narrowing adds the input selection: it selected every channel
            tensor = torch.arange(width)
        for dim, (have, want) in enumerate(zip(tensor.shape, target.shape)):
            if have != want:
                tensor = tensor.index_select(dim, index.to(tensor.device))
        state[key] = tensor
    narrow.load_state_dict(state)
    if silent:
        consumer = next(layer for layer in list(narrow)[WIDTH_SITES[name] + 1:] if isinstance(layer, nn.Conv2d))
        with torch.no_grad():
            consumer.weight.zero_()
    return narrow.to(device).train(op.training)

DEFAULT_OPS = (
    "avg_pool_3x3",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "identity",
    "max_pool_3x3",
    "sep_conv_3x3",
    "sep_conv_5x5",
)
