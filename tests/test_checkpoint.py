"""Checkpoints: genome JSON + safetensors, exact round trip, clear errors, no pickle."""

import json

import pytest
import torch

from spidernet_ray.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from spidernet_ray.genome import initial_genome
from spidernet_ray.supernet import SuperNet
from spidernet_ray.train import make_optimizer, train_step


@pytest.fixture
def trained():
    torch.manual_seed(0)
    net = SuperNet(initial_genome((1, 8, 8), 10, reductions=1, channels=8).split_edge(1, 0, 3), drop_path=0.1)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    opt = make_optimizer(net)
    for _ in range(2):
        train_step(net, opt, x, y)
    with torch.no_grad():
        net.cells[0].edges["0_2"].gate_weights["identity"].fill_(-0.05)
    return net.eval(), x


def test_supernet_round_trip_restores_identical_outputs(trained, tmp_path):
    net, x = trained
    save_checkpoint(net, tmp_path)
    back = load_checkpoint(tmp_path).eval()
    assert back.genome == net.genome
    assert back.drop_path_prob == 0.1
    with torch.no_grad():
        assert torch.equal(net(x), back(x))


def test_discrete_round_trip_restores_identical_outputs(trained, tmp_path):
    net, x = trained
    discrete = net.to_discrete().eval()
    save_checkpoint(discrete, tmp_path)
    back = load_checkpoint(tmp_path).eval()
    assert "identity" not in back.cells[0].edges["0_2"].ops
    with torch.no_grad():
        assert torch.equal(discrete(x), back(x))


def test_checkpoint_files_hold_no_pickle(trained, tmp_path):
    save_checkpoint(trained[0], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["genome.json", "network.json", "weights.safetensors"]
    json.loads((tmp_path / "genome.json").read_text())
    assert not (tmp_path / "weights.safetensors").read_bytes().startswith(b"\x80")  # not a pickle stream


def test_truncated_weights_give_a_clear_error(trained, tmp_path):
    save_checkpoint(trained[0], tmp_path)
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="is unreadable"):
        load_checkpoint(tmp_path)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="lacks genome.json, weights.safetensors, network.json"):
        load_checkpoint(tmp_path)


def test_weights_from_another_genome_are_refused(trained, tmp_path):
    save_checkpoint(trained[0], tmp_path)
    (tmp_path / "genome.json").write_text(initial_genome((1, 8, 8), 10, reductions=1, channels=8).to_json())
    with pytest.raises(CheckpointError, match="weights do not match the genome"):
        load_checkpoint(tmp_path)
