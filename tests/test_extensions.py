"""Search-space extensions (issue 9), each a config option that is off by default: channel search,
gradual pruning with architecture snapshots, macro mutations with an architecture-aware epoch budget,
and crossover as a second kind of exploit."""

import json
import random
import types

import pytest
import torch

from spidernet_ray import launch
from spidernet_ray.checkpoint import load_checkpoint, read_momentum, save_checkpoint
from spidernet_ray.config import SearchConfig, read_config_file
from spidernet_ray.data import load_dataset
from spidernet_ray.genome import MACRO_MUTATIONS, Genome, GenomeError, initial_genome
from spidernet_ray.results import pareto_front, snapshot_rows
from spidernet_ray.strategies import build_strategy
from spidernet_ray.scheduler import SpiderNetScheduler
from spidernet_ray.supernet import DiscreteNet, SuperNet, inherit_weights
from spidernet_ray.trainable import SpiderNetTrainable, crossover_cells, round_epochs

INPUT = (1, 8, 8)
EXTENSION_KEYS = ("channel_search", "gradual_pruning", "prune_per_epoch", "snapshot_stable_epochs", "macro_mutations",
                  "crossover")


@pytest.fixture
def genome():
    return initial_genome(INPUT, 10, reductions=1, channels=4)


def shut(net, cell, edge, op, channels):
    with torch.no_grad():
        net.cells[cell].edges[edge].channel_gates[op][channels] = -0.1


def params(net):
    return sum(p.numel() for p in net.parameters())


# -- channel search ---------------------------------------------------------------------------------
def test_shut_channels_are_removed_for_real_and_the_network_computes_the_same(genome):
    net = SuperNet(genome, channel_search=True).eval()
    shut(net, 0, "0_2", "sep_conv_3x3", [0, 2])
    shut(net, 1, "3_2", "dil_conv_5x5", [1, 4, 5])
    x = torch.randn(4, *INPUT)
    before, expected = params(net), net(x)
    net.set_gate_scale(1e4)  # annealed: a shut channel's sigmoid gate is ~0 in training too
    assert net.shrink_channels() == 5
    assert params(net) < before
    assert torch.allclose(net(x), expected, atol=1e-5)
    assert net.genome.cells[0].edge(0, 2).width("sep_conv_3x3") == 2
    assert net.genome.cells[1].edge(3, 2).width("dil_conv_5x5") == 5
    assert net.cells[0].edges["0_2"].channel_gates["sep_conv_3x3"].shape == (2,)


def test_the_exported_network_is_narrower_and_a_checkpoint_keeps_its_widths(genome, tmp_path):
    net = SuperNet(genome, channel_search=True).eval()
    shut(net, 0, "0_2", "sep_conv_5x5", [1, 3])
    shut(net, 1, "0_3", "dil_conv_3x3", [0, 1, 2, 3, 4, 5, 6, 7])  # every channel shut: the op outputs BN(0)
    x = torch.randn(4, *INPUT)
    expected = net(x)
    plain = net.to_discrete()
    assert params(plain) < params(DiscreteNet(genome, net.open_ops()))
    assert torch.allclose(plain(x), expected, atol=1e-5)
    assert plain.genome == net.discrete_genome()
    assert plain.genome.cells[0].edge(0, 2).width("sep_conv_5x5") == 2

    for model, name in [(plain, "discrete"), (net, "supernet")]:
        save_checkpoint(model, tmp_path / name)
        back = load_checkpoint(tmp_path / name).eval()
        assert back.genome == model.genome
        assert params(back) == params(model)
        assert torch.allclose(back(x), expected, atol=1e-5)
    assert "widths" in (tmp_path / "discrete" / "genome.json").read_text()


def test_channel_gates_are_trained_and_pressed_shut_like_the_op_gates(genome):
    net = SuperNet(genome, channel_search=True)
    gates = net.gate_parameters()
    channel_gates = [w for w in gates if w.dim() == 1]
    assert len(gates) == genome.ops_alive() + len(channel_gates) and channel_gates
    plain_pressure = SuperNet(genome).gate_pressure(lam=1.0)
    assert net.gate_pressure(lam=1.0) > plain_pressure  # the channel gates add their own pressure
    x, y = torch.randn(8, *INPUT), torch.randint(0, 10, (8,))
    net.train()
    loss = torch.nn.functional.cross_entropy(net(x), y) + net.gate_pressure()
    loss.backward()
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in channel_gates)


