"""SpiderNetScheduler's decisions on a simulated population (real Ray Trial objects, no training)."""

import json
import types

import pytest
from ray import tune
from ray.tune.experiment import Trial

from spidernet_ray.scheduler import SpiderNetScheduler

CONTROLLER = types.SimpleNamespace(search_alg=None)  # on_trial_add only asks whether a searcher is set


def make_scheduler(tmp_path, **kwargs):
    return SpiderNetScheduler(
        hyperparam_mutations={"lr": tune.loguniform(1e-3, 1e-1)},
        state_path=tmp_path / "state.json",
        quantile_fraction=0.25,
        **kwargs,
    )


def report(scheduler, members: dict[str, dict]) -> dict[str, Trial]:
    trials = {}
    for name, metrics in members.items():
        trial = Trial("__fake", trial_id=name, config={"lr": 0.01, "mutation": None}, stub=True)
        scheduler.on_trial_add(CONTROLLER, trial)
        result = {"training_iteration": 1, "genome_hash": f"hash-{name}", "diverged": False, **metrics}
        scheduler._save_trial_state(scheduler._trial_state[trial], 1, result, trial)
        trials[name] = trial
    return trials


def ids(trials):
    return [t.trial_id for t in trials]


def member(acc, latency, memory):
    return {"val_accuracy": acc, "latency_ms": latency, "peak_memory_mb": memory}


def test_a_member_dominated_by_everyone_is_cloned_over_and_an_unbeaten_one_is_a_donor(tmp_path):
    scheduler = make_scheduler(tmp_path)
    report(scheduler, {
        "best": member(0.99, 2.0, 10.0), "fast": member(0.90, 1.0, 12.0),
        "mid": member(0.95, 3.0, 11.0), "worst": member(0.80, 5.0, 20.0),
    })
    lower, upper = scheduler._quantiles()
    assert ids(lower) == ["worst"]
    assert ids(upper)[0] in {"best", "fast"}


def test_ranking_uses_crowding_distance_within_a_front(tmp_path):
    scheduler = make_scheduler(tmp_path, objectives=("max:val_accuracy", "min:latency_ms"))
    trials = report(scheduler, {
        "a": member(0.90, 1.0, 0), "b": member(0.91, 1.1, 0), "c": member(0.92, 1.2, 0), "d": member(0.99, 5.0, 0),
    })
    ranked = ids(scheduler.rank(list(trials.values())))
    assert set(ranked[:2]) == {"a", "d"}  # the extremes of the front have infinite crowding distance


def test_a_budget_violator_ranks_below_every_feasible_member_and_is_never_a_donor(tmp_path):
    scheduler = make_scheduler(tmp_path, budgets={"latency_ms": 4.0})
    report(scheduler, {
        "too_slow": member(0.999, 9.0, 5.0), "ok1": member(0.90, 1.0, 12.0),
        "ok2": member(0.91, 2.0, 12.0), "ok3": member(0.80, 3.0, 20.0),
    })
    lower, upper = scheduler._quantiles()
    assert ids(lower) == ["too_slow"]
    assert "too_slow" not in ids(upper)
    assert "hash-too_slow" not in {e["key"] for e in scheduler.archive.to_dict()["entries"]}


def test_a_diverged_member_is_never_a_donor(tmp_path):
    scheduler = make_scheduler(tmp_path)
    trials = report(scheduler, {"a": member(0.5, 1.0, 1.0), "b": member(0.6, 2.0, 2.0)})
    nan = Trial("__fake", trial_id="nan", config={"lr": 0.01, "mutation": None}, stub=True)
    scheduler.on_trial_add(CONTROLLER, nan)
    result = {"training_iteration": 1, "diverged": True, **member(0.0, 0.5, 0.5)}
    scheduler._save_trial_state(scheduler._trial_state[nan], 1, result, nan)
    lower, upper = scheduler._quantiles()
    assert ids(lower) == ["nan"] and "nan" not in ids(upper)
    assert trials


