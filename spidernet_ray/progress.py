"""What the driver does with every reported row: append it to ``rows.jsonl``, keep good copies of
Ray's snapshots, and print one progress line per round; and the progress within a round.

Tune hears from a member only when its round ends (minutes on a real dataset). Within the round each
member writes a tiny ``progress/<trial id>.json`` in the run directory (``MemberProgress``: round,
epoch, step, mean loss, a few times a second at most); the driver's callback reads them between its
steps and prints one line per member and epoch (and at most every ``STEP_LINE_S`` within a long epoch),
with an estimate of the time left in the round and in the run. A file, not an actor: it costs the
member nothing when nobody reads it and survives either side restarting; on a cluster the run
directory must be shared storage for the lines to appear (the search runs the same without them)."""

from __future__ import annotations

import contextlib
import json
import sys
import time

from spidernet_ray.config import SearchConfig
from spidernet_ray.pareto import nondominated_sort, objective_matrix, parse_objectives
from spidernet_ray.results import chance_warning, num_classes_of, read_reported_rows
from spidernet_ray.rundir import ROWS_FILE, atomic_write_text, keep_good_state_copies

PROGRESS_DIR = "progress"
WRITE_EVERY_S = 0.5  # a member writes its progress file at most this often (and at each epoch's end)
STEP_LINE_S = 15.0  # within an epoch, the driver prints a member's line at most this often


class MemberProgress:
    """Written by a member during a round: where it is, for the driver's progress lines."""

    def __init__(self, experiment_path, trial_id: str, round_: int, epochs: int, steps: int):
        """``experiment_path`` None: nobody reads the progress, nothing is written."""
        self.path = experiment_path / PROGRESS_DIR / f"{trial_id}.json" if experiment_path is not None else None
        self.state = {"trial_id": trial_id, "round": round_, "epochs": epochs, "steps": steps,
                      "started": time.time(), "epoch": 0, "step": 0, "loss": None}
        self.written = 0.0

    def update(self, epoch: int, step: int, loss: float) -> None:
        now = time.time()
        if self.path is None or (step < self.state["steps"] and now - self.written < WRITE_EVERY_S):
            return
        self.state.update(epoch=epoch + 1, step=step, loss=loss, time=now)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(self.state))
            self.written = now
        except OSError:  # a display aid: never a reason for a member to fail
            pass


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class StepProgress:
    """Reads the members' progress files and prints a line per member when it starts an epoch, ends one,
    or (within a long epoch) every STEP_LINE_S."""

    def __init__(self, config: SearchConfig, rounds_done=lambda: 0, start: float | None = None):
        self.config, self.rounds_done = config, rounds_done
        self.directory = config.experiment_path / PROGRESS_DIR
        self.shown: dict[str, tuple] = {}  # trial id -> (round, epoch, step, time printed)
        self.start = time.time() if start is None else start

    def poll(self) -> list[str]:
        lines = []
        now = time.time()
        try:
            files = sorted(self.directory.glob("*.json"))
        except OSError:
            return lines
        for path in files:
            try:
                p = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # being replaced
            last = self.shown.get(p["trial_id"])
            key = (p["round"], p["epoch"], p["step"])
            if last is not None and last[:3] == key:
                continue
            epoch_edge = last is None or last[:2] != key[:2] or p["step"] == p["steps"]
            if not epoch_edge and now - last[3] < STEP_LINE_S:
                continue
            self.shown[p["trial_id"]] = (*key, now)
            lines.append(self._line(p, now))
        return lines

    def _line(self, p: dict, now: float) -> str:
        done = ((p["epoch"] - 1) + p["step"] / max(p["steps"], 1)) / max(p["epochs"], 1)
        elapsed = p.get("time", now) - p["started"]
        round_left = elapsed * (1 - done) / done if done > 0 else float("nan")
        line = (f"  {p['trial_id']} round {p['round']}/{self.config.rounds} epoch {p['epoch']}/{p['epochs']} "
                f"step {p['step']}/{p['steps']}")
        if p.get("loss") is not None:
            line += f" loss {p['loss']:.3f}"
        if done > 0:
            # Once a round has ended, the driver's own average round is the better measure: members may
            # take turns on the CPUs, so one member's pace understates a round.
            finished = self.rounds_done()
            per_round = (now - self.start) / finished if finished else elapsed / done
            run_left = round_left + per_round * max(0, self.config.rounds - p["round"])
            line += f" | ~{_duration(round_left)} left in the round, ~{_duration(run_left)} in the run"
        return line


class RoundProgress:
    """One line per round: population, front size, best accuracy and its latency/memory."""

    def __init__(self, config: SearchConfig):
        self.config = config
        self.objectives = parse_objectives(config.objectives)
        self.rows: list[dict] = []
        self.latest: dict[str, int] = {}
        self.printed = 0
        self.start = time.time()
        self.num_classes: int | None = None

    def add(self, trial_id: str, result: dict, quiet: bool = False) -> None:
        keep = ("val_accuracy", "latency_ms", "peak_memory_mb", "params", "feasible", "mutation")
        self.rows.append({k: result.get(k) for k in keep})
        if self.num_classes is None:
            self.num_classes = num_classes_of([result])
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
        accuracies = [r["val_accuracy"] for r in self.rows if isinstance(r["val_accuracy"], float)]
        if chance_warning(max(accuracies, default=None), self.num_classes):
            line += f" | near chance: {self.num_classes} classes, more steps needed"
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

        def on_step_end(self, iteration, trials, **info):
            if getattr(self, "steps", None) is None:  # not pickled: a fresh reader per driver process
                self.steps = StepProgress(config, lambda: self.progress.printed, self.progress.start)
                self.polled = 0.0
            if time.time() - self.polled < 1.0:  # Tune steps many times a second
                return
            self.polled = time.time()
            for line in self.steps.poll():
                print(line, flush=True)

        def __getstate__(self):
            return {k: v for k, v in self.__dict__.items() if k not in ("steps", "polled")}

    return _SearchCallback()


# Ray prints this at the start of every fit; its path is a temporary session folder, while the run
# directory holds the same event files for good. run_search prints the right command instead.
RAY_HINTS = ("To visualize your results with TensorBoard",)


class _LineFilter:
    """A text stream that passes whole lines to ``stream`` except those starting with ``drop``."""

    def __init__(self, stream, drop: tuple[str, ...]):
        self.stream, self.drop, self.pending = stream, drop, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if not line.lstrip().startswith(self.drop):
                self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):  # isatty, encoding, fileno: the real stream's
        return getattr(self.stream, name)


@contextlib.contextmanager
def without_lines(drop: tuple[str, ...] = RAY_HINTS):
    """Drop printed lines that start with one of ``drop`` while the block runs (driver side only)."""
    original = sys.stdout
    sys.stdout = _LineFilter(original, drop)
    try:
        yield
    finally:
        if sys.stdout.pending:
            original.write(sys.stdout.pending)
        sys.stdout = original