def test_genomes_without_narrowed_ops_keep_their_json_and_widths_survive_every_genome_change(genome):
    assert "widths" not in genome.to_json()
    narrowed = genome.with_widths({(0, 0, 2, "sep_conv_3x3"): 3, (1, 3, 2, "dil_conv_3x3"): 5})
    assert Genome.from_json(narrowed.to_json()) == narrowed and narrowed.hash != genome.hash
    assert narrowed.remove_op(0, 0, 2, "identity").cells[0].edge(0, 2).width("sep_conv_3x3") == 3
    assert narrowed.split_edge(0, 0, 2).cells[0].edge(0, 2).width("sep_conv_3x3") == 3
    assert narrowed.with_channels(8).cells[0].edge(0, 2).width("sep_conv_3x3") == 6
    with pytest.raises(GenomeError, match="no width"):
        genome.with_widths({(0, 0, 2, "max_pool_3x3"): 2})


# -- gradual pruning ----------------------------------------------------------------------------------
def test_gradual_pruning_deletes_at_most_the_limit_those_open_least_often_first(genome):
    net = SuperNet(genome, window=1).train()
    edge = net.cells[0].edges["0_2"]
    x = torch.randn(2, *INPUT)
    with torch.no_grad():
        for name in ("avg_pool_3x3", "max_pool_3x3", "sep_conv_3x3"):
            edge.gate_weights[name].fill_(-0.05)
    for step in range(5):  # sep_conv_3x3 is open in one step of five (20%, still below the 25% threshold)
        with torch.no_grad():
            edge.gate_weights["sep_conv_3x3"].fill_(0.05 if step == 0 else -0.05)
        net(x)
    net.end_epoch()
    removed = net.deadhead(limit=2)
    assert sorted(name for *_, name in removed) == ["avg_pool_3x3", "max_pool_3x3"]
    assert "sep_conv_3x3" in net.genome.cells[0].edge(0, 2).ops


# -- macro mutations and crossover on genomes ---------------------------------------------------------
def test_macro_mutations_produce_valid_genomes_and_refuse_impossible_ones(genome):
    grown = genome.split_edge(0, 0, 2)
    deeper, shallower = grown.macro_mutation("add_cell"), grown.macro_mutation("remove_cell")
    assert (deeper.reductions, len(deeper.cells)) == (2, 3) and deeper.cells[:2] == grown.cells
    assert (shallower.reductions, shallower.cells) == (0, grown.cells[:1])
    assert grown.macro_mutation("widen").channels == 6 and grown.macro_mutation("narrow").channels == 3
    for kind in MACRO_MUTATIONS:
        child = grown.macro_mutation(kind)
        assert Genome.from_json(child.to_json()) == child
    with pytest.raises(GenomeError):
        shallower.macro_mutation("remove_cell")
    with pytest.raises(GenomeError):
        initial_genome((1, 2, 2), 10, reductions=1, channels=4).macro_mutation("add_cell")


def test_a_changed_network_inherits_every_tensor_whose_name_and_shape_still_fit(genome):
    old = SuperNet(genome.split_edge(1, 0, 3))
    state = old.state_dict()
    deeper = SuperNet(old.genome.add_cell())
    inherited, fresh = inherit_weights(deeper, state)
    assert inherited == len(state) and fresh > 0  # every old tensor, and the new cell starts fresh
    assert all(torch.equal(deeper.state_dict()[k], v) for k, v in state.items())
    wider = SuperNet(old.genome.macro_mutation("widen"))
    inherited, _ = inherit_weights(wider, state)
    assert 0 < inherited < len(state)  # the gates (scalars) carry over, the convolutions cannot
    assert torch.equal(wider.state_dict()["cells.1.edges.0_3.gate_weights.identity"],
                       state["cells.1.edges.0_3.gate_weights.identity"])


