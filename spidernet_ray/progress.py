"""What the driver does with every reported row: append it to ``rows.jsonl``, keep good copies of
Ray's snapshots, and print one progress line per round."""

from __future__ import annotations

import json
import time

from spidernet_ray.config import SearchConfig
from spidernet_ray.pareto import nondominated_sort, objective_matrix, parse_objectives
from spidernet_ray.results import read_reported_rows
from spidernet_ray.rundir import ROWS_FILE, keep_good_state_copies


class RoundProgress:
    """One line per round: population, front size, best accuracy and its latency/memory."""

    def __init__(self, config: SearchConfig):
        self.config = config
        self.objectives = parse_objectives(config.objectives)
        self.rows: list[dict] = []
        self.latest: dict[str, int] = {}
        self.printed = 0
        self.start = time.time()

    def add(self, trial_id: str, result: dict, quiet: bool = False) -> None:
        keep = ("val_accuracy", "latency_ms", "peak_memory_mb", "params", "feasible", "mutation")
        self.rows.append({k: result.get(k) for k in keep})
        self.latest[trial_id] = result.get("training_iteration", 0)
        while len(self.latest) >= self.config.population and min(self.latest.values()) > self.printed:
            self.printed += 1
            if not quiet:
                self._print_round(self.printed)

    def resume(self, rows: list[dict]) -> None:
        """After --resume: take in the rows recorded before the stop as they came (the rounds printed
        then are not printed again) and say where the search stands. This object was pickled when the
        search started, so it knows nothing of them otherwise."""
        for row in rows:
            self.add(row.get("trial_id"), row, quiet=True)
        self.start = time.time()
        exploits = sum(1 for r in self.rows if r["mutation"])
        print(f"resumed after round {self.printed}/{self.config.rounds} ({len(self.rows)} rows and {exploits} "
              "exploits were recorded before the stop); seconds count from here", flush=True)

    def _print_round(self, round_: int) -> None:
        feasible = [r for r in self.rows if r["feasible"]]
        front = nondominated_sort(objective_matrix(feasible, self.objectives))[0] if feasible else []
        exploits = sum(1 for r in self.rows if r["mutation"])
        line = f"round {round_}/{self.config.rounds} | population {len(self.latest)} | front {len(front)}"
        if feasible:
            best = max(feasible, key=lambda r: r["val_accuracy"])
            line += (f" | best val acc {best['val_accuracy']:.2%} at {best['latency_ms']:.2f} ms, "
                     f"{best['peak_memory_mb']:.1f} MB, {best['params']:,} params")
        line += f" | exploits {exploits} | {time.time() - self.start:.0f}s"
        print(line, flush=True)  # sys.stdout looked up now: the callback is pickled with the experiment


def search_callback(config: SearchConfig, scheduler=None):
    """Records every reported row in ``rows.jsonl`` (appended, so a resumed search keeps the rows of
    the first run), then commits the scheduler's state, and prints the per-round progress line.

    Tune hands each result to the scheduler first and snapshots the experiment after the callbacks:
    committing the state after the row means a killed driver leaves no exploit or archive entry
    without its row, and no exploit in Ray's snapshot that the state lacks.
    """
    from ray import tune

    if hasattr(scheduler, "commit_state"):  # the Pareto scheduler; the baselines' keep no state file
        scheduler.commit_after_rows = True
    else:
        scheduler = None

    class _SearchCallback(tune.Callback):
        def __init__(self):
            self.progress = RoundProgress(config)
            self.rows_path = config.experiment_path / ROWS_FILE
            self.scheduler = scheduler  # pickled with the Tuner in one piece: the same object Tune restores
            self.state_copies: dict[str, tuple] = {}

        def setup(self, **info):
            # Once per driver process, so on --resume: rows recorded before mean the search resumes.
            if self.rows_path.exists():
                # A driver killed mid-write leaves half a line: end it, so resumed rows start on their own.
                if not self.rows_path.read_bytes().endswith(b"\n"):
                    with self.rows_path.open("a") as f:
                        f.write("\n")
                self.progress.resume(read_reported_rows(config.experiment_path))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            with self.rows_path.open("a") as f:
                f.write(json.dumps(result, default=str) + "\n")
            if self.scheduler is not None:
                self.scheduler.commit_state()
            self.progress.add(trial.trial_id, result)
            keep_good_state_copies(config.experiment_path, self.state_copies)

    return _SearchCallback()
