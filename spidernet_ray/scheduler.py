"""SpiderNetScheduler: Ray Tune's PopulationBasedTraining with Pareto ranking and mutation instructions.

What changes from stock PBT, each in one protected hook:
- ``_quantiles``: members are ranked by non-dominated sorting over several objectives with
  constraint domination (budget violators rank below every feasible member), crowding distance and
  then a seeded random draw for ties, instead of by one scalar. Diverged members are never donors.
  A clone that has not reported since its exploit is left out of the ranking: its last result and
  its checkpoint belong to different networks (its own old one, its donor's), so it can be neither
  a donor (the child would get the grand-donor's weights under its name) nor a victim. A clone
  that has reported at most ``protected_rounds`` rounds since then is ranked but not culled: a
  mutated child needs a round to recover before it can be judged.
- ``_get_new_config``: the clone's config also carries a mutation instruction (grow by a split) on
  top of PBT's perturbation of the hyperparameters. With the search-space extensions on, the
  instruction may instead be a macro mutation (``macro_probability``) or a crossover with another
  member of the top half (``crossover_probability``, the second kind of exploit), whose genome the
  instruction carries since the clone restores only the donor's checkpoint.
- ``_checkpoint_or_exploit``: the donor draw and the hyperparameter perturbation come from the
  scheduler's seeded stream instead of the global ``random``.
- ``_exploit``: records the genealogy (who cloned whom, with which mutation).
- ``_save_trial_state``: keeps per-trial scores and a Pareto archive of every feasible architecture,
  the snapshots a member took during the round (gradual pruning) included.
- ``choose_trial_to_run``: PBT's turn order, but every waiting member is staged rather than one at a
  time, so that Tune keeps paused members' actors for reuse (see the method).

Ray does not save scheduler state, so it is written to ``state_path`` (JSON) after every change and
read back from there on construction and on ``Tuner.restore``. Keep it out of the top level of Ray's
experiment directory as a ``.json`` or ``.pkl`` file: on restore Ray copies those into its staging
folder and uploads the copies back over them at every snapshot. Exploits that Ray's snapshot did not
record when the driver stopped are undone by the restore and marked so (``on_trial_add``). Usable from
any plain ``tune.Tuner``:

    scheduler = SpiderNetScheduler(
        hyperparam_mutations={"lr": tune.loguniform(1e-3, 1e-1)},
        state_path="/runs/my-search/scheduler/state.json",
    )
    tuner = tune.Tuner(tune.with_parameters(SpiderNetTrainable, splits=splits), param_space=space,
                       tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=8, reuse_actors=True))
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining

from spidernet_ray.genome import MACRO_MUTATIONS
from spidernet_ray.pareto import DEFAULT_OBJECTIVES, ParetoArchive, budget_violation, objective_matrix, parse_objectives
from spidernet_ray.pareto import rank_population
from spidernet_ray.record import ARCHIVE_FIELDS, MutationInstruction, decode
from spidernet_ray.rundir import atomic_write_text

DIVERGED_VIOLATION = 1e12


def _actor_free(tune_controller) -> bool:
    """Whether Tune holds a cached actor no trial has taken yet. Tune does not expose its actor cache;
    a controller without one (another Tune version) counts as having one free, which gives stock
    PBT's choice. Tune hands schedulers a wrapper that logs a warning on such access; the controller
    inside it is read directly, so users do not see that warning every run."""
    controller = getattr(tune_controller, "_tune_controller", tune_controller)
    cache = getattr(controller, "_actor_cache", None)
    return cache is None or cache.num_cached_objects > 0


@contextmanager
def _global_random_from(rng: random.Random):
    """Stock PBT draws its donor and perturbations from the global ``random``: reseed it from ``rng``
    for the duration, and give the caller's global stream back untouched afterwards."""
    saved = random.getstate()
    random.seed(rng.getrandbits(64))
    try:
        yield
    finally:
        random.setstate(saved)


