"""The Ray Tune trainable: one population member training its own supernet, one round per step.

A round is a few epochs with pruning active, then validation and hardware measurement of the
discrete network the member currently stands for. On exploit, Ray restores the donor's checkpoint
into this member and hands it a new config carrying a mutation instruction; the member scores
candidate splits with the train-free proxies itself (compute stays on the worker), applies the best
one that fits the budget and keeps training.

Search-space extensions (each a SearchConfig option, off by default): channel search narrows conv ops
after every epoch; gradual pruning deletes a few ops per epoch and snapshots the architecture whenever
pruning has been stable for a few epochs (the scheduler archives the snapshots); a mutation instruction
may also be a macro mutation or a crossover, after which the member rebuilds its network and inherits
every tensor whose name and shape still match (``round_epochs`` gives deeper or narrower networks more
epochs per round).
"""

from __future__ import annotations

import logging
import math
import random
import time
import zlib
from pathlib import Path

import ray
import torch
from ray import tune

from spidernet_ray import checkpoint as ckpt
from spidernet_ray.config import SearchConfig
from spidernet_ray.costmodel import CostModel
from spidernet_ray.data import DataSplits, make_loaders
from spidernet_ray.gates import PressureCoefficient, param_cost
from spidernet_ray.genome import MACRO_MUTATIONS, MUTATIONS, Genome, GenomeError, fill_the_gap, initial_genome, mutate
from spidernet_ray.hardware import HardwareMetrics, OpCostTable, estimated_cost, measure
from spidernet_ray.ops import OPS
from spidernet_ray.pareto import budget_violation
from spidernet_ray.progress import MemberProgress
from spidernet_ray.proxies import budget_metrics, choose_split, within_budget
from spidernet_ray.record import MemberReport, MutationInstruction
from spidernet_ray.supernet import CellNetwork, DiscreteNet, SuperNet, inherit_weights
from spidernet_ray.train import (
    TRAINING_LAYOUT,
    evaluate,
    make_optimizer,
    narrow_after_epoch,
    prune_after_epoch,
    refresh_optimizer,
    train_epoch,
)

logger = logging.getLogger(__name__)


def round_epochs(genome: Genome, settings: SearchConfig) -> int:
    """Epochs of training per round. With macro mutations on, the architecture-aware budget rule: a
    network deeper or narrower than the one the search started from trains proportionally longer
    before it is compared, ``epochs_per_round * (cells / initial cells) * (initial channels / channels)``
    rounded, and never fewer than ``epochs_per_round`` (shallower or wider networks are not cut short)."""
    if not settings.macro_mutations:
        return settings.epochs_per_round
    depth = len(genome.cells) / (settings.reductions + 1)
    narrowness = settings.channels / genome.channels
    return max(settings.epochs_per_round, round(settings.epochs_per_round * depth * narrowness))


def crossover_cells(n_cells: int, rng: random.Random) -> set[int]:
    """Which cells a crossover child takes from the other parent: a random non-empty proper subset,
    so the child always mixes cells of both parents."""
    if n_cells < 2:
        raise GenomeError("crossover needs parents of at least two cells")
    chosen = {k for k in range(n_cells) if rng.random() < 0.5}
    if not chosen or len(chosen) == n_cells:
        chosen = {rng.randrange(n_cells)} if not chosen else chosen - {rng.randrange(n_cells)}
    return chosen


def trial_device() -> torch.device:
    # Ray sets CUDA_VISIBLE_DEVICES to the trial's GPUs. A trial given no GPU stays on the CPU even on
    # a GPU machine, and one given a logical GPU where CUDA is absent falls back to the CPU.
    if ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def seeded_start(splits: DataSplits, settings: SearchConfig, seed: int, count: int | None = None,
                 start_genome: str | None = None) -> Genome:
    """The initial genome plus ``count`` (default ``settings.initial_splits``) random splits, so members
    start from different architectures. ``start_genome`` (JSON), when given, replaces the initial genome.
    With ``settings.start_ops`` every edge (the splits' new ones too) carries that many ops drawn per member."""
    rng = random.Random(seed)
    sparse = settings.start_ops or None
    if start_genome:
        genome = Genome.from_json(start_genome)
    else:
        genome = initial_genome(splits.input_shape, splits.num_classes, settings.reductions, settings.channels,
                                ops_per_edge=sparse, rng=rng)
    for _ in range(settings.initial_splits if count is None else count):
        cell = rng.randrange(len(genome.cells))
        ops = tuple(rng.sample(sorted(OPS), min(sparse, len(OPS)))) if sparse else None
        genome = genome.split_edge(cell, *rng.choice(genome.candidate_splits(cell)), ops)
    return genome