def test_deeper_or_narrower_networks_train_proportionally_more_epochs_per_round(genome):
    settings = SearchConfig(reductions=1, channels=4, epochs_per_round=2,
                                                      macro_mutations=True)
    assert round_epochs(genome, settings) == 2
    assert round_epochs(genome.add_cell(), settings) == 3  # 2 * 3/2 cells
    assert round_epochs(genome.with_channels(2), settings) == 4  # 2 * 4/2 channels
    assert round_epochs(genome.with_channels(8), settings) == 2  # never fewer than epochs_per_round
    assert round_epochs(genome.add_cell(), SearchConfig(reductions=1, channels=4)) == 2


def test_crossover_children_are_valid_and_mix_the_cells_of_both_parents(genome):
    a = genome.add_cell().split_edge(0, 0, 2)
    b = genome.add_cell().split_edge(1, 1, 3).split_edge(2, 0, 4).with_channels(8)
    child = a.crossover(b, {1})
    assert child.cells[0] == a.cells[0] and child.cells[2] == a.cells[2] and child.channels == a.channels
    assert child.cells[1] == b.with_channels(4).cells[1]
    assert Genome.from_json(child.to_json()) == child
    for seed in range(20):
        taken = crossover_cells(3, random.Random(seed))
        assert 0 < len(taken) < 3 and taken <= {0, 1, 2}
    with pytest.raises(GenomeError):
        a.crossover(initial_genome((3, 8, 8), 10, reductions=2, channels=4), {1})


# -- the scheduler ----------------------------------------------------------------------------------
def scheduler_with(tmp_path, members, **kwargs):
    """A scheduler that has seen one round of ``members``: name -> (val accuracy, genome JSON, extra result keys)."""
    from ray import tune
    from ray.tune.experiment import Trial

    controller = types.SimpleNamespace(search_alg=None)  # on_trial_add only asks whether a searcher is set
    scheduler = SpiderNetScheduler(hyperparam_mutations={"lr": tune.loguniform(1e-3, 1e-1)},
                                   state_path=tmp_path / "state.json", **kwargs)
    trials = {}
    for name, (acc, genome_json, extra) in members.items():
        trial = Trial("__fake", trial_id=name, config={"lr": 0.01, "mutation": None}, stub=True)
        scheduler.on_trial_add(controller, trial)
        result = {"training_iteration": 1, "genome_hash": f"hash-{name}", "genome": genome_json, "diverged": False,
                  "val_accuracy": acc, "latency_ms": 1.0 / acc, "peak_memory_mb": 1.0, **extra}
        scheduler._save_trial_state(scheduler._trial_state[trial], 1, result, trial)
        trials[name] = trial
    return scheduler, trials


def test_the_scheduler_gives_crossover_and_macro_instructions_only_when_enabled(tmp_path, genome):
    members = {name: (acc, genome.split_edge(0, 0, 2).to_json() if name == "b" else genome.to_json(), {})
               for name, acc in [("a", 0.9), ("b", 0.8), ("c", 0.7), ("d", 0.1)]}
    plain, trials = scheduler_with(tmp_path / "plain", members)
    plain._quantiles()
    assert plain._get_new_config(trials["d"], trials["a"])[0]["mutation"]["kind"] == "split"

    crossing, trials = scheduler_with(tmp_path / "cross", members, crossover_probability=1.0)
    crossing._quantiles()
    mutation = crossing._get_new_config(trials["d"], trials["a"])[0]["mutation"]
    assert mutation["kind"] == "crossover" and mutation["donor"] == "a" and mutation["other"] == "b"
    assert mutation["other_genome"] == members["b"][1]  # the clone restores only the donor: B's genome travels

    macro, trials = scheduler_with(tmp_path / "macro", members, macro_probability=1.0)
    macro._quantiles()
    assert macro._get_new_config(trials["d"], trials["a"])[0]["mutation"]["kind"] in MACRO_MUTATIONS


