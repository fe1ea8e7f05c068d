"""A short real training run: the supernet learns the bundled digits while it prunes itself."""

import torch

from spidernet_ray.data import load_dataset, make_loaders
from spidernet_ray.gates import PressureCoefficient
from spidernet_ray.genome import initial_genome
from spidernet_ray.supernet import SuperNet
from spidernet_ray.train import evaluate, make_optimizer, prune_after_epoch, train_epoch


def test_supernet_learns_digits_well_above_chance_with_pruning_active(torch_one_thread):
    torch.manual_seed(0)
    splits = load_dataset("digits", seed=0)
    loaders = make_loaders(splits, batch_size=64, seed=0)
    net = SuperNet(initial_genome(splits.input_shape, splits.num_classes, reductions=2, channels=8), window=1)
    optimizer = make_optimizer(net, lr=0.1)
    epochs = 6
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    lam = PressureCoefficient(value=1e-3)
    ops_before, params_before = net.genome.ops_alive(), net.num_params()
    removed = []
    for _ in range(epochs):
        train_epoch(net, optimizer, loaders.train, pressure=lambda: net.gate_pressure(lam=lam.value))
        schedule.step()
        pruned = prune_after_epoch(net, optimizer)
        lam.update(len(pruned))
        removed += pruned
    accuracy, _ = evaluate(net, loaders.val)
    assert accuracy >= 0.9  # chance is 0.1; 144 validation images, so one image is 0.7 points
    assert removed and net.genome.ops_alive() == ops_before - len(removed)
    assert net.num_params() < params_before