class SpiderNetTrainable(tune.Trainable):
    def setup(self, config: dict, splits: DataSplits, cost_model: CostModel | None = None):
        """``cost_model``: the run's (``tuner.run_cost_model``); without one (a trainable built outside a
        search) every round is measured and the per-op latencies are measured here on first use."""
        self.splits = splits
        self.settings: SearchConfig = config["settings"]
        self.start_genome: str | None = config["start_genome"]
        self.cost_model = cost_model
        self.measured = {}  # architecture -> hardware metrics, shared by the members this actor hosts
        self.device = trial_device()
        self.latency_table = cost_model.latency if cost_model else OpCostTable("latency", self.device,
                                                                               self.settings.latency_batch_size)
        resources = self.trial_resources  # None when the trainable is built outside Tune (tests, notebooks)
        torch.set_num_threads(max(1, int(resources.required_resources.get("CPU", 1) if resources else 1)))
        self.loaders = make_loaders(splits, self.settings.batch_size, self.device, seed=config["seed"])
        self._start_member(config)

    def _start_member(self, config: dict) -> None:
        torch.manual_seed(config["seed"])
        # The network is built on first use: when Tune reuses this actor for a paused or cloned member,
        # a restore follows the reset at once and brings its own network.
        self._member_config, self._model, self._optimizer = config, None, None
        self.pressure = PressureCoefficient(value=config.get("pressure", self.settings.pressure))
        self.stable_epochs = 0  # epochs in a row without pruning (snapshots)
        self.snapshots = []  # architectures snapshotted this round, reported with it
        self.applied_mutation = None  # id of the last mutation instruction carried out
        self.mutation_report = {}  # what the last mutation did, reported with the next round
        self.checkpoint_fallback = ""  # why the last restore used an earlier checkpoint, reported once

    @property
    def model(self) -> CellNetwork:
        if self._model is None:
            config = self._member_config
            self._model = self.build_member(config)
            self._optimizer = make_optimizer(self._model, config["lr"], config["weight_decay"], self.settings.momentum)
        return self._model

    @model.setter
    def model(self, model: CellNetwork) -> None:
        self._model = model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        self.model  # builds a new member's network and optimiser together
        return self._optimizer

    @optimizer.setter
    def optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self._optimizer = optimizer

    def build_member(self, config: dict) -> CellNetwork:
        """A new member's network (the baselines override this)."""
        return self._supernet(self.first_genome(config), config["drop_path"])

    def first_genome(self, config: dict) -> Genome:
        """The architecture a new member starts from (the random-search baseline overrides this)."""
        return seeded_start(self.splits, self.settings, config["seed"], start_genome=self.start_genome)

    def _supernet(self, genome: Genome, drop_path: float) -> SuperNet:
        s = self.settings
        return SuperNet(genome, gate=s.gate, drop_path=drop_path, window=s.deadhead_window,
                        channel_search=s.channel_search).to(self.device)

    # -- one round ----------------------------------------------------------------------------
    def step(self) -> dict:
        s, model = self.settings, self.model
        train, evaluation, measurement = Stopwatch(), Stopwatch(), Stopwatch()
        diverged, removed, channels_removed, loss = "", [], 0, float("nan")
        if s.inject_nan_round is not None and self.iteration + 1 >= s.inject_nan_round and _first_member(self.trial_id):
            # Fault injection, from that round on (a clone may skip the round itself: it takes its donor's count).
            poison_weights(model)
        epochs = round_epochs(model.genome, s)
        # Progress lines are for a search's driver: a trainable built outside Tune (tests, notebooks) writes none.
        where = s.experiment_path if s.name and self.trial_resources is not None else None
        progress = MemberProgress(where, self.trial_id, self.iteration + 1, epochs, len(self.loaders.train))
        for epoch in range(epochs):
            # Ops that a split, a restore or a narrowing just built come in the default layout.
            model.to(memory_format=TRAINING_LAYOUT)
            model.anneal_gates((self.iteration * epochs + epoch + 1) / (s.rounds * epochs))
            pressure = self._pressure_term()
            with train:
                loss = train_epoch(model, self.optimizer, self.loaders.train, pressure, should_stop=_not_finite,
                                   on_step=lambda step, mean: progress.update(epoch, step, mean))
            if _not_finite(loss):
                diverged = f"training loss became {loss} in round {self.iteration + 1}, epoch {epoch + 1}"
                break
            pruned = prune_after_epoch(model, self.optimizer, s.prune_per_epoch if s.gradual_pruning else None)
            narrowed = narrow_after_epoch(model, self.optimizer) if s.channel_search else 0
            self.pressure.update(len(pruned) + narrowed)
            removed += pruned
            channels_removed += narrowed
            if s.snapshot_stable_epochs:
                self._note_stability(bool(pruned or narrowed), epoch)
        with evaluation:
            val_accuracy, val_loss = evaluate(model, self.loaders.val)
        if diverged:
            val_accuracy, val_loss = 0.0, float("inf")
        discrete = model.discrete_genome()
        with measurement:
            hardware = self.hardware(discrete)
        violation = budget_violation({"val_accuracy": val_accuracy, **hardware}, s.budgets)
        report = MemberReport(
            val_accuracy=val_accuracy,
            val_loss=val_loss,
            train_loss=loss,
            **hardware,
            **train.fields("train"),
            **evaluation.fields("eval"),
            **measurement.fields("measure"),
            ops_alive=model.genome.ops_alive(),
            ops_open=sum(len(ops) for ops in model.open_ops().values()),
            ops_deleted=len(removed),
            genome=discrete.to_json(),
            supernet_genome=model.genome.to_json(),
            genome_hash=discrete.hash,
            budget_violation=violation,
            feasible=violation == 0 and not diverged,
            diverged=bool(diverged),
            reason=diverged,
            gpus=len(ray.get_gpu_ids()),  # assigned by Ray; compute falls back to CPU without CUDA
            node_id=ray.get_runtime_context().get_node_id(),
            checkpoint_fallback=self.checkpoint_fallback,
            lr=self.config["lr"],
            weight_decay=self.config["weight_decay"],
            drop_path=self.config["drop_path"],
            pressure=self.config.get("pressure", s.pressure),
            **self._step_times(train.wall, epochs, discrete),
            **self._mutation_fields(),
            **self._extension_fields(epochs, channels_removed),
        )
        self.mutation_report, self.checkpoint_fallback, self.snapshots = {}, "", []
        return report.to_result()

    def _step_times(self, train_seconds: float, epochs: int, discrete: Genome) -> dict:
        """Milliseconds per training batch of the supernet, and of the discrete network it stands for
        estimated by the ratio of their per-op costs (what a member pays over the network it searches)."""
        batches = max(1, epochs * len(self.loaders.train))
        supernet_ms = 1000 * train_seconds / batches
        cost = self.op_cost()
        ratio = estimated_cost(discrete, cost) / max(estimated_cost(self.model.genome, cost), 1e-9)
        return {"train_step_ms": supernet_ms, "discrete_step_ms": supernet_ms * ratio}

    def _extension_fields(self, epochs: int, channels_removed: int) -> dict:
        """What the search-space extensions that are on add to a round's report."""
        s, fields = self.settings, {}
        if s.macro_mutations:
            fields["round_epochs"] = epochs
        if s.channel_search:
            fields["channels_removed"] = channels_removed
        if s.snapshot_stable_epochs:
            fields["snapshots"] = self.snapshots  # the scheduler offers each to its Pareto archive
        return fields

    # -- snapshots (gradual pruning's Pareto series) ----------------------------------------------
    def _note_stability(self, pruned: bool, epoch: int) -> None:
        """Count epochs without pruning; when the count reaches ``snapshot_stable_epochs``, snapshot."""
        self.stable_epochs = 0 if pruned else self.stable_epochs + 1
        if self.stable_epochs == self.settings.snapshot_stable_epochs:
            self.snapshots.append(self.snapshot(epoch))

    def snapshot(self, epoch: int) -> dict:
        """The architecture the member stands for now, with its measured metrics and val accuracy."""
        val_accuracy, val_loss = evaluate(self.model, self.loaders.val)
        genome = self.model.discrete_genome()
        return {
            "round": self.iteration + 1,
            "epoch": epoch + 1,
            "val_accuracy": val_accuracy,
            "val_loss": val_loss,
            **self.hardware(genome),
            "ops_alive": genome.ops_alive(),
            "genome": genome.to_json(),
            "genome_hash": genome.hash,
        }

    def hardware(self, discrete: Genome) -> dict:
        """Hardware metrics of the network the member stands for (``discrete``, its discrete genome):
        latency and peak memory estimated from the run's cost model, or measured with
        ``--measure-every-round``. An architecture is priced once per actor (its latency and memory do not
        depend on the weights)."""
        if discrete.hash not in self.measured:
            self.measured[discrete.hash] = self._price(discrete)
        return self.measured[discrete.hash]

    def _price(self, discrete: Genome) -> dict:
        s = self.settings
        if s.measure_every_round or self.cost_model is None:
            net = DiscreteNet(discrete).to(self.device, memory_format=TRAINING_LAYOUT)  # measured as it trains
            return measure(net, self.splits.input_shape, s.batch_size, self.device,
                           latency_batch_size=s.latency_batch_size, disposable=True).to_dict()
        return HardwareMetrics(
            **self.cost_model.estimate(discrete), latency_spread_ms=0.0, memory_method="estimate",
            batch_size=s.batch_size, latency_batch_size=s.latency_batch_size, device=str(self.device),
            estimated=True).to_dict()

    def _pressure_term(self):
        if self.settings.pressure <= 0:
            return None
        cost = self.op_cost()
        return lambda: self.model.gate_pressure(cost, mu=self.settings.pressure_mu, lam=self.pressure.value)

    def op_cost(self):
        """What the gate pressure and the mutation estimates weigh an op by."""
        if self.settings.pressure_cost == "params":
            return param_cost
        return self.latency_table

    def _mutation_fields(self) -> dict:
        r = self.mutation_report
        return {
            "mutation": r,
            "parent_trial": r.get("donor", ""),
            "split_applied": bool(r.get("chosen")),
            "split_refused_budget": int(r.get("refused_for_budget", 0)),
        }

    # -- exploit: clone, then mutate ------------------------------------------------------------
    def _carry_out_mutation(self) -> None:
        """Apply the config's mutation instruction once (a restart from our own checkpoint skips it)."""
        if not self.config.get("mutation"):
            return
        instruction = MutationInstruction.from_dict(self.config["mutation"])
        if instruction.id == self.applied_mutation:
            return
        donor_genome = self.model.genome
        kind = instruction.kind
        done = self._rebuild(instruction) if kind in MACRO_MUTATIONS or kind == "crossover" else {}
        if not done.get("applied"):  # a split: the default, and the fallback of an impossible macro change or crossover
            split = self._split(instruction)
            done = {**done, **split, "reason": done.get("reason", "") + split["reason"],
                    "refused_for_budget": done.get("refused_for_budget", 0) + split["refused_for_budget"]}
        self.applied_mutation = instruction.id
        self.stable_epochs = 0  # a new architecture: its pruning has yet to settle
        self.mutation_report = {
            "id": instruction.id,
            "kind": kind,
            "donor": instruction.donor,
            "chosen": None,
            "donor_genome": donor_genome.to_json(),  # the architecture cloned, and what it grew into
            **done,
            "grown_genome": self.model.genome.to_json(),
        }

    def _cell_mutation(self, instruction: MutationInstruction) -> dict:
        """Draw ``mutation_candidates`` registered mutations of the donor, estimate each child's latency
        from the per-op table (scaled to the donor's measured latency), and apply the one that best
        fills a gap of the archive's front; over-budget children are refused. Costs no forward pass."""
        s, started = self.settings, time.perf_counter()
        rng = random.Random(zlib.crc32(instruction.id.encode()))
        genome = self.model.genome
        names = sorted(MUTATIONS)
        children = []
        for _ in range(s.mutation_candidates):
            name = rng.choice(names)
            try:
                children.append((name, mutate(genome, name, rng)))
            except GenomeError:
                continue  # no site for this mutation (e.g. nothing left to shrink)
        refused = 0
        if s.latency_budget_ms is not None and instruction.donor_latency:
            kept = [(n, c) for n, c in children if self._scaled_latency(c, instruction) <= s.latency_budget_ms]
            refused, children = len(children) - len(kept), kept
        if s.memory_budget_mb is not None:  # measured: no cheap estimate of a training step's peak yet
            kept = [(n, c) for n, c in children if within_budget(
                budget_metrics(c, batch_size=s.batch_size, device=self.device, latency_budget_ms=None,
                               memory_budget_mb=s.memory_budget_mb), None, s.memory_budget_mb)]
            refused, children = refused + len(children) - len(kept), kept
        if not children:
            return {"chosen": None, "refused_for_budget": refused, "reason": "no mutation possible; ",
                    "seconds": time.perf_counter() - started}
        estimates = [self._scaled_latency(child, instruction) for _, child in children]
        pick = fill_the_gap(estimates, list(instruction.front_latencies))
        name, child = children[pick]
        self.model.set_genome(child)
        refresh_optimizer(self.optimizer, self.model)
        return {"chosen": name, "refused_for_budget": refused, "estimated_latency_ms": estimates[pick],
                "candidates": [n for n, _ in children], "reason": f"{name} fills the front's largest gap; ",
                "seconds": time.perf_counter() - started}

    def _scaled_latency(self, genome: Genome, instruction: MutationInstruction) -> float:
        cost = self.op_cost()
        estimate = estimated_cost(genome, cost)
        if not instruction.donor_latency:
            return estimate
        return instruction.donor_latency * estimate / max(estimated_cost(self.model.genome, cost), 1e-9)

    def _split(self, instruction: MutationInstruction) -> dict:
        """Score candidate splits with the proxies (``--proxies``) and apply the best one that fits the
        budget; without the proxies, a cheap choice among the registered cell mutations."""
        s = self.settings
        if not s.proxies:
            return self._cell_mutation(instruction)
        decision = choose_split(
            self.model.genome,
            batch_size=s.batch_size,
            device=self.device,
            latency_budget_ms=s.latency_budget_ms,
            memory_budget_mb=s.memory_budget_mb,
            candidates_per_cell=s.candidates_per_cell,
            n_inits=s.proxy_inits,
            ntk_samples=s.proxy_samples,
            lrc_side=s.proxy_grid,
            latency_batch_size=s.latency_batch_size,
            seed=zlib.crc32(instruction.id.encode()),
        )
        if decision.chosen is not None:
            self.model.apply_split(*decision.chosen)
            refresh_optimizer(self.optimizer, self.model)
        return {
            "chosen": list(decision.chosen) if decision.chosen else None,
            "refused_for_budget": decision.refused_for_budget,
            "reason": decision.reason,
            "seconds": decision.seconds,
        }

    def _rebuild(self, instruction: MutationInstruction) -> dict:
        """A macro mutation or a crossover: a new network for the new genome, inheriting every tensor of
        the donor whose name and shape still match (a crossover's cells from the other parent start
        fresh). Not applied, with the reason, when the genome change is impossible or over budget."""
        kind, s = instruction.kind, self.settings
        genome, fresh, started = self.model.genome, (), time.perf_counter()
        try:
            if kind == "crossover":
                other = Genome.from_json(instruction.other_genome)
                from_other = crossover_cells(min(len(genome.cells), len(other.cells)),
                                             random.Random(zlib.crc32(instruction.id.encode())))
                child = genome.crossover(other, from_other)
                fresh = tuple(f"{part}.{k}." for k in sorted(from_other) for part in ("cells", "heads"))
            else:
                child = genome.macro_mutation(kind)
        except GenomeError as exc:
            return {"applied": False, "reason": f"{kind} not possible ({exc}); "}
        if s.budgets:
            metrics = budget_metrics(child, batch_size=s.batch_size, device=self.device,
                                     latency_budget_ms=s.latency_budget_ms, memory_budget_mb=s.memory_budget_mb,
                                     latency_batch_size=s.latency_batch_size)
            if not within_budget(metrics, s.latency_budget_ms, s.memory_budget_mb):
                return {"applied": False, "refused_for_budget": 1, "reason": f"{kind} would break the budget; "}
        model = self._supernet(child, self.config["drop_path"])
        model.set_gate_scale(self.model.gate_scale)
        inherited, new = inherit_weights(model, self.model.state_dict(), skip=fresh)
        momentum = {name: buffer for name, buffer in ckpt.momentum_buffers(self.model, self.optimizer).items()
                    if not name.startswith(fresh)}  # an inherited weight keeps its momentum too
        self.model = model
        self.optimizer = make_optimizer(model, self.config["lr"], self.config["weight_decay"], s.momentum)
        carried = ckpt.set_momentum(model, self.optimizer, momentum)
        done = {"applied": True, "inherited_tensors": inherited, "fresh_tensors": new, "momentum_carried": carried,
                "reason": f"{kind}: {inherited} tensors inherited, {new} fresh",
                "seconds": time.perf_counter() - started}
        if kind == "crossover":
            done.update(other=instruction.other, cells_from_other=sorted(from_other))
        return done

    # -- checkpoints and actor reuse ------------------------------------------------------------
    def save_checkpoint(self, checkpoint_dir: str) -> None:
        ckpt.save_checkpoint(self.model, checkpoint_dir)
        ckpt.save_momentum(self.model, self.optimizer, checkpoint_dir)
        state = {"applied_mutation": self.applied_mutation, "pressure": self.pressure.value,
                 "stable_epochs": self.stable_epochs, "rounds_done": self.iteration}
        ckpt.save_trainer_state(state, checkpoint_dir)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        model, state, self.checkpoint_fallback = ckpt.read_member_checkpoint(Path(checkpoint_dir), self.device)
        if self.checkpoint_fallback:
            logger.warning("%s", self.checkpoint_fallback)
            if state["rounds_done"] is not None:
                # Tune set the round count of the checkpoint it asked for; the member is back further.
                self._iteration = state["rounds_done"]
        model.set_drop_path(self.config["drop_path"])
        self.model = model
        # Momentum comes back too (a member paused and restored every round would otherwise lose it);
        # the learning rate and weight decay are this config's, perturbed on exploit.
        self.optimizer = make_optimizer(model, self.config["lr"], self.config["weight_decay"], self.settings.momentum)
        ckpt.set_momentum(model, self.optimizer, state["momentum"])
        self.pressure.value = state["pressure"]
        self.applied_mutation = state["applied_mutation"]
        self.stable_epochs = state["stable_epochs"]
        self._carry_out_mutation()

    def reset_config(self, new_config: dict) -> bool:
        if (new_config["settings"], new_config["start_genome"]) != (self.settings, self.start_genome):
            return False  # a different search: start a fresh actor
        self.config = new_config
        # A reused actor may start a new member (no restore follows) or receive an exploit (a restore
        # of the donor follows and replaces this model), so start fresh either way.
        self._start_member(new_config)
        return True


