"""The baselines a search is compared with, each a trainable for the same Tuner (``--strategy``).

- ``random`` (``RandomSearchTrainable``): random architectures from the space the search can reach
  (``random_start``: extra nodes from splits, sparse edges, edges of one operation, narrowed operations),
  trained with the search's own recipe (supernet with gates, resource pressure, deadheading) under a
  plain FIFO scheduler: no cloning, no mutation, no perturbation.
- ``random_asha``: the same members under Ray Tune's ``ASHAScheduler``, which stops the weaker ones
  early so that more architectures are tried in the same time.
- ``pbt`` (``StockPBTTrainable``): one fixed hand-written network for every member (``handwritten_genome``),
  trained without gates or pruning under Ray Tune's stock ``PopulationBasedTraining`` over the learning
  rate and weight decay.

Both report the search's metrics (val_accuracy, latency_ms, peak_memory_mb, params, flops, genome, ...)
so one set of result files, one retrain and one hypervolume serve every strategy.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path

from spidernet_ray import checkpoint as ckpt
from spidernet_ray.config import SearchConfig
from spidernet_ray.data import DataSplits
from spidernet_ray.genome import Genome, initial_genome
from spidernet_ray.hardware import count_params
from spidernet_ray.ops import WIDTH_SITES
from spidernet_ray.pareto import budget_violation
from spidernet_ray.record import MemberReport
from spidernet_ray.supernet import DiscreteNet
from spidernet_ray.train import TRAINING_LAYOUT, evaluate, make_optimizer, train_epoch
from spidernet_ray.trainable import SpiderNetTrainable, Stopwatch, _not_finite, seeded_start

# The hand-written network's operation on every edge: the depthwise-separable 3x3 convolution
# (ReLU-conv-BN twice) that hand-designed mobile CNNs are built from.
HANDWRITTEN_OP = "sep_conv_3x3"

# How a random member's edges look. Pruning leaves search members with edges of a few operations, often of
# one; channel search narrows convolutions. Random members are drawn across that whole range, and then
# train with the search's recipe, so their gates prune them further as a search member's do.
ONE_OP_SHARE = 1 / 3  # edges that keep a single operation
OP_KEPT = 1 / 2  # otherwise each candidate operation stays with this probability (at least one does)
NARROWED_SHARE = 1 / 2  # with channel search: narrowable operations given a random narrower width
# A search lineage gains one split per exploit. Rounds no longer bound that when a time budget ends the
# run (rounds are set high), and networks far deeper than the search grows cannot finish a round in the
# budgets the comparison uses: this caps the extra splits a random member draws.
MAX_EXTRA_SPLITS = 6


# -- random search ------------------------------------------------------------------------------
def max_random_splits(settings: SearchConfig) -> int:
    """The most splits a random member starts with: as many as a search member can carry at the end.

    A search member starts with ``initial_splits`` and gains one split per exploit; it can be the clone
    of an exploit at most once per round after the first, and clones inherit their donor's splits, so
    the deepest lineage ends with ``initial_splits + rounds - 1`` (at most ``MAX_EXTRA_SPLITS`` more than
    it started with). Drawing the count uniformly from 0 up to that covers every size the search
    population can reach (pruning also takes search members below their split count), without
    favouring the large end.
    """
    return settings.initial_splits + min(settings.rounds - 1, MAX_EXTRA_SPLITS)


def random_ops(rng: random.Random, candidates: tuple[str, ...]) -> tuple[str, ...]:
    """A random non-empty subset of ``candidates``: one operation on ``ONE_OP_SHARE`` of the edges."""
    if rng.random() < ONE_OP_SHARE:
        return (rng.choice(candidates),)
    kept = tuple(op for op in candidates if rng.random() < OP_KEPT)
    return kept or (rng.choice(candidates),)


def random_start(splits: DataSplits, settings: SearchConfig, seed: int) -> Genome:
    """A random architecture of the space the search reaches: the initial genome plus a uniformly random
    number (0..``max_random_splits``) of random splits, every edge then keeping a random non-empty subset
    of its operations (``random_ops``), and with channel search on, some convolutions narrowed to a random
    hidden width below the cell's channels (``NARROWED_SHARE``)."""
    rng = random.Random(seed)
    count = rng.randint(0, max_random_splits(settings))
    # From every candidate op (the search's sparse start aside): the search reaches them all by growing.
    genome = seeded_start(splits, replace(settings, start_ops=0), seed=rng.randrange(2**31), count=count)
    widths = {}
    for k, cell in enumerate(genome.cells):
        for edge in cell.edges:
            kept = random_ops(rng, edge.ops)
            for op in sorted(set(edge.ops) - set(kept)):
                genome = genome.remove_op(k, edge.src, edge.dst, op)  # never the last op: nothing is cut off
            channels = genome.cell_channels(k)
            for op in sorted(set(kept) & set(WIDTH_SITES)):
                if settings.channel_search and channels > 1 and rng.random() < NARROWED_SHARE:
                    widths[(k, edge.src, edge.dst, op)] = rng.randint(1, channels - 1)
    return genome.with_widths(widths) if widths else genome


