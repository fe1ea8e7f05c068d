"""Gates: exact 0/1 forward values, gradient through closed gates, annealing, resource pressure."""

import pytest
import torch

from spidernet_ray.gates import PressureCoefficient, annealed_scale, gate_value, param_cost
from spidernet_ray.genome import initial_genome
from spidernet_ray.supernet import SuperNet


@pytest.mark.parametrize("w, expected", [(0.01, 1.0), (-0.01, 0.0)])
def test_hard_gate_is_an_exact_step_with_unit_gradient(w, expected):
    weight = torch.tensor(w, requires_grad=True)
    value = gate_value(weight, "hard", 1.0, training=True)
    assert value.item() == expected
    value.backward()
    assert weight.grad.item() == 1.0  # a closed gate still receives gradient


def test_sigmoid_gate_is_soft_in_training_and_a_step_in_evaluation():
    weight = torch.tensor(-0.01, requires_grad=True)
    soft = gate_value(weight, "sigmoid", 1.0, training=True)
    assert 0.0 < soft.item() < 0.5
    soft.backward()
    assert weight.grad.item() > 0
    assert gate_value(weight, "sigmoid", 1.0, training=False).item() == 0.0


def test_sigmoid_scale_anneals_geometrically_from_1_to_1e4():
    assert annealed_scale(0.0) == pytest.approx(1.0)
    assert annealed_scale(0.5) == pytest.approx(100.0)
    assert annealed_scale(1.0) == pytest.approx(1e4)


def test_sharper_sigmoid_scale_moves_the_gate_towards_a_step():
    weight = torch.tensor(0.01)
    assert gate_value(weight, "sigmoid", 1.0, True) < gate_value(weight, "sigmoid", annealed_scale(1.0), True)


def test_pressure_coefficient_grows_while_nothing_is_pruned_and_halves_on_pruning():
    lam = PressureCoefficient(value=1e-3, growth=2.0)
    assert lam.update(pruned=0) == pytest.approx(2e-3)
    assert lam.update(pruned=0) == pytest.approx(4e-3)
    assert lam.update(pruned=3) == pytest.approx(2e-3)


def test_pressure_pushes_costlier_gates_harder_and_ignores_closed_ones():
    net = SuperNet(initial_genome((1, 8, 8), 10, reductions=0, channels=4))
    edge = net.cells[0].edges["0_2"]
    with torch.no_grad():
        edge.gate_weights["max_pool_3x3"].fill_(-0.01)
    net.gate_pressure(cost=param_cost, mu=1.0, lam=1.0).backward()
    grads = {name: w.grad for name, w in edge.gate_weights.items()}
    assert grads["sep_conv_5x5"] > grads["sep_conv_3x3"] > grads["identity"] > 0
    assert grads["max_pool_3x3"] is None or grads["max_pool_3x3"] == 0


def test_param_cost_counts_the_parameters_of_the_op():
    assert param_cost("identity", 8, 1, (8, 8)) == 0
    assert param_cost("sep_conv_3x3", 8, 1, (8, 8)) > param_cost("dil_conv_3x3", 8, 1, (8, 8)) > 0


def test_applied_gate_gives_exact_outputs_and_input_gradients_and_a_close_gate_gradient():
    from spidernet_ray.gates import apply_gate

    torch.manual_seed(0)
    y = torch.randn(4, 3, 5, 5, requires_grad=True)
    w = torch.tensor(0.01, requires_grad=True)
    grad_out = torch.randn(4, 3, 5, 5)
    exact_y = y.detach().clone().requires_grad_()
    exact_w = w.detach().clone().requires_grad_()
    out = apply_gate(y, gate_value(w, "hard", 1.0, True))
    reference = exact_y * gate_value(exact_w, "hard", 1.0, True)
    assert torch.equal(out, reference)
    out.backward(grad_out)
    reference.backward(grad_out)
    assert torch.equal(y.grad, exact_y.grad)
    # The gate's gradient, sum(y * grad), is taken from a bfloat16 copy of y: each term is off by at most
    # 2**-9 of its size. (Relative to the sum itself the error is unbounded: its terms can cancel.)
    bound = 2**-8 * (exact_y * grad_out).abs().sum().item()
    assert abs(w.grad.item() - exact_w.grad.item()) <= bound


def test_a_gate_held_fixed_is_a_plain_product_and_a_learnt_one_keeps_the_low_precision_copy():
    from spidernet_ray.gates import apply_gate

    y = torch.randn(2, 3, requires_grad=True)
    fixed = gate_value(torch.tensor(0.01), "hard", 1.0, True)  # the proxies hold gates fixed
    learnt = gate_value(torch.tensor(0.01, requires_grad=True), "hard", 1.0, True)
    assert type(apply_gate(y, fixed).grad_fn).__name__ == "MulBackward0"
    assert "ApplyGate" in type(apply_gate(y, learnt).grad_fn).__name__
    assert torch.equal(apply_gate(y, fixed), apply_gate(y, learnt))