class SpiderNetScheduler(PopulationBasedTraining):
    def __init__(
        self,
        objectives=DEFAULT_OBJECTIVES,
        budgets: dict[str, float] | None = None,
        state_path: str | os.PathLike | None = None,
        perturbation_interval: int = 1,
        quantile_fraction: float = 0.25,
        macro_probability: float = 0.0,
        crossover_probability: float = 0.0,
        protected_rounds: int = 1,
        seed: int | None = None,
        **pbt_kwargs,
    ):
        for name, value in (("macro_probability", macro_probability), ("crossover_probability", crossover_probability)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if protected_rounds < 0:
            raise ValueError(f"protected_rounds must be >= 0, got {protected_rounds!r}")
        self.macro_probability, self.crossover_probability = macro_probability, crossover_probability
        self.protected_rounds = protected_rounds
        self._rng = random.Random(seed)  # every draw of the exploit: donor, perturbation, extension
        self._tiebreak_rng = np.random.default_rng(seed)
        self._ranked: list[Trial] = []  # the population best first, as last ranked
        self.objectives = parse_objectives(objectives)
        primary = self.objectives[0]
        super().__init__(
            time_attr="training_iteration",
            metric=primary.metric,
            mode=primary.mode,
            perturbation_interval=perturbation_interval,
            quantile_fraction=quantile_fraction,
            **pbt_kwargs,
        )
        self.budgets = dict(budgets or {})
        self.state_path = Path(state_path) if state_path else None
        self.archive = ParetoArchive(self.objectives)
        self.genealogy: list[dict] = []
        self.scores: dict[str, dict] = {}  # trial id -> latest objectives, violation, rank
        # Set by whoever records every result (the launcher's callback): it calls commit_state after
        # writing each row, so the state file never holds a result whose row a killed driver lost.
        self.commit_after_rows = False
        self._uncommitted = False
        self.reports_since_clone: dict[str, int] = {}  # trial id -> rounds reported since its last exploit
        if self.state_path and self.state_path.exists():
            self._load_state()

    # -- ranking --------------------------------------------------------------------------------
    def _save_trial_state(self, state, time_, result, trial):
        score = super()._save_trial_state(state, time_, result, trial)
        if trial.trial_id in self.reports_since_clone:
            self.reports_since_clone[trial.trial_id] += 1
        violation = budget_violation(result, self.budgets)
        diverged = bool(result.get("diverged"))
        self.scores[trial.trial_id] = {
            "round": result.get("training_iteration"),
            **{o.metric: result.get(o.metric) for o in self.objectives},
            "violation": violation,
            "diverged": diverged,
        }
        if not diverged:
            self._archive_snapshots(result, trial)
        if violation == 0 and not diverged and result.get("genome_hash"):
            payload = {"trial_id": trial.trial_id, "round": result.get("training_iteration")}
            payload.update({k: result[k] for k in ARCHIVE_FIELDS if k in result})
            metrics = {o.metric: result.get(o.metric) for o in self.objectives}
            self.archive.add(result["genome_hash"], metrics, payload)
        self._write_state()
        return score

    def _archive_snapshots(self, result: dict, trial: Trial) -> None:
        """Gradual pruning: each architecture the member snapshotted during the round is a candidate of
        its own (added before the round's result, so on the same architecture the round's result wins)."""
        for snapshot in decode(result, "snapshots"):
            if budget_violation(snapshot, self.budgets) != 0 or not snapshot.get("genome_hash"):
                continue
            payload = {"trial_id": trial.trial_id, "round": snapshot.get("round"), "epoch": snapshot.get("epoch"),
                       "snapshot": True}
            payload.update({k: snapshot[k] for k in ARCHIVE_FIELDS if k in snapshot})
            metrics = {o.metric: snapshot.get(o.metric) for o in self.objectives}
            self.archive.add(snapshot["genome_hash"], metrics, payload)

    def rank(self, trials: list[Trial]) -> list[Trial]:
        """Best first: Pareto front, then crowding distance; violators and diverged members last."""
        results = [self._trial_state[t].last_result for t in trials]
        values = objective_matrix(results, self.objectives)
        # A diverged member counts as the worst possible violator.
        violations = [DIVERGED_VIOLATION if self._diverged(t) else self.scores[t.trial_id]["violation"] for t in trials]
        return [trials[i] for i in rank_population(values, violations, rng=self._tiebreak_rng)]

    def _quantiles(self) -> tuple[list[Trial], list[Trial]]:
        trials = [
            t for t, state in self._trial_state.items()
            if state.last_result is not None and t.trial_id in self.scores and not t.is_finished()
            and self.reports_since_clone.get(t.trial_id) != 0
        ]
        if len(trials) <= 1:
            return [], []
        ranked = self._ranked = self.rank(trials)
        size = min(int(math.ceil(len(ranked) * self._quantile_fraction)), len(ranked) // 2)
        upper = [t for t in ranked[:size] if not self._diverged(t)]
        if not upper:
            return [], []
        # The worst members outside the top that are not protected clones.
        lower = [t for t in ranked[size:] if not self._protected(t)][-size:]
        return lower, upper

    def _protected(self, trial: Trial) -> bool:
        """A clone that has reported at most ``protected_rounds`` rounds since its exploit (and did not
        diverge: a diverged member is always cloned over)."""
        reports = self.reports_since_clone.get(trial.trial_id)
        return reports is not None and reports <= self.protected_rounds and not self._diverged(trial)

    def _diverged(self, trial: Trial) -> bool:
        return self.scores[trial.trial_id]["diverged"]

    # -- restore ----------------------------------------------------------------------------------
    def on_trial_add(self, tune_controller, trial: Trial):
        super().on_trial_add(tune_controller, trial)
        self._mark_undone(trial)

    def _mark_undone(self, trial: Trial) -> None:
        """A trial that Tune restores carries the last mutation instruction its snapshot recorded. Its
        exploits recorded after that one were undone with the driver: the member goes on from before
        them. They stay in the genealogy, marked ``undone``, as the member may have reported rounds
        under them before the stop. (A new trial has no exploits; a live one carries its last.)"""
        exploits = [entry for entry in self.genealogy if entry["child"] == trial.trial_id]
        ids = [entry["mutation"]["id"] for entry in exploits]
        carried = (trial.config.get("mutation") or {}).get("id")
        if carried is not None and carried not in ids:
            return  # an instruction this state never gave: nothing here to judge it by
        after = ids.index(carried) + 1 if carried else 0
        undone = [entry for entry in exploits[after:] if not entry.get("undone")]
        for entry in undone:
            entry["undone"] = True
        if undone:
            self._write_state(now=True)  # read off Ray's snapshot, not a result: no row to wait for

    # -- exploit ----------------------------------------------------------------------------------
    def _checkpoint_or_exploit(self, trial, tune_controller, upper_quantile, lower_quantile):
        # Stock PBT only clones donors it asked to save while they were in the upper quantile. Our
        # trials checkpoint every round, so a donor's own latest checkpoint (of its last result) is
        # just as good and saves skipping the exploit.
        for donor in upper_quantile:
            state = self._trial_state[donor]
            # (A clone that has not reported since is never in the upper quantile, see _quantiles.)
            if state.last_checkpoint is None and donor.checkpoint is not None:
                state.last_checkpoint = donor.checkpoint
        with _global_random_from(self._rng):
            super()._checkpoint_or_exploit(trial, tune_controller, upper_quantile, lower_quantile)

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        """The waiting member with the least training time (PBT's fair turn order) when it is not yet
        staged or an actor is free for it; otherwise the next waiting member not yet staged, so that in
        a few controller steps every waiting member is staged.

        Tune keeps a paused member's actor for reuse only while some staged member needs its
        resources (besides one spare). Stock PBT stages one member at a time, so when two members
        pause together, as members of equal step times do every round, the second actor is stopped
        and the next member starts a new process and sets up again. A staged member waits for
        resources; it starts only on an actor another member left. A member Tune stages takes a free
        cached actor at once, so while one is free the first in turn is chosen, never a later one.
        """
        waiting = [t for t in tune_controller.get_trials() if t.status in (Trial.PENDING, Trial.PAUSED)]
        waiting.sort(key=lambda t: self._trial_state[t].last_train_time)
        if not waiting:
            return None
        if waiting[0].status == Trial.PAUSED or _actor_free(tune_controller):
            return waiting[0]
        return next((t for t in waiting if t.status == Trial.PAUSED), waiting[0])

    def _get_new_config(self, trial: Trial, trial_to_clone: Trial):
        new_config, operations = super()._get_new_config(trial, trial_to_clone)
        new_config["mutation"] = self._mutation_instruction(trial, trial_to_clone)
        return new_config, operations

    def _mutation_instruction(self, trial: Trial, donor: Trial) -> dict:
        """What the clone does after restoring the donor: a split, unless an extension that is on draws
        a crossover (with another top-half member, its genome carried along) or a macro mutation."""
        partner = self._crossover_partner(trial, donor) if self.crossover_probability else None
        if partner is not None:
            genome = self._trial_state[partner].last_result["genome"]
            instruction = MutationInstruction(donor.trial_id, "crossover", other=partner.trial_id, other_genome=genome)
        elif self.macro_probability and self._rng.random() < self.macro_probability:
            instruction = MutationInstruction(donor.trial_id, self._rng.choice(MACRO_MUTATIONS))
        else:
            front = tuple(float(e["metrics"]["latency_ms"]) for e in self.archive.front()
                          if e.get("metrics", {}).get("latency_ms") is not None)
            donor_latency = float((self._trial_state[donor].last_result or {}).get("latency_ms") or 0.0)
            instruction = MutationInstruction(donor.trial_id, front_latencies=front, donor_latency=donor_latency)
        return instruction.to_dict()

    def _crossover_partner(self, trial: Trial, donor: Trial) -> Trial | None:
        """With ``crossover_probability``, a member of the top half of the last ranking other than the
        donor and the clone (one that has reported a genome and did not diverge); else None."""
        if self._rng.random() >= self.crossover_probability:
            return None
        top = self._ranked[: max(2, len(self._ranked) // 2)]
        partners = [t for t in top if t not in (trial, donor) and t.trial_id in self.scores and not self._diverged(t)
                    and (self._trial_state[t].last_result or {}).get("genome")]
        return self._rng.choice(partners) if partners else None

    def _exploit(self, tune_controller, trial: Trial, trial_to_clone: Trial):
        super()._exploit(tune_controller, trial, trial_to_clone)
        self.reports_since_clone[trial.trial_id] = 0
        donor = self._trial_state[trial_to_clone].last_result or {}
        self.genealogy.append({
            "time": time.time(),
            "round": donor.get("training_iteration"),
            "child": trial.trial_id,
            "donor": trial_to_clone.trial_id,
            "donor_genome_hash": donor.get("genome_hash"),
            # A crossover's instruction carries the other parent's genome: the child's rows hold what it became.
            "mutation": {k: v for k, v in trial.config["mutation"].items() if k != "other_genome"},
            "lr": trial.config.get("lr"),
            "weight_decay": trial.config.get("weight_decay"),
            "drop_path": trial.config.get("drop_path"),
            "pressure": trial.config.get("pressure"),
        })
        self._write_state()

    # -- persistence --------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"genealogy": self.genealogy, "archive": self.archive.to_dict(), "scores": self.scores,
                "reports_since_clone": self.reports_since_clone}

    def _write_state(self, now: bool = False) -> None:
        """After every change: write the state, or leave it to the next ``commit_state``."""
        self._uncommitted = True
        if now or not self.commit_after_rows:
            self.commit_state()

    def commit_state(self) -> None:
        """Write the state file if it changed. Tune hands a result to the scheduler before its callbacks
        and snapshots the experiment after both; a callback that records the row and then calls this
        leaves no moment at which the state is ahead of the rows or behind the snapshot."""
        if self.state_path is None or not self._uncommitted:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.state_path, json.dumps(self.state(), default=_json_default))
        self._uncommitted = False

    def __setstate__(self, state: dict) -> None:
        # Tuner.restore unpickles the scheduler as it was when the experiment started; the state
        # file written since then is the truth.
        self.__dict__.update(state)
        self.__dict__.setdefault("commit_after_rows", False)  # pickled before these existed
        self._uncommitted = False
        if self.state_path and self.state_path.exists():
            self._load_state()

    def _load_state(self) -> None:
        data = json.loads(self.state_path.read_text())
        self.genealogy = data["genealogy"]
        self.archive = ParetoArchive.from_dict(data["archive"])
        self.scores = data["scores"]
        self.reports_since_clone = data.get("reports_since_clone", {})


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