class RandomSearchTrainable(SpiderNetTrainable):
    """A search member without a scheduler: its own random architecture, the search's training recipe."""

    def first_genome(self, config: dict) -> Genome:
        return random_start(self.splits, self.settings, config["seed"])


# -- stock PBT on a fixed network ----------------------------------------------------------------
def handwritten_genome(splits: DataSplits, settings: SearchConfig) -> Genome:
    """A plain hand-written CNN in the search's macro skeleton: the stem, one normal cell and
    ``reductions`` stride-2 cells (channels doubling, densely connected, a head per cell), every edge
    one 3x3 separable convolution, no choice of operation and no extra nodes.

    Its width is chosen for a comparable size: of C..4C initial channels, the one whose parameter
    count is closest to a search member's at the start (the initial genome with its initial splits and
    every candidate operation, seed 0), which is what pruning then shrinks from.
    """
    target = count_params(DiscreteNet(seeded_start(splits, replace(settings, start_ops=0), seed=0)))

    def plain(channels: int) -> Genome:
        return initial_genome(splits.input_shape, splits.num_classes, settings.reductions, channels,
                              ops=(HANDWRITTEN_OP,))

    widths = range(settings.channels, 4 * settings.channels + 1)
    return plain(min(widths, key=lambda c: abs(count_params(DiscreteNet(plain(c))) - target)))


class StockPBTTrainable(SpiderNetTrainable):
    """One fixed network per member (``handwritten_genome``),
    plain SGD training (no gates, pressure, pruning or growth); lr and weight_decay come from PBT.
    Data, set-up, actor reuse and the reported metrics are the search trainable's."""

    fixed_genome: Genome | None = None  # built on the first member an actor hosts

    def build_member(self, config: dict) -> DiscreteNet:
        if self.fixed_genome is None:
            self.fixed_genome = handwritten_genome(self.splits, self.settings)
        return DiscreteNet(self.fixed_genome, drop_path=config["drop_path"]).to(self.device,
                                                                               memory_format=TRAINING_LAYOUT)

    def step(self) -> dict:
        s, model = self.settings, self.model
        train, evaluation, measurement = Stopwatch(), Stopwatch(), Stopwatch()
        diverged, loss = "", float("nan")
        for epoch in range(s.epochs_per_round):
            with train:
                loss = train_epoch(model, self.optimizer, self.loaders.train, should_stop=_not_finite)
            if _not_finite(loss):
                diverged = f"training loss became {loss} in round {self.iteration + 1}, epoch {epoch + 1}"
                break
        with evaluation:
            val_accuracy, val_loss = (0.0, math.inf) if diverged else evaluate(model, self.loaders.val)
        with measurement:
            hardware = self.hardware(model.genome)
        violation = budget_violation({"val_accuracy": val_accuracy, **hardware}, s.budgets)
        return MemberReport(
            val_accuracy=val_accuracy,
            val_loss=val_loss,
            train_loss=loss,
            **hardware,
            **train.fields("train"),
            **evaluation.fields("eval"),
            **measurement.fields("measure"),
            ops_alive=model.genome.ops_alive(),
            genome=model.genome.to_json(),
            genome_hash=model.genome.hash,
            budget_violation=violation,
            feasible=violation == 0 and not diverged,
            diverged=bool(diverged),
            reason=diverged,
            lr=self.config["lr"],
            weight_decay=self.config["weight_decay"],
            drop_path=self.config["drop_path"],
        ).to_result()

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        ckpt.save_checkpoint(self.model, checkpoint_dir)
        ckpt.save_momentum(self.model, self.optimizer, checkpoint_dir)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        # The donor's weights and momentum under this member's (perturbed) lr and weight decay.
        self.model = ckpt.load_checkpoint(Path(checkpoint_dir), self.device).to(memory_format=TRAINING_LAYOUT)
        self.model.set_drop_path(self.config["drop_path"])
        self.optimizer = make_optimizer(self.model, self.config["lr"], self.config["weight_decay"],
                                        self.settings.momentum)
        ckpt.set_momentum(self.model, self.optimizer, ckpt.read_momentum(checkpoint_dir))

