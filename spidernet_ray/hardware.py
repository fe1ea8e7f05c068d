"""Hardware measurements: latency, peak training memory, parameters and FLOPs, measured not guessed.

One API serves the gates' resource pressure (``OpCostTable``), the mutation budget check, the
scheduler and the reports (``measure``). Every measurement works on CPU; the CUDA paths (CUDA events,
``max_memory_allocated``) are taken when the model runs on a CUDA device. A model is measured in
the memory layout it is in; the search and retraining measure theirs in ``train.TRAINING_LAYOUT``,
the layout they train in.

- Latency: median of repeated timed forward passes (eval mode, no grad) after warm-up, at a stated
  batch size; the spread is the interquartile range (p75 - p25) of the same timings.
- Peak memory: the most bytes live during a real training step (forward with every head,
  ``supernet_loss``, backward, SGD step with momentum), on a deep copy so the caller's model and
  optimiser stay untouched. It counts the copy's resident tensors (parameters, buffers, optimiser
  state, the batch) plus the highest allocation level reached during the step. CUDA reads the
  allocator's peak (``cuda_max_allocated``); CPU replays the allocation events of torch's profiler
  (``cpu_profiler``), a measurement of live tensor bytes, not of the process's resident set.
- Params: the sum of ``numel`` over parameters. FLOPs: torch's ``FlopCounterMode`` for one
  sample's forward pass (it counts matrix products and convolutions, two FLOPs per multiply-add).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from spidernet_ray.ops import build_op
from spidernet_ray.supernet import CellNetwork, SuperNet, supernet_loss
from spidernet_ray.train import make_optimizer, train_step

MB = 2**20
COST_METRICS = ("latency", "memory", "params", "flops")


@dataclass(frozen=True)
class HardwareMetrics:
    latency_ms: float  # median forward time at latency_batch_size
    latency_spread_ms: float  # interquartile range of those timings
    peak_memory_mb: float  # peak live bytes of one training step at batch_size
    memory_method: str  # "cuda_max_allocated" or "cpu_profiler"
    params: int
    flops: int  # forward pass of one sample
    batch_size: int  # training batch of the memory measurement
    latency_batch_size: int
    device: str
    estimated: bool = False  # latency and memory from the run's cost model, not measured

    def to_dict(self) -> dict:
        return asdict(self)


# -- placement --------------------------------------------------------------------------------
def model_device(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def on_device(model: nn.Module, device: torch.device | str | None) -> tuple[nn.Module, torch.device]:
    """The model on ``device`` (a copy when it lives elsewhere, so the caller's model never moves)."""
    current = model_device(model)
    device = current if device is None else torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device != current and next(model.parameters(), None) is not None:
        return copy.deepcopy(model).to(device), device
    return model, device


# -- latency ----------------------------------------------------------------------------------
def _forward_times_ms(model: nn.Module, x: torch.Tensor, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        model(x)
    if x.device.type == "cuda":
        # Events time the GPU work itself; one synchronisation at the end keeps the launches queued.
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
        for start, end in pairs:
            start.record()
            model(x)
            end.record()
        torch.cuda.synchronize(x.device)
        return [start.elapsed_time(end) for start, end in pairs]
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        model(x)
        times.append((time.perf_counter_ns() - start) / 1e6)
    return times


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int = 1,
    device: torch.device | str | None = None,
    warmup: int = 3,
    repeats: int = 10,
) -> tuple[float, float]:
    """(median, interquartile range) in milliseconds of one forward pass of a ``batch_size`` batch."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    model, device = on_device(model, device)
    x = torch.randn(batch_size, *input_shape, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            times = _forward_times_ms(model, x, warmup, repeats)
    finally:
        model.train(was_training)
    p25, median, p75 = np.percentile(times, [25, 50, 75])
    return float(median), float(p75 - p25)


# -- peak memory ------------------------------------------------------------------------------
def tensor_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views and shared weights count once)."""
    storages = {}
    for t in tensors:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def _peak_allocation_cpu(step: Callable[[], None]) -> int:
    """Highest level of CPU tensor bytes allocated by ``step`` above the level it started at."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # The raw event list holds every allocation (+bytes) and free (-bytes); the aggregated
    # FunctionEvents fold most of them into their ops and lose the order we need.
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events = [e for e in events if e.device_type() == torch.autograd.DeviceType.CPU]
    level = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        level += event.nbytes()
        peak = max(peak, level)
    return peak


def _peak_allocation_cuda(step: Callable[[], None], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    start = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - start


def peak_step_memory(step: Callable[[], None], resident: int, device: torch.device) -> tuple[int, str]:
    """(peak bytes, method) of running ``step``: ``resident`` bytes plus the step's peak allocation."""
    if device.type == "cuda":
        return resident + _peak_allocation_cuda(step, device), "cuda_max_allocated"
    if device.type == "cpu":
        return resident + _peak_allocation_cpu(step), "cpu_profiler"
    raise ValueError(f"no memory measurement for device type {device.type!r}")


def measure_peak_memory(
    model: CellNetwork,
    input_shape: tuple[int, int, int],
    batch_size: int,
    device: torch.device | str | None = None,
    disposable: bool = False,
) -> tuple[float, str]:
    """(peak MiB, method) of one SGD training step at ``batch_size`` on a copy of ``model``, or on
    ``model`` itself when it is ``disposable`` (the caller throws it away after: the step changes it).

    The optimiser's momentum buffers are created before the measured step (as zeros, the shape the
    first step would give them), so it is a steady-state step: momentum, parameters and the batch
    resident; activations, gradients and temporaries peak. (Creating them by running an unmeasured
    step first gives the same peak at twice the cost.)
    """
    device = torch.device(device) if device is not None else model_device(model)
    clone = (model if disposable else copy.deepcopy(model)).to(device)
    optimizer = make_optimizer(clone)
    for group in optimizer.param_groups:
        for p in group["params"]:
            optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p)
    x = torch.randn(batch_size, *input_shape, device=device)
    y = torch.randint(0, clone.genome.num_classes, (batch_size,), device=device)
    if isinstance(clone, SuperNet):
        # Fresh gate-open counters: the measured step then frees no tensor allocated before the
        # profiler started (the profiler cannot size those frees and warns about them).
        clone.end_epoch()
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    resident = tensor_bytes([*clone.parameters(), *clone.buffers(), *state, x, y])
    peak, method = peak_step_memory(lambda: train_step(clone, optimizer, x, y), resident, device)
    return peak / MB, method