def test_a_clone_config_carries_a_split_instruction_naming_its_donor(tmp_path):
    scheduler = make_scheduler(tmp_path)
    trials = report(scheduler, {"donor": member(0.9, 1.0, 1.0), "child": member(0.5, 2.0, 2.0)})
    config, _ = scheduler._get_new_config(trials["child"], trials["donor"])
    assert config["mutation"]["kind"] == "split" and config["mutation"]["donor"] == "donor"
    assert config["mutation"]["id"]
    other, _ = scheduler._get_new_config(trials["child"], trials["donor"])
    assert other["mutation"]["id"] != config["mutation"]["id"]


def test_state_is_written_on_every_change_and_read_back_by_a_new_scheduler(tmp_path):
    scheduler = make_scheduler(tmp_path)
    report(scheduler, {"a": member(0.9, 1.0, 1.0), "b": member(0.8, 2.0, 2.0)})
    scheduler.genealogy.append({"child": "b", "donor": "a", "mutation": {"id": "x"}})
    scheduler._write_state()
    restored = make_scheduler(tmp_path)
    assert restored.genealogy == scheduler.genealogy
    assert restored.scores == json.loads(json.dumps(scheduler.scores))
    assert restored.archive.to_dict() == scheduler.archive.to_dict()
    assert [e["key"] for e in restored.archive.front()] == ["hash-a"]  # b is dominated by a


def test_an_unpickled_scheduler_reloads_its_state_file(tmp_path):
    """Tuner.restore unpickles the scheduler as it was at the start; the state file must win."""
    import pickle

    scheduler = make_scheduler(tmp_path)
    blob = pickle.dumps(scheduler)
    report(scheduler, {"a": member(0.9, 1.0, 1.0), "b": member(0.8, 2.0, 2.0)})
    restored = pickle.loads(blob)
    assert set(restored.scores) == {"a", "b"}


def test_with_commit_after_rows_the_state_is_written_only_on_commit(tmp_path):
    """The launcher's callback records each row and then commits: the state file is never ahead of the rows."""
    scheduler = make_scheduler(tmp_path)
    scheduler.commit_after_rows = True
    report(scheduler, {"a": member(0.9, 1.0, 1.0)})
    assert not (tmp_path / "state.json").exists()
    scheduler.commit_state()
    assert set(json.loads((tmp_path / "state.json").read_text())["scores"]) == {"a"}


def test_a_restored_member_s_exploits_after_the_instruction_it_carries_are_marked_undone(tmp_path):
    """The driver stopped after exploits 2 and 3 were recorded but before Ray's snapshot had them: the
    member Tune restores carries instruction 1 and goes on from there."""
    scheduler = make_scheduler(tmp_path)
    scheduler.genealogy = [{"child": "b", "donor": "a", "mutation": {"id": i}} for i in ("1", "2", "3")]
    scheduler.genealogy.insert(1, {"child": "c", "donor": "a", "mutation": {"id": "c1"}})
    scheduler._write_state()
    restored = make_scheduler(tmp_path)
    restored.on_trial_add(CONTROLLER, Trial("__fake", trial_id="b", config={"mutation": {"id": "1"}}, stub=True))
    restored.on_trial_add(CONTROLLER, Trial("__fake", trial_id="c", config={"mutation": {"id": "c1"}}, stub=True))
    state = json.loads((tmp_path / "state.json").read_text())
    assert [(e["mutation"]["id"], bool(e.get("undone"))) for e in state["genealogy"]] == [
        ("1", False), ("c1", False), ("2", True), ("3", True)]


@pytest.mark.parametrize("bad", [["max:val_accuracy", "fastest:latency_ms"], []])
def test_bad_objectives_are_refused(bad, tmp_path):
    with pytest.raises(ValueError):
        make_scheduler(tmp_path, objectives=bad)


