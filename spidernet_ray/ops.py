"""Candidate operations on an edge, in a registry users can extend.

An operation builder takes ``(channels, stride)`` and returns an ``nn.Module`` mapping
(N, channels, H, W) to (N, channels, ceil(H/stride), ceil(W/stride)).

    @register_op("conv_1x1")
    def conv_1x1(channels, stride):
        return nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1, stride, bias=False),
                             nn.BatchNorm2d(channels))
"""

from __future__ import annotations

from typing import Callable

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


def build_op(name: str, channels: int, stride: int) -> nn.Module:
    try:
        builder = OPS[name]
    except KeyError:
        raise ValueError(f"unknown operation {name!r}; known: {', '.join(sorted(OPS))}") from None
    return builder(channels, stride)


class Subsample(nn.Module):
    """Strided subsampling without parameters (keeps every stride-th pixel)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x


def separable_conv(channels: int, kernel: int, stride: int, dilation: int = 1) -> list[nn.Module]:
    padding = dilation * (kernel - 1) // 2
    return [
        nn.ReLU(),
        nn.Conv2d(channels, channels, kernel, stride, padding, dilation=dilation, groups=channels, bias=False),
        nn.Conv2d(channels, channels, 1, bias=False),
        nn.BatchNorm2d(channels),
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
    # Two stacked depthwise-separable convolutions, as in DARTS; only the first one strides.
    def build(channels: int, stride: int) -> nn.Module:
        return nn.Sequential(*separable_conv(channels, kernel, stride), *separable_conv(channels, kernel, 1))

    return build


def _dil_conv(kernel: int) -> OpBuilder:
    def build(channels: int, stride: int) -> nn.Module:
        return nn.Sequential(*separable_conv(channels, kernel, stride, dilation=2))

    return build


register_op("sep_conv_3x3")(_sep_conv(3))
register_op("sep_conv_5x5")(_sep_conv(5))
register_op("dil_conv_3x3")(_dil_conv(3))
register_op("dil_conv_5x5")(_dil_conv(5))

DEFAULT_OPS = (
    "avg_pool_3x3",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "identity",
    "max_pool_3x3",
    "sep_conv_3x3",
    "sep_conv_5x5",
)