class Stopwatch:
    """Wall and CPU seconds (of the calling thread) spent inside ``with`` blocks, summed."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.thread_time()
        return self

    def __exit__(self, *exc):
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.thread_time() - self._cpu

    def fields(self, name: str) -> dict[str, float]:
        """``<name>_seconds`` (wall) and ``<name>_cpu_seconds``, as a round's report carries them; they
        differ when another process holds the CPU."""
        return {f"{name}_seconds": self.wall, f"{name}_cpu_seconds": self.cpu}


def _not_finite(loss: float) -> bool:
    return not math.isfinite(loss)


def _first_member(trial_id: str) -> bool:
    return trial_id.endswith("_00000")  # Tune numbers a run's trials <run>_00000, <run>_00001, ...


def poison_weights(model: torch.nn.Module) -> None:
    """Fault injection: NaN in the first parameter, so the next training loss is NaN."""
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))


def param_space(config: SearchConfig, start_genome: Genome | None = None) -> dict:
    """The trial config Tune samples per member; the scheduler perturbs lr, weight_decay and pressure.
    ``start_genome`` (read from ``config.genome`` by the launcher) replaces the initial genome."""
    return {
        "settings": config,
        "start_genome": start_genome.to_json() if start_genome else None,
        "lr": tune.loguniform(config.lr / 2, config.lr * 2),
        "weight_decay": tune.loguniform(config.weight_decay / 3, config.weight_decay * 3),
        "drop_path": config.drop_path,
        "pressure": tune.loguniform(config.pressure / 3, config.pressure * 3) if config.pressure > 0 else 0.0,
        "seed": tune.randint(0, 2**31 - 1),
        "mutation": None,
    }
