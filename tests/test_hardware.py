"""Specification of hardware measurement: latency, peak training memory, counts, per-op costs."""

import json
import math
import os

import pytest
import torch

from spidernet_ray.genome import initial_genome
from spidernet_ray.hardware import (
    HardwareMetrics,
    OpCostTable,
    count_flops,
    count_params,
    measure,
    measure_latency,
    measure_peak_memory,
    training_memory_floor,
)
from spidernet_ray.supernet import SuperNet

DIGITS = (1, 8, 8)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def one_thread(torch_one_thread):
    yield


def small_net(channels=4, reductions=1, ops=None, input_shape=DIGITS):
    torch.manual_seed(0)
    return SuperNet(initial_genome(input_shape, 10, reductions=reductions, channels=channels, ops=ops))


def test_measure_reports_finite_positive_labelled_metrics():
    net = small_net()
    metrics = measure(net, DIGITS, batch_size=8, repeats=3)
    assert isinstance(metrics, HardwareMetrics)
    assert metrics.latency_ms > 0 and math.isfinite(metrics.latency_ms)
    assert metrics.latency_spread_ms >= 0
    assert metrics.peak_memory_mb > 0 and math.isfinite(metrics.peak_memory_mb)
    assert metrics.memory_method == "cpu_profiler"
    assert metrics.params == sum(p.numel() for p in net.parameters())
    assert metrics.flops > 0
    assert (metrics.batch_size, metrics.latency_batch_size, metrics.device) == (8, 1, "cpu")
    assert json.loads(json.dumps(metrics.to_dict()))["memory_method"] == "cpu_profiler"


def test_measure_leaves_the_model_as_it_was():
    net = small_net().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    measure(net, DIGITS, batch_size=8, repeats=2)
    assert net.training
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_disposable_model_is_measured_in_place_with_the_same_figures():
    net = small_net().to_discrete()
    copied = measure(net, DIGITS, batch_size=8, repeats=2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    in_place = measure(net, DIGITS, batch_size=8, repeats=2, disposable=True)
    assert (in_place.params, in_place.flops) == (copied.params, copied.flops)
    # The profiler's peak can differ by an allocator block (64 bytes seen after some other tests ran).
    assert in_place.peak_memory_mb == pytest.approx(copied.peak_memory_mb, abs=256 / 2**20)
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())  # the step trained it


def test_discrete_network_is_measured_too():
    metrics = measure(small_net().to_discrete(), DIGITS, batch_size=8, repeats=2)
    assert metrics.peak_memory_mb > 0 and metrics.params > 0


def test_latency_grows_with_a_clearly_bigger_model():
    tiny = small_net(channels=2, reductions=1, ops=("identity",))
    big = small_net(channels=32, reductions=2, input_shape=(1, 16, 16))
    assert count_flops(big, (1, 16, 16)) > 20 * max(count_flops(tiny, DIGITS), 1)
    tiny_ms, _ = measure_latency(tiny, DIGITS, repeats=5)
    big_ms, _ = measure_latency(big, (1, 16, 16), repeats=5)
    assert big_ms > tiny_ms


def test_peak_memory_grows_with_batch_size_and_model_size():
    net = small_net(channels=4)
    small_batch, method = measure_peak_memory(net, DIGITS, batch_size=4)
    large_batch, _ = measure_peak_memory(net, DIGITS, batch_size=64)
    wider, _ = measure_peak_memory(small_net(channels=16), DIGITS, batch_size=4)
    assert method == "cpu_profiler"
    assert large_batch > small_batch
    assert wider > small_batch


def test_peak_memory_counts_at_least_weights_gradients_and_momentum():
    net = small_net(channels=8)
    peak_mb, _ = measure_peak_memory(net, DIGITS, batch_size=2)
    weights_mb = sum(p.numel() * p.element_size() for p in net.parameters()) / 2**20
    assert peak_mb > 3 * weights_mb


def resident_mb() -> float:
    """This process's resident memory now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_the_memory_floor_lies_below_the_measured_peak_and_frees_what_it_counted():
    net = small_net(channels=8, input_shape=(1, 28, 28))
    floor = training_memory_floor(net, (1, 28, 28), batch_size=64)
    assert 0 < floor < measure_peak_memory(net, (1, 28, 28), batch_size=64)[0]
    before = resident_mb()
    for _ in range(4):
        assert training_memory_floor(net, (1, 28, 28), batch_size=64) == floor
    # Activations held past the call (as a reference cycle did) would add about the floor per call.
    assert resident_mb() - before < floor


def test_counts_params_and_per_sample_flops():
    conv = torch.nn.Conv2d(2, 3, 3, padding=1, bias=False)
    assert count_params(conv) == 2 * 3 * 3 * 3
    # One multiply-add per weight per output pixel, two FLOPs each.
    assert count_flops(conv, (2, 5, 5)) == 2 * (2 * 3 * 3 * 3) * 5 * 5


@pytest.mark.parametrize("metric", ["latency", "memory", "params", "flops"])
def test_op_cost_table_measures_once_per_shape(metric):
    table = OpCostTable(metric, batch_size=2, repeats=2)
    first = table("sep_conv_3x3", 8, 1, (8, 8))
    again = table("sep_conv_3x3", 8, 1, (8, 8))
    assert first > 0 and again == first
    assert table.measurements == 1
    table("sep_conv_3x3", 8, 2, (8, 8))
    assert table.measurements == 2


def test_op_cost_table_prices_parameter_free_ops_by_time_and_memory():
    for metric in ("latency", "memory"):
        assert OpCostTable(metric, batch_size=2, repeats=2)("max_pool_3x3", 8, 1, (8, 8)) > 0


def test_op_cost_table_rejects_unknown_metric():
    with pytest.raises(ValueError, match="unknown cost metric"):
        OpCostTable("joules")


def test_op_cost_table_drives_gate_pressure():
    net = small_net()
    table = OpCostTable("params")
    pressure = net.gate_pressure(cost=table, mu=1.0, lam=1.0)
    assert torch.isfinite(pressure) and pressure.item() > 0
    pressure.backward()
    assert all(w.grad is not None for w in net.gate_parameters())


@needs_cuda
def test_cuda_measurement_uses_the_allocator_and_events():
    net = small_net().cuda()
    metrics = measure(net, DIGITS, batch_size=8, repeats=3)
    assert metrics.memory_method == "cuda_max_allocated"
    assert metrics.device.startswith("cuda")
    assert metrics.latency_ms > 0 and metrics.peak_memory_mb > 0


@needs_cuda
def test_cuda_peak_memory_grows_with_batch_size():
    net = small_net().cuda()
    small, _ = measure_peak_memory(net, DIGITS, batch_size=4)
    large, _ = measure_peak_memory(net, DIGITS, batch_size=256)
    assert large > small


@needs_cuda
def test_cuda_op_cost_table():
    table = OpCostTable("latency", device="cuda", repeats=3)
    assert table("sep_conv_3x3", 8, 1, (8, 8)) > 0
    assert table.measurements == 1
