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


def test_a_pickle_in_place_of_the_weights_is_refused_without_running_it(trained, tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pickle_ran"), "w"))

    save_checkpoint(trained[0], tmp_path / "ckpt")
    (tmp_path / "ckpt" / "weights.safetensors").write_bytes(pickle.dumps({"weights": Payload()}))
    with pytest.raises(CheckpointError, match="is unreadable"):
        load_checkpoint(tmp_path / "ckpt")
    assert not (tmp_path / "pickle_ran").exists()


def member_checkpoints(trained, folder, count):
    """``count`` checkpoints as Ray lays out a trial's: checkpoint_000000, checkpoint_000001, ..."""
    from spidernet_ray.checkpoint import TRAINER_STATE_FILE as STATE_FILE

    net = trained[0]
    paths = []
    for index in range(count):
        with torch.no_grad():
            next(net.parameters()).fill_(float(index))  # tell them apart by their weights
        path = save_checkpoint(net, folder / f"checkpoint_{index:06d}")
        (path / STATE_FILE).write_text(json.dumps({"pressure": 0.001, "applied_mutation": None}))
        paths.append(path)
    return paths


def test_a_corrupt_checkpoint_falls_back_to_the_newest_readable_one_before_it(trained, tmp_path):
    from spidernet_ray.checkpoint import TRAINER_STATE_FILE as STATE_FILE, read_member_checkpoint

    first, second, third = member_checkpoints(trained, tmp_path, 3)
    weights = third / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    (second / STATE_FILE).write_text('{"pressure": ')  # cut short
    model, state, note = read_member_checkpoint(third, "cpu")
    assert next(model.parameters()).flatten()[0].item() == 0.0  # the weights of the first
    assert state["pressure"] == 0.001 and state["applied_mutation"] is None
    assert "checkpoint_000002 is unreadable" in note and "restored the earlier checkpoint_000000" in note


def test_a_readable_checkpoint_restores_without_a_note(trained, tmp_path):
    from spidernet_ray.checkpoint import read_member_checkpoint

    *_, last = member_checkpoints(trained, tmp_path, 2)
    model, _, note = read_member_checkpoint(last, "cpu")
    assert note == "" and next(model.parameters()).flatten()[0].item() == 1.0


def test_without_a_readable_checkpoint_the_first_error_is_raised(trained, tmp_path):
    from spidernet_ray.checkpoint import read_member_checkpoint

    for path in member_checkpoints(trained, tmp_path, 2):
        (path / "genome.json").write_text("{")
    with pytest.raises(CheckpointError, match="checkpoint_000001 is unreadable"):
        read_member_checkpoint(tmp_path / "checkpoint_000001", "cpu")


def test_momentum_round_trip_gives_the_same_next_step(tmp_path):
    from spidernet_ray.checkpoint import read_momentum, save_momentum, set_momentum

    torch.manual_seed(0)
    net = SuperNet(initial_genome((1, 8, 8), 10, reductions=1, channels=4))
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    opt = make_optimizer(net)
    train_step(net, opt, x, y)
    save_checkpoint(net, tmp_path)
    save_momentum(net, opt, tmp_path)
    back = load_checkpoint(tmp_path)
    back_opt = make_optimizer(back)
    assert set_momentum(back, back_opt, read_momentum(tmp_path)) == len(list(net.parameters()))
    train_step(net, opt, x, y)
    train_step(back, back_opt, x, y)
    for a, b in zip(net.parameters(), back.parameters()):
        assert torch.equal(a, b)


def test_truncated_momentum_is_a_checkpoint_error(tmp_path):
    from spidernet_ray.checkpoint import MOMENTUM_FILE, read_momentum, save_momentum

    net = SuperNet(initial_genome((1, 8, 8), 10, reductions=1, channels=4))
    opt = make_optimizer(net)
    train_step(net, opt, torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,)))
    save_momentum(net, opt, tmp_path)
    path = tmp_path / MOMENTUM_FILE
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="momentum"):
        read_momentum(tmp_path)