def training_memory_floor(model: CellNetwork, input_shape: tuple[int, int, int], batch_size: int) -> float:
    """MiB that a training step of ``model`` needs at the least, on any device.

    When backward starts, the parameters, their momentum, the buffers, the batch and every activation
    the forward pass saved for backward are live at once. Their bytes are counted, not profiled, so
    the figure is the same on any device; ``measure_peak_memory`` adds the step's temporaries and
    gradients on top (for the smallest network it reports about twice as much).
    """
    x = torch.zeros(batch_size, *input_shape)
    y = torch.zeros(batch_size, dtype=torch.long)
    resident = [*model.parameters(), *model.buffers(), x, y]
    saved = saved_bytes(lambda: supernet_loss(copy.deepcopy(model).train().forward_heads(x), y), resident)
    params = tensor_bytes(model.parameters())  # twice: weights and momentum
    return (2 * params + tensor_bytes([*model.buffers(), x, y]) + sum(saved.values())) / MB


def saved_bytes(forward: Callable[[], torch.Tensor], resident: list[torch.Tensor]) -> dict[int, int]:
    """Bytes of each storage that running ``forward`` saves for backward, other than ``resident``'s."""
    counted = {t.untyped_storage().data_ptr() for t in resident}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in counted:
            saved[storage.data_ptr()] = storage.nbytes()
        return t.detach()  # the tensor itself would make a reference cycle with its grad_fn (a leak)

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    if out.untyped_storage().data_ptr() not in counted:  # what the op hands on is live too
        saved[out.untyped_storage().data_ptr()] = out.untyped_storage().nbytes()
    return saved