def test_snapshots_in_a_result_enter_the_pareto_archive_as_candidates(tmp_path, genome):
    small = genome.remove_op(0, 0, 2, "sep_conv_5x5")
    snapshot = {"round": 1, "epoch": 1, "val_accuracy": 0.6, "latency_ms": 0.5, "peak_memory_mb": 0.5,
                "params": 10, "genome": small.to_json(), "genome_hash": small.hash}
    scheduler, _ = scheduler_with(tmp_path, {"a": (0.9, genome.to_json(), {"snapshots": json.dumps([snapshot])})})
    entries = {e["key"]: e for e in scheduler.archive.front()}
    assert entries[small.hash]["payload"]["snapshot"] is True and entries[small.hash]["payload"]["trial_id"] == "a"
    assert entries[small.hash]["metrics"]["latency_ms"] == 0.5
    assert "hash-a" in entries  # the round's own result is a candidate beside it

    row = {"trial_id": "a", "training_iteration": 1, "val_accuracy": 0.9, "latency_ms": 2.0, "peak_memory_mb": 2.0,
           "genome_hash": genome.hash, "genome": genome.to_json(), "snapshots": json.dumps([snapshot])}
    front = pareto_front([row, *snapshot_rows([row])], ("max:val_accuracy", "min:latency_ms"))
    assert {r["genome_hash"] for r in front} == {genome.hash, small.hash}  # pareto.parquet holds it too


# -- the trainable (built in-process on a real local Ray) ----------------------------------------------
@pytest.fixture(scope="module")
def splits():
    return load_dataset("synthetic", seed=0, subset=160)


def member(splits, mutation=None, **options):
    class Member(SpiderNetTrainable):
        def setup(self, config):
            super().setup(config, splits=splits)

    config = SearchConfig(reductions=1, channels=4, batch_size=32, epochs_per_round=2, initial_splits=1, pressure=0.0,
                          **options)
    return Member({"settings": config, "start_genome": None, "lr": 0.05, "weight_decay": 3e-4,
                   "drop_path": 0.0, "seed": 3, "mutation": mutation})


@pytest.fixture(scope="module")
def donor(ray_local, splits, tmp_path_factory):
    threads = torch.get_num_threads()
    trainable = member(splits, channel_search=True, gradual_pruning=True, snapshot_stable_epochs=1,
                       macro_mutations=True)
    result = trainable.train()
    path = tmp_path_factory.mktemp("donor")
    trainable.save_checkpoint(str(path))
    yield trainable, result, path
    torch.set_num_threads(threads)


def test_a_member_snapshots_each_stable_architecture_with_its_measured_metrics(donor, tmp_path):
    trainable, result, _ = donor
    snapshots = json.loads(result["snapshots"])
    assert snapshots, "no epoch went without pruning"
    for snap in snapshots:
        assert 0 <= snap["val_accuracy"] <= 1 and snap["latency_ms"] > 0 and snap["peak_memory_mb"] > 0
        assert Genome.from_json(snap["genome"]).hash == snap["genome_hash"] and snap["params"] > 0
    assert result["round_epochs"] == 2 and result["channels_removed"] >= 0
    # The round's own result is left out (no genome hash), so the archive holds only the snapshots.
    scheduler, _ = scheduler_with(tmp_path, {"m": (0.5, result["genome"],
                                                   {"snapshots": result["snapshots"], "genome_hash": None})})
    archived = scheduler.archive.front()
    assert archived and all(e["payload"]["snapshot"] and e["payload"]["trial_id"] == "m" for e in archived)
    assert {e["key"] for e in archived} <= {s["genome_hash"] for s in snapshots}


def test_a_member_trains_its_convolutions_in_channels_last(ray_local, splits):
    trainable = member(splits)
    layouts = []

    def record(_module, _inputs, output):
        if output.requires_grad and output.shape[1] > 1:  # a training forward; one channel fits either layout
            layouts.append(output.is_contiguous(memory_format=torch.channels_last))

    hooks = [m.register_forward_hook(record) for m in trainable.model.modules() if isinstance(m, torch.nn.Conv2d)]
    trainable.train()
    for hook in hooks:
        hook.remove()
    assert layouts and all(layouts)


def test_a_reused_actor_builds_a_network_only_for_a_member_that_is_not_restored(ray_local, splits, tmp_path,
                                                                              monkeypatch):
    built = []
    build = SpiderNetTrainable.build_member
    monkeypatch.setattr(SpiderNetTrainable, "build_member", lambda self, config: built.append(1) or build(self, config))
    first = member(splits)
    first.train()
    first.save_checkpoint(str(tmp_path))
    assert len(built) == 1
    # Tune reuses an actor for a paused or cloned member with a reset, then a restore of its checkpoint.
    actor = member(splits)
    assert actor.reset_config({**actor.config, "seed": 4}) and actor.reset_config(actor.config)
    actor.load_checkpoint(str(tmp_path))
    assert actor.train()["training_iteration"] == 1 and len(built) == 1
    # A new member on a reused actor has no checkpoint: its network is built when it first trains.
    assert actor.reset_config({**actor.config, "seed": 5}) and len(built) == 1
    assert actor.train()["ops_alive"] > 0 and len(built) == 2


