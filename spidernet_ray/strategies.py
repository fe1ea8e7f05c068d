"""The registry of search strategies (``--strategy``): a name -> a builder of the trainable class and
the Tune scheduler for a config, timm-style. ``spidernet_ray.tuner.build_tuner`` looks a config's
strategy up here; a benchmark registers its own variant with the same decorator.

Builders import Ray and the trainables only when called, so the config can list and check the names
without importing Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spidernet_ray.config import SearchConfig


# A strategy that samples members until its time budget ends the run samples at most this many.
UNBOUNDED_SAMPLES = 100_000


@dataclass(frozen=True)
class Strategy:
    """What a strategy runs: a ``tune.Trainable`` class, a Tune scheduler (None: FIFO), and how many
    members Tune samples in all (None: the population), never more than ``population`` at a time."""

    trainable: type
    scheduler: Any = None
    samples: int | None = None


StrategyBuilder = Callable[["SearchConfig", Path], Strategy]  # (config, run directory) -> Strategy
_STRATEGIES: dict[str, StrategyBuilder] = {}


def register_strategy(name: str) -> Callable[[StrategyBuilder], StrategyBuilder]:
    def register(builder: StrategyBuilder) -> StrategyBuilder:
        _STRATEGIES[name] = builder
        return builder

    return register


def strategy_names() -> list[str]:
    return list(_STRATEGIES)


def build_strategy(config: SearchConfig, run_dir: Path) -> Strategy:
    return _STRATEGIES[config.strategy](config, run_dir)


def _perturbed(config: SearchConfig) -> dict:
    """What PBT-style strategies perturb on exploit."""
    from ray import tune

    return {
        "lr": tune.loguniform(config.lr / 4, config.lr * 4),
        "weight_decay": tune.loguniform(config.weight_decay / 10, config.weight_decay * 10),
    }


PERTURBATION = 1.25  # a clone's lr, weight decay and pressure: its donor's times 1.25 or 0.8


def _narrow_perturbation(config: SearchConfig) -> dict:
    """What the search perturbs on exploit, and the ranges a resample draws from. Narrow, so that a
    one-round ranking of a clone against its donor reflects the architecture more than the lr; drop
    path is not perturbed at all. The gate-pressure strength spreads wider (half to double), so the
    population spreads along the accuracy-latency trade-off."""
    from ray import tune

    mutations = {}
    for name, spread in (("lr", PERTURBATION), ("weight_decay", PERTURBATION), ("pressure", 2.0)):
        value = getattr(config, name)
        if value > 0:  # a zero (pressure or decay off) stays off
            mutations[name] = tune.loguniform(value / spread, value * spread)
    return mutations


def spidernet_scheduler(config: SearchConfig, run_dir: Path, scheduler_class: type | None = None):
    """The search's Pareto scheduler for ``config`` (``scheduler_class``: a subclass to use instead)."""
    from spidernet_ray.rundir import STATE_FILE
    from spidernet_ray.scheduler import SpiderNetScheduler

    return (scheduler_class or SpiderNetScheduler)(
        objectives=config.objectives,
        budgets=config.budgets,
        state_path=run_dir / STATE_FILE,
        quantile_fraction=config.quantile_fraction,
        hyperparam_mutations=_narrow_perturbation(config),
        perturbation_factors=(PERTURBATION, 1 / PERTURBATION),
        macro_probability=config.macro_probability if config.macro_mutations else 0.0,
        crossover_probability=config.crossover_probability if config.crossover else 0.0,
        seed=config.seed,
    )


def stock_pbt_scheduler(config: SearchConfig, scheduler_class: type | None = None):
    """Ray Tune's PopulationBasedTraining over lr and weight decay (``scheduler_class``: a subclass)."""
    from ray.tune.schedulers import PopulationBasedTraining

    return (scheduler_class or PopulationBasedTraining)(
        time_attr="training_iteration", metric="val_accuracy", mode="max", perturbation_interval=1,
        quantile_fraction=config.quantile_fraction, hyperparam_mutations=_perturbed(config))


@register_strategy("spidernet")
def spidernet(config: SearchConfig, run_dir: Path) -> Strategy:
    """The Pareto population search (spidernet_ray.scheduler)."""
    from spidernet_ray.trainable import SpiderNetTrainable

    return Strategy(SpiderNetTrainable, spidernet_scheduler(config, run_dir))


def random_samples(config: SearchConfig) -> int:
    """Random search keeps sampling new architectures, ``population`` at a time, as members finish
    (random) or ASHA stops them (random_asha): until the time budget ends the run when there is one,
    else up to population x rounds for random_asha (at least the search's trial-rounds, most members
    being stopped after a round or two) and the population alone for random (each trains every round)."""
    if config.time_budget_s is not None:
        return UNBOUNDED_SAMPLES
    return config.population * config.rounds if config.strategy == "random_asha" else config.population


@register_strategy("random")
def random_search(config: SearchConfig, run_dir: Path) -> Strategy:
    """Random architectures from the search's space, its training recipe, no scheduler."""
    from spidernet_ray.baselines import RandomSearchTrainable

    return Strategy(RandomSearchTrainable, samples=random_samples(config))


@register_strategy("random_asha")
def random_asha(config: SearchConfig, run_dir: Path) -> Strategy:
    """Random search under Ray Tune's ASHA early stopping: members that trail at a rung stop, and new
    random members take their place."""
    from ray.tune.schedulers import ASHAScheduler

    from spidernet_ray.baselines import RandomSearchTrainable

    scheduler = ASHAScheduler(time_attr="training_iteration", metric="val_accuracy", mode="max",
                              max_t=config.rounds, grace_period=1, reduction_factor=2)
    return Strategy(RandomSearchTrainable, scheduler, samples=random_samples(config))


@register_strategy("pbt")
def stock_pbt(config: SearchConfig, run_dir: Path) -> Strategy:
    """Ray Tune's stock PopulationBasedTraining on one fixed hand-written network."""
    from spidernet_ray.baselines import StockPBTTrainable

    return Strategy(StockPBTTrainable, stock_pbt_scheduler(config))