# -- counts -----------------------------------------------------------------------------------
def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str | None = None) -> int:
    """FLOPs of one sample's forward pass in eval mode, as torch's FlopCounterMode counts them."""
    model, device = on_device(model, device)
    x = torch.randn(1, *input_shape, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def measure(
    model: CellNetwork,
    input_shape: tuple[int, int, int],
    batch_size: int,
    device: torch.device | str | None = None,
    *,
    latency_batch_size: int = 1,
    warmup: int = 3,
    repeats: int = 10,
    disposable: bool = False,
) -> HardwareMetrics:
    """Every hardware metric of ``model``: latency at ``latency_batch_size`` (inference), peak memory
    of training at ``batch_size`` (the batch in use), params and per-sample FLOPs. A ``disposable``
    model (one the caller throws away after) is measured without a copy and ends up changed."""
    model, device = on_device(model, device)
    latency, spread = measure_latency(model, input_shape, latency_batch_size, device, warmup, repeats)
    memory_mb, method = measure_peak_memory(model, input_shape, batch_size, device, disposable)
    return HardwareMetrics(
        latency_ms=latency,
        latency_spread_ms=spread,
        peak_memory_mb=memory_mb,
        memory_method=method,
        params=count_params(model),
        flops=count_flops(model, input_shape, device),
        batch_size=batch_size,
        latency_batch_size=latency_batch_size,
        device=str(device),
    )


# -- per-operation costs for the gates ----------------------------------------------------------
class OpCostTable:
    """Measured cost of one operation at one shape, for ``gates.gate_pressure`` (an ``OpCost``).

    ``metric``: "latency" (ms of a forward pass), "memory" (MiB it adds to a training step, counted),
    "params" or "flops" (per sample). Each (op, channels, stride, resolution) is measured once, on
    first use, and cached; ``measurements`` counts how many were taken.
    """

    def __init__(
        self,
        metric: str = "latency",
        device: torch.device | str = "cpu",
        batch_size: int = 1,
        warmup: int = 3,
        repeats: int = 10,
    ):
        if metric not in COST_METRICS:
            raise ValueError(f"unknown cost metric {metric!r}; choose from {', '.join(COST_METRICS)}")
        self.metric = metric
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.warmup, self.repeats = warmup, repeats
        self.measurements = 0
        self._costs: dict[tuple[str, int, int, tuple[int, int]], float] = {}

    def __call__(self, op: str, channels: int, stride: int, resolution: tuple[int, int],
                 width: int | None = None) -> float:
        """The op's cost; ``width``: its hidden channels when channel search narrowed it (None: full)."""
        key = (op, channels, stride, tuple(resolution), None if width == channels else width)
        if key not in self._costs:
            self._costs[key] = self._measure(*key)
            self.measurements += 1
        return self._costs[key]

    def entries(self) -> list[list]:
        """The measured costs as JSON-ready rows [op, channels, stride, height, width, hidden width, cost]."""
        return [[op, c, s, *res, hidden, cost] for (op, c, s, res, hidden), cost in
                sorted(self._costs.items(), key=lambda item: str(item[0]))]

    def with_entries(self, rows: list[list]) -> OpCostTable:
        """This table holding ``rows`` (from ``entries``) as if it had measured them."""
        for op, c, s, h, w, hidden, cost in rows:
            self._costs[(op, int(c), int(s), (int(h), int(w)), None if hidden is None else int(hidden))] = float(cost)
        return self

    def _measure(self, op: str, channels: int, stride: int, resolution: tuple[int, int], width: int | None) -> float:
        module = build_op(op, channels, stride, width).to(self.device)
        shape = (channels, *resolution)
        if self.metric == "params":
            return float(count_params(module))
        if self.metric == "flops":
            return float(count_flops(module, shape, self.device))
        if self.metric == "latency":
            return measure_latency(module, shape, self.batch_size, self.device, self.warmup, self.repeats)[0]
        return self._training_memory_mb(module, shape)

    def _training_memory_mb(self, module: nn.Module, shape: tuple[int, int, int]) -> float:
        """MiB the op adds to a training step at the least: its weights and momentum, its buffers, what its
        forward pass saves for backward and its output (its input is the previous op's output). Counted,
        not profiled: the same on any device, and milliseconds to take."""
        x = torch.randn(self.batch_size, *shape, device=self.device)
        module.train()
        resident = [*module.parameters(), *module.buffers(), x]
        saved = saved_bytes(lambda: module(x), resident)
        return (2 * tensor_bytes(module.parameters()) + tensor_bytes(module.buffers()) + sum(saved.values())) / MB


def estimated_cost(genome, cost) -> float:
    """Sum of the per-op costs (an ``OpCostTable`` or any ``OpCost``) over the genome's ops at full width: a
    cheap estimate of its latency (or memory) that ranks candidate mutations without building them."""
    return sum(cost(*site) for site, _ in genome.op_sites())