def test_a_clone_carries_out_a_macro_mutation_keeping_the_donors_weights(donor, splits):
    parent, _, path = donor
    child = member(splits, {"id": "m1", "kind": "add_cell", "donor": "d"}, channel_search=True,
                   gradual_pruning=True, snapshot_stable_epochs=1, macro_mutations=True)
    child.load_checkpoint(str(path))
    assert child.model.genome == parent.model.genome.add_cell()
    state = child.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in parent.model.state_dict().items())
    report = json.loads(child.train()["mutation"])
    assert report["kind"] == "add_cell" and report["applied"] and report["fresh_tensors"] > 0
    # Every weight the donor trained with momentum keeps its momentum in the new network.
    assert report["momentum_carried"] == len(read_momentum(path)) > 0


def test_a_crossover_child_takes_cells_of_the_other_parent_fresh_and_keeps_the_donors_others(donor, splits):
    parent, _, path = donor
    other = initial_genome(INPUT, 10, reductions=1, channels=4).split_edge(0, 0, 2).split_edge(1, 1, 3)
    instruction = {"id": "x1", "kind": "crossover", "donor": "d", "other": "o", "other_genome": other.to_json()}
    child = member(splits, instruction, channel_search=True)
    child.load_checkpoint(str(path))
    report = child.mutation_report
    taken = set(report["cells_from_other"])
    assert report["applied"] and len(taken) == 1
    (k,) = taken
    assert child.model.genome.cells[k] == other.cells[k]
    assert child.model.genome.cells[1 - k] == parent.model.genome.cells[1 - k]
    state, before = child.model.state_dict(), parent.model.state_dict()
    kept = [key for key in before if key.startswith(f"cells.{1 - k}.") and key in state]
    assert kept and all(torch.equal(state[key], before[key]) for key in kept)
    # Momentum comes along with the donor's weights kept, never onto the other parent's fresh cell.
    params = dict(child.model.named_parameters())
    with_momentum = {name for name, p in params.items() if "momentum_buffer" in child.optimizer.state.get(p, {})}
    assert report["momentum_carried"] == len(with_momentum) > 0
    assert not any(name.startswith((f"cells.{k}.", f"heads.{k}.")) for name in with_momentum)


# -- options ----------------------------------------------------------------------------------------
def test_channel_search_alone_is_on_by_default_and_each_extension_is_set_by_flags_or_config_keys(tmp_path):
    defaults = SearchConfig()
    assert defaults.channel_search  # the one compare.py showed helping
    assert not any([defaults.gradual_pruning, defaults.snapshot_stable_epochs, defaults.macro_mutations,
                    defaults.crossover])
    assert not launch.resolve_config(launch.parse_args(["--no-channel-search", "--storage-path", str(tmp_path)])
                                     ).channel_search
    args = launch.parse_args(["--channel-search", "--gradual-pruning", "--prune-per-epoch", "1",
                              "--snapshot-stable-epochs", "2", "--macro-mutations", "--crossover",
                              "--storage-path", str(tmp_path)])
    config = launch.resolve_config(args)
    assert [getattr(config, key) for key in EXTENSION_KEYS] == [True, True, 1, 2, True, True]
    scheduler = build_strategy(config, tmp_path).scheduler
    assert scheduler.macro_probability > 0 and scheduler.crossover_probability > 0
    plain = build_strategy(defaults, tmp_path).scheduler
    assert plain.macro_probability == plain.crossover_probability == 0
    toml = tmp_path / "run.toml"
    toml.write_text("channel_search = true\nsnapshot_stable_epochs = 3\ncrossover = true\n")
    assert read_config_file(toml) == {"channel_search": True, "snapshot_stable_epochs": 3, "crossover": True}