def test_every_waiting_member_is_staged_in_turn_order(tmp_path):
    """PBT picks the waiting member with the least training time; once it is staged (PENDING), ours
    stages the next paused one too, so that Tune keeps pausing members' actors for reuse; but while an
    actor is free, the first in turn is chosen, since a member Tune stages takes a free actor at once."""
    scheduler = make_scheduler(tmp_path)
    trials = report(scheduler, {name: member(0.9, 1.0, 10.0) for name in "abcd"})
    for time_, name in enumerate("cabd"):
        scheduler._trial_state[trials[name]].last_train_time = time_
    for trial in trials.values():
        trial.set_status(Trial.PAUSED)
    trials["d"].set_status(Trial.RUNNING)
    cache = types.SimpleNamespace(num_cached_objects=0)
    controller = types.SimpleNamespace(get_trials=lambda: list(trials.values()), _actor_cache=cache)
    staged = []
    for _ in range(4):
        chosen = scheduler.choose_trial_to_run(controller)
        if chosen.status == Trial.PAUSED:
            chosen.set_status(Trial.PENDING)  # what Tune does with the member chosen: stage it
            staged.append(chosen.trial_id)
    assert staged == ["c", "a", "b"]  # the running member is never chosen
    assert scheduler.choose_trial_to_run(controller).trial_id == "c"  # all staged: the first in turn again
    trials["b"].set_status(Trial.PAUSED)
    assert scheduler.choose_trial_to_run(controller).trial_id == "b"  # c and a staged, no actor free: stage b
    cache.num_cached_objects = 1
    assert scheduler.choose_trial_to_run(controller).trial_id == "c"  # an actor is free: it goes to c, first in turn


def test_the_actor_cache_is_read_without_tune_s_restricted_access_warning(caplog):
    """Tune hands schedulers its controller wrapped in TrialRunnerWrapper, which logs a warning when a
    scheduler reads an attribute outside its whitelist; the cache is read from the controller inside."""
    from ray.tune.execution.tune_controller import TrialRunnerWrapper
    from ray.util.debug import reset_log_once

    from spidernet_ray.scheduler import _actor_free

    controller = types.SimpleNamespace(_actor_cache=types.SimpleNamespace(num_cached_objects=0))
    wrapper = TrialRunnerWrapper(controller, trial_executor=None)
    reset_log_once("restrict_accessing_tune_controller")
    with caplog.at_level("WARNING"):
        assert _actor_free(wrapper) is False
    assert "restricted" not in caplog.text
    with caplog.at_level("WARNING"):
        wrapper._actor_cache  # the access the wrapper warns about: the check above can see the warning
    assert "restricted" in caplog.text


class Controller:
    """What PBT asks of Tune's controller when a member reports: the trials, pausing a victim, and a
    save of a donor (answered at once with the checkpoint the member reported with its result)."""

    search_alg = None

    def __init__(self, trials):
        self.trials = trials

    def get_trials(self):
        return list(self.trials)

    def pause_trial(self, trial, should_checkpoint=True):
        trial.set_status(Trial.PAUSED)

    def _schedule_trial_save(self, trial, result=None):
        return trial.checkpoint


def report_round(scheduler, controller, trial, accuracy, tmp_path):
    """``trial`` reports a round of its own, with a checkpoint of its own (the real order: the checkpoint
    is registered with its result before the scheduler sees the result)."""
    from ray.train._internal.session import _TrainingResult

    trial.set_status(Trial.RUNNING)
    round_ = scheduler._trial_state[trial].last_train_time + 1
    path = tmp_path / f"{trial.trial_id}-round{round_}"
    path.mkdir(parents=True, exist_ok=True)
    result = {"training_iteration": round_, "val_accuracy": accuracy, "latency_ms": 1.0, "diverged": False,
              "genome_hash": f"hash-{trial.trial_id}-{round_}"}
    trial.run_metadata.checkpoint_manager.register_checkpoint(_TrainingResult(tune.Checkpoint(str(path)), result))
    scheduler.on_trial_result(controller, trial, result)


def population(scheduler, names, tmp_path):
    from ray.train._internal.storage import StorageContext

    trials = [Trial("__fake", trial_id=name, config={"lr": 0.01, "mutation": None}, stub=True,
                    storage=StorageContext(str(tmp_path / "storage"), "run", trial_dir_name=name)) for name in names]
    for trial in trials:
        scheduler.on_trial_add(Controller(trials), trial)
    return trials, Controller(trials)


