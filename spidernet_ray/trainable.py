"""The Ray Tune trainable: one population member training its own supernet, one round per step.

A round is a few epochs with pruning active, then validation and hardware measurement of the
discrete network the member currently stands for. On exploit, Ray restores the donor's checkpoint
into this member and hands it a new config carrying a mutation instruction; the member scores
candidate splits with the train-free proxies itself (compute stays on the worker), applies the best
one that fits the budget and keeps training.
"""

from __future__ import annotations

import json
import math
import random
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import ray
import torch
from ray import tune

from spidernet_ray import checkpoint as ckpt
from spidernet_ray.config import SearchConfig
from spidernet_ray.data import DataSplits, make_loaders
from spidernet_ray.gates import PressureCoefficient
from spidernet_ray.genome import Genome, initial_genome
from spidernet_ray.hardware import measure
from spidernet_ray.pareto import budget_violation
from spidernet_ray.proxies import choose_split
from spidernet_ray.supernet import SuperNet
from spidernet_ray.train import evaluate, make_optimizer, prune_after_epoch, refresh_optimizer, train_epoch

STATE_FILE = "trainer_state.json"


@dataclass(frozen=True)
class TrialSettings:
    """What every member shares; the perturbed hyperparameters live beside it in the trial config."""

    reductions: int
    channels: int
    rounds: int
    epochs_per_round: int
    batch_size: int
    momentum: float
    gate: str
    pressure: float
    pressure_mu: float
    deadhead_window: int
    initial_splits: int
    candidates_per_cell: int
    latency_budget_ms: float | None
    memory_budget_mb: float | None
    latency_batch_size: int

    @classmethod
    def from_config(cls, config: SearchConfig) -> TrialSettings:
        return cls(**{name: getattr(config, name) for name in cls.__dataclass_fields__})

    @property
    def budgets(self) -> dict[str, float]:
        named = {"latency_ms": self.latency_budget_ms, "peak_memory_mb": self.memory_budget_mb}
        return {k: v for k, v in named.items() if v is not None}


def trial_device() -> torch.device:
    # Ray sets CUDA_VISIBLE_DEVICES to the trial's GPUs. A trial given no GPU stays on the CPU even on
    # a GPU machine, and one given a logical GPU where CUDA is absent falls back to the CPU.
    if ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def seeded_start(splits: DataSplits, settings: TrialSettings, seed: int) -> Genome:
    """The initial genome plus a few random splits, so members start from different architectures."""
    genome = initial_genome(splits.input_shape, splits.num_classes, settings.reductions, settings.channels)
    rng = random.Random(seed)
    for _ in range(settings.initial_splits):
        cell = rng.randrange(len(genome.cells))
        genome = genome.split_edge(cell, *rng.choice(genome.candidate_splits(cell)))
    return genome


