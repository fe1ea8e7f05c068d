"""Differentiable pruning gates and the resource-weighted pressure that closes them.

Every operation on an edge is multiplied by a gate computed from one scalar weight ``w``:

- ``hard`` (default, SpiderNet/Bonsai-Net): the forward value is exactly step(w) in {0, 1}; the
  backward pass is straight-through (derivative 1), so a closed op still gets gradient and can reopen.
- ``sigmoid`` (DNAL): sigmoid(scale * w) with ``scale`` annealed geometrically (1 -> 1e4) so the gate
  tends to a step; evaluation uses the hard threshold.

An op counts as open when ``w > 0`` for both kinds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch

GATE_KINDS = ("hard", "sigmoid")
GATE_INIT = 0.01  # gates start open
GATE_CLAMP = 0.1  # |w| is clamped after each optimiser step so a closed gate can reopen quickly


def gate_value(w: torch.Tensor, kind: str, scale: float, training: bool) -> torch.Tensor:
    step = (w > 0).to(w.dtype)
    if kind == "hard":
        return step + (w - w.detach())  # value step(w), gradient 1
    if kind == "sigmoid":
        return torch.sigmoid(scale * w) if training else step
    raise ValueError(f"unknown gate kind {kind!r}; choose from {', '.join(GATE_KINDS)}")


class _ApplyGate(torch.autograd.Function):
    """y * gate, keeping only a bfloat16 copy of y for the gate's gradient.

    The gate's gradient is one scalar, sum(y * grad); holding y at full precision until the backward
    pass would cost a whole activation per gated op that the plain network does not pay.
    """

    generate_vmap_rule = True  # the proxies take per-sample gradients with torch.func

    @staticmethod
    def forward(y, gate):
        return y * gate

    @staticmethod
    def setup_context(ctx, inputs, output):
        y, gate = inputs
        ctx.save_for_backward(y.to(torch.bfloat16), gate)

    @staticmethod
    def backward(ctx, grad):
        y_low, gate = ctx.saved_tensors
        grad_gate = (y_low.to(grad.dtype) * grad).sum().reshape(gate.shape) if ctx.needs_input_grad[1] else None
        return grad * gate, grad_gate


def apply_gate(y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    # Only the gate's gradient needs the custom Function; without it (no grad, or gates held fixed as
    # in the proxies' per-sample gradients) the plain product is the same and much cheaper.
    return _ApplyGate.apply(y, gate) if torch.is_grad_enabled() and gate.requires_grad else y * gate


def annealed_scale(progress: float, start: float = 1.0, end: float = 1e4) -> float:
    """Geometric annealing of the sigmoid gate's scale for training progress in [0, 1]."""
    progress = min(max(progress, 0.0), 1.0)
    return start * (end / start) ** progress


# -- resource cost of an operation -----------------------------------------------------------
# A cost function maps (op name, channels, stride, input resolution) to a non-negative number.
OpCost = Callable[[str, int, int, tuple[int, int]], float]


@lru_cache(maxsize=None)
def param_cost(op: str, channels: int, stride: int, resolution: tuple[int, int]) -> float:
    """Parameter count of the op at this shape (the counted cost until measured costs are used)."""
    from spidernet_ray.ops import build_op

    return float(sum(p.numel() for p in build_op(op, channels, stride).parameters()))


@dataclass
class PressureCoefficient:
    """Adaptive lambda of the gate pressure: grows geometrically while nothing is pruned, halves
    once pruning happens (Bonsai-Net/GOLD-NAS)."""

    value: float = 1e-4
    growth: float = 2.0
    maximum: float = 1.0

    def update(self, pruned: int) -> float:
        self.value = self.value / 2 if pruned else min(self.value * self.growth, self.maximum)
        return self.value


def gate_pressure(edges, cost: OpCost, mu: float, lam: float) -> torch.Tensor:
    """lam * sum over open ops of gate * (1 + mu * cost / max cost): pushes the costliest gates shut first.

    ``edges`` are MixedEdge modules (each knows its channels, stride and input resolution).
    """
    terms = []
    for edge in edges:
        for name in edge.op_names:
            terms.append((edge, name, cost(name, edge.channels, edge.stride, edge.resolution)))
    if not terms:
        return torch.zeros(())
    top = max(c for _, _, c in terms) or 1.0
    total = 0.0
    for edge, name, c in terms:
        w = edge.gate_weights[name]
        open_ = (w > 0).to(w.dtype)
        total = total + open_.detach() * edge.gate(name) * (1 + mu * c / top)
    return lam * total


def channel_pressure(edges, cost: OpCost, mu: float, lam: float) -> torch.Tensor:
    """Channel search: lam * sum over open channel-gated ops of mean(channel gates) * (1 + mu * cost / max cost).

    The mean makes closing a whole op's channels cost the same pressure as closing the op itself.
    """
    terms = [(edge, name, cost(name, edge.channels, edge.stride, edge.resolution))
             for edge in edges for name in getattr(edge, "channel_gates", {})]
    if not terms:
        return torch.zeros(())
    top = max(c for _, _, c in terms) or 1.0
    total = 0.0
    for edge, name, c in terms:
        open_ = (edge.gate_weights[name] > 0).to(edge.gate_weights[name].dtype)
        total = total + open_.detach() * edge.channel_gate(name).mean() * (1 + mu * c / top)
    return lam * total


def check_gate_kind(kind: str) -> str:
    if kind not in GATE_KINDS:
        raise ValueError(f"unknown gate kind {kind!r}; choose from {', '.join(GATE_KINDS)}")
    return kind