@pytest.mark.parametrize("seed", range(8))
def test_a_clone_that_has_not_reported_since_is_no_donor_so_no_child_gets_its_donor_s_weights(seed, tmp_path):
    """B is cloned from A (B's checkpoint is now A's) and has not reported since; its old result still
    ranks in the top half. C, cloned next, must restore the checkpoint of the result its donor was
    ranked on: never A's weights under B's name."""
    scheduler = make_scheduler(tmp_path, objectives=("max:val_accuracy",), seed=seed, log_config=False)
    scheduler._quantile_fraction = 0.5
    (a, b, d, c), controller = population(scheduler, "abdc", tmp_path)
    own_checkpoints = {}
    for trial, accuracy in ((a, 0.9), (b, 0.5), (d, 0.3), (c, 0.1)):
        report_round(scheduler, controller, trial, accuracy, tmp_path / trial.trial_id)
        own_checkpoints.setdefault(trial.trial_id, trial.checkpoint.path)
    child = {entry["child"]: entry for entry in scheduler.genealogy}
    assert child["b"]["donor"] == "a"  # the setup: b was cloned over and has not reported since
    assert c.config["mutation"]["donor"] == child["c"]["donor"] == "a"
    assert c.checkpoint.path == own_checkpoints["a"]


def test_a_fresh_clone_is_protected_for_a_round_then_may_be_culled(tmp_path):
    scheduler = make_scheduler(tmp_path, objectives=("max:val_accuracy",), seed=0, log_config=False)
    (a, b), controller = population(scheduler, "ab", tmp_path)
    report_round(scheduler, controller, a, 0.9, tmp_path / "a1")
    report_round(scheduler, controller, b, 0.5, tmp_path / "b1")
    assert [e["child"] for e in scheduler.genealogy] == ["b"]
    assert scheduler._quantiles() == ([], [])  # b has not reported since: it is not ranked at all
    report_round(scheduler, controller, b, 0.2, tmp_path / "b2")  # worst, but its first round as a clone
    assert [e["child"] for e in scheduler.genealogy] == ["b"]
    report_round(scheduler, controller, b, 0.2, tmp_path / "b3")  # a second round: it may be culled now
    assert [e["child"] for e in scheduler.genealogy] == ["b", "b"]


def test_ties_are_broken_by_a_seeded_draw_not_by_trial_order(tmp_path):
    """Four identical members: which one is the donor depends on the seed, and the same seed repeats it."""
    def donor(seed):
        scheduler = make_scheduler(tmp_path, seed=seed)
        report(scheduler, {name: member(0.9, 1.0, 10.0) for name in "abcd"})
        return ids(scheduler._quantiles()[1])[0]

    donors = [donor(seed) for seed in range(12)]
    assert len(set(donors)) > 1
    assert donors == [donor(seed) for seed in range(12)]


def test_the_clone_s_draws_come_from_the_scheduler_s_seed_and_leave_the_global_stream_alone(tmp_path):
    import random

    runs = iter(range(100))

    def clone_lr(seed):
        run = tmp_path / str(next(runs))  # a run directory of its own: no state file to read back
        scheduler = make_scheduler(run, seed=seed, log_config=False)
        (a, b), controller = population(scheduler, "ab", run)
        report_round(scheduler, controller, a, 0.9, run)
        random.seed(1234)
        report_round(scheduler, controller, b, 0.5, run)
        assert random.random() == random.Random(1234).random()
        return b.config["lr"]

    assert clone_lr(3) == clone_lr(3)
    assert len({clone_lr(seed) for seed in range(6)}) > 1


def test_the_search_perturbs_lr_and_weight_decay_narrowly_and_pressure_wider_and_not_drop_path(tmp_path):
    from spidernet_ray.config import SearchConfig
    from spidernet_ray.strategies import spidernet_scheduler

    config = SearchConfig(storage_path=str(tmp_path), name="run", lr=0.1, weight_decay=1e-4, pressure=1e-3)
    mutations = spidernet_scheduler(config, tmp_path)._hyperparam_mutations
    assert set(mutations) == {"lr", "weight_decay", "pressure"}
    assert (mutations["lr"].lower, mutations["lr"].upper) == pytest.approx((0.08, 0.125))
    assert (mutations["pressure"].lower, mutations["pressure"].upper) == pytest.approx((5e-4, 2e-3))
    off = SearchConfig(storage_path=str(tmp_path), name="run", pressure=0.0)
    assert "pressure" not in spidernet_scheduler(off, tmp_path)._hyperparam_mutations
