"""The training loop: one readable path from a batch to the optimiser step, with pruning.

An epoch of a supernet: train steps (task loss + optional gate pressure), then close the epoch's
gate counts and deadhead; when ops were deleted, the optimiser forgets their parameters.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from spidernet_ray.supernet import CellNetwork, SuperNet, supernet_loss

GRAD_CLIP = 5.0
# Networks train, and are measured, with 4-D weights in channels_last: on CPU, oneDNN's convolutions
# (depthwise and dilated above all) are faster in it (the README gives the figures). A convolution
# whose weight or input is channels_last gives channels_last activations, so batches need no
# conversion (Fashion-MNIST's come so anyway: its images are stored height-width-channel). The same
# function, its float sums in another order. Checkpoints keep the default layout (tensors are made
# contiguous when saved).
TRAINING_LAYOUT = torch.channels_last


def make_optimizer(model: CellNetwork, lr: float = 0.05, weight_decay: float = 3e-4, momentum: float = 0.9):
    """SGD with two groups: network weights, and gates (SpiderNet closes gates by weight decay on them)."""
    gates = model.gate_parameters() if isinstance(model, SuperNet) else []
    gate_ids = {id(p) for p in gates}
    weights = [p for p in model.parameters() if id(p) not in gate_ids]
    groups = [{"params": weights, "name": "weights"}]
    if gates:
        groups.append({"params": gates, "name": "gates"})
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


def refresh_optimizer(optimizer: torch.optim.Optimizer, model: CellNetwork) -> None:
    """After deadheading or growth: drop deleted parameters (and their momentum), add new ones."""
    alive = {id(p) for p in model.parameters()}
    known = set()
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) not in alive:
                optimizer.state.pop(p, None)
        group["params"] = [p for p in group["params"] if id(p) in alive]
        known.update(id(p) for p in group["params"])
    gate_ids = {id(p) for p in model.gate_parameters()} if isinstance(model, SuperNet) else set()
    by_name = {g.get("name"): g for g in optimizer.param_groups}
    for p in model.parameters():
        if id(p) not in known:
            by_name["gates" if id(p) in gate_ids else "weights"]["params"].append(p)


def train_step(
    model: CellNetwork,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    pressure: Callable[[], torch.Tensor] | None = None,
) -> float:
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = supernet_loss(model.forward_heads(x), y)
    if pressure is not None:
        loss = loss + pressure()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    if isinstance(model, SuperNet):
        model.clamp_gates()
    return loss.item()


def train_epoch(
    model: CellNetwork,
    optimizer: torch.optim.Optimizer,
    batches: Iterable,
    pressure: Callable[[], torch.Tensor] | None = None,
    should_stop: Callable[[float], bool] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> float:
    """Train over the batches; returns the mean loss. ``should_stop(loss)`` can abort early (e.g. NaN);
    ``on_step(steps done, mean loss so far)`` hears of every step (progress display)."""
    total, count = 0.0, 0
    for x, y in batches:
        loss = train_step(model, optimizer, x, y, pressure)
        total, count = total + loss, count + 1
        if on_step is not None:
            on_step(count, total / count)
        if should_stop is not None and should_stop(loss):
            break
    return total / max(count, 1)


def prune_after_epoch(model: SuperNet, optimizer: torch.optim.Optimizer, limit: int | None = None) -> list:
    """Close the epoch's gate counts, deadhead, and keep the optimiser in step with the module tree.
    ``limit`` (gradual pruning) deletes at most that many ops, those open least often first."""
    model.end_epoch()
    removed = model.deadhead(limit=limit)
    if removed:
        refresh_optimizer(optimizer, model)
    return removed


def narrow_after_epoch(model: SuperNet, optimizer: torch.optim.Optimizer) -> int:
    """Channel search: remove the hidden channels whose gates have shut; returns how many went."""
    removed = model.shrink_channels()
    if removed:
        refresh_optimizer(optimizer, model)
    return removed


@torch.no_grad()
def evaluate(model: CellNetwork, batches: Iterable) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the last head in eval mode."""
    model.eval()
    correct, loss, n = 0, 0.0, 0
    for x, y in batches:
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        n += y.numel()
    return correct / max(n, 1), loss / max(n, 1)