class SpiderNetTrainable(tune.Trainable):
    def setup(self, config: dict, splits: DataSplits):
        self.splits = splits
        self.settings = TrialSettings(**config["settings"])
        self.measured = {}  # architecture -> hardware metrics, shared by the members this actor hosts
        self.device = trial_device()
        torch.set_num_threads(max(1, int(self.trial_resources.required_resources.get("CPU", 1))))
        self.loaders = make_loaders(splits, self.settings.batch_size, self.device, seed=config["seed"])
        self._start_member(config)

    def _start_member(self, config: dict) -> None:
        torch.manual_seed(config["seed"])
        genome = seeded_start(self.splits, self.settings, config["seed"])
        self.model = SuperNet(genome, gate=self.settings.gate, drop_path=config["drop_path"],
                              window=self.settings.deadhead_window).to(self.device)
        self.optimizer = make_optimizer(self.model, config["lr"], config["weight_decay"], self.settings.momentum)
        self.pressure = PressureCoefficient(value=self.settings.pressure)
        self.applied_mutation = None  # id of the last mutation instruction carried out
        self.mutation_report = {}  # what the last mutation did, reported with the next round

    # -- one round ----------------------------------------------------------------------------
    def step(self) -> dict:
        s, model = self.settings, self.model
        train_seconds, diverged, removed, loss = 0.0, "", [], float("nan")
        for epoch in range(s.epochs_per_round):
            model.anneal_gates((self.iteration * s.epochs_per_round + epoch + 1) / (s.rounds * s.epochs_per_round))
            pressure = self._pressure_term()
            start = time.perf_counter()
            loss = train_epoch(model, self.optimizer, self.loaders.train, pressure, should_stop=_not_finite)
            train_seconds += time.perf_counter() - start
            if _not_finite(loss):
                diverged = f"training loss became {loss} in round {self.iteration + 1}, epoch {epoch + 1}"
                break
            pruned = prune_after_epoch(model, self.optimizer)
            self.pressure.update(len(pruned))
            removed += pruned
        start = time.perf_counter()
        val_accuracy, val_loss = evaluate(model, self.loaders.val)
        if diverged:
            val_accuracy, val_loss = 0.0, float("inf")
        eval_seconds = time.perf_counter() - start
        start = time.perf_counter()
        hardware = self._measure()
        measure_seconds = time.perf_counter() - start
        metrics = {"val_accuracy": val_accuracy, **hardware}
        violation = budget_violation(metrics, s.budgets)
        report = {
            **metrics,
            "val_loss": val_loss,
            "train_loss": loss,
            "train_seconds": train_seconds,
            "eval_seconds": eval_seconds,
            "measure_seconds": measure_seconds,
            "ops_alive": model.genome.ops_alive(),
            "ops_open": sum(len(ops) for ops in model.open_ops().values()),
            "ops_deleted": len(removed),
            "genome": model.discrete_genome().to_json(),
            "supernet_genome": model.genome.to_json(),
            "genome_hash": model.discrete_genome().hash,
            "budget_violation": violation,
            "feasible": violation == 0 and not diverged,
            "fitness": val_accuracy - violation,
            "diverged": bool(diverged),
            "reason": diverged,
            "gpus": len(ray.get_gpu_ids()),  # assigned by Ray; compute falls back to CPU without CUDA
            "lr": self.config["lr"],
            "weight_decay": self.config["weight_decay"],
            "drop_path": self.config["drop_path"],
            **self._mutation_fields(),
        }
        self.mutation_report = {}
        return report

    def _measure(self) -> dict:
        """Hardware metrics of the discrete network; an architecture already measured is not re-measured
        (its latency and memory do not depend on the weights)."""
        discrete = self.model.to_discrete()
        key = (discrete.genome.hash, tuple(sorted(discrete.edge_ops.items())))
        if key not in self.measured:
            self.measured[key] = measure(discrete, self.splits.input_shape, self.settings.batch_size, self.device,
                                         latency_batch_size=self.settings.latency_batch_size).to_dict()
        return self.measured[key]

    def _pressure_term(self):
        if self.settings.pressure <= 0:
            return None
        return lambda: self.model.gate_pressure(mu=self.settings.pressure_mu, lam=self.pressure.value)

    def _mutation_fields(self) -> dict:
        r = self.mutation_report
        return {
            "mutation": json.dumps(r) if r else "",
            "parent_trial": r.get("donor", ""),
            "split_applied": bool(r.get("chosen")),
            "split_refused_budget": int(r.get("refused_for_budget", 0)),
        }

    # -- exploit: clone, then mutate ------------------------------------------------------------
    def _carry_out_mutation(self) -> None:
        """Apply the config's mutation instruction once (a restart from our own checkpoint skips it)."""
        instruction = self.config.get("mutation")
        if not instruction or instruction["id"] == self.applied_mutation:
            return
        s = self.settings
        donor_genome = self.model.genome
        decision = choose_split(
            self.model.genome,
            batch_size=s.batch_size,
            device=self.device,
            latency_budget_ms=s.latency_budget_ms,
            memory_budget_mb=s.memory_budget_mb,
            candidates_per_cell=s.candidates_per_cell,
            latency_batch_size=s.latency_batch_size,
            seed=zlib.crc32(instruction["id"].encode()),
        )
        if decision.chosen is not None:
            self.model.apply_split(*decision.chosen)
            refresh_optimizer(self.optimizer, self.model)
        self.applied_mutation = instruction["id"]
        self.mutation_report = {
            "id": instruction["id"],
            "donor": instruction.get("donor", ""),
            "chosen": list(decision.chosen) if decision.chosen else None,
            "donor_genome": donor_genome.to_json(),  # the architecture cloned, and what it grew into
            "grown_genome": self.model.genome.to_json(),
            "refused_for_budget": decision.refused_for_budget,
            "reason": decision.reason,
            "seconds": decision.seconds,
        }

    # -- checkpoints and actor reuse ------------------------------------------------------------
    def save_checkpoint(self, checkpoint_dir: str) -> None:
        ckpt.save_checkpoint(self.model, checkpoint_dir)
        state = {"applied_mutation": self.applied_mutation, "pressure": self.pressure.value}
        (Path(checkpoint_dir) / STATE_FILE).write_text(json.dumps(state))

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        model = ckpt.load_checkpoint(checkpoint_dir, self.device)
        model.set_drop_path(self.config["drop_path"])
        state = json.loads((Path(checkpoint_dir) / STATE_FILE).read_text())
        self.model = model
        # Momentum is not carried over: it is cheap to rebuild and keeps checkpoints free of pickles.
        self.optimizer = make_optimizer(model, self.config["lr"], self.config["weight_decay"], self.settings.momentum)
        self.pressure.value = state["pressure"]
        self.applied_mutation = state["applied_mutation"]
        self._carry_out_mutation()

    def reset_config(self, new_config: dict) -> bool:
        if TrialSettings(**new_config["settings"]) != self.settings:
            return False  # a different search: start a fresh actor
        self.config = new_config
        # A reused actor may start a new member (no restore follows) or receive an exploit (a restore
        # of the donor follows and replaces this model), so start fresh either way.
        self._start_member(new_config)
        return True


def _not_finite(loss: float) -> bool:
    return not math.isfinite(loss)


def param_space(config: SearchConfig) -> dict:
    """The trial config Tune samples per member; PBT perturbs lr, weight_decay and drop_path."""
    return {
        "settings": asdict(TrialSettings.from_config(config)),
        "lr": tune.loguniform(config.lr / 2, config.lr * 2),
        "weight_decay": tune.loguniform(config.weight_decay / 3, config.weight_decay * 3),
        "drop_path": config.drop_path,
        "seed": tune.randint(0, 2**31 - 1),
        "mutation": None,
    }
