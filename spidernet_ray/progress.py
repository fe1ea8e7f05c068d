"""What the driver does with every reported row: append it to ``rows.jsonl``, keep good copies of
Ray's snapshots, and print one progress line per round; and the progress within a round.

Tune hears from a member only when its round ends (minutes on a real dataset). Within the round each
member writes a tiny ``progress/<trial id>.json`` in the run directory (``MemberProgress``: round,
epoch, step, mean loss, a few times a second at most); the driver's callback reads them between its
steps (``StepProgress``) and shows them, with an estimate of the time left in the round and in the run:
as a live bar per member on a terminal (``LiveBars``, rich), else as one line per member and epoch (and
at most every ``STEP_LINE_S`` within a long epoch) for logs, CI and pipes (``PlainLines``). A file, not an
actor: it costs the member nothing when nobody reads it and survives either side restarting; on a
cluster the run directory must be shared storage for the progress to appear (the search runs the same
without it). ``search_output`` opens the display for a fit and drops Ray's lines that tell a user
nothing at the verbose level asked for."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
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
    """Reads the members' progress files: their current state for a live display (``read``), and a line
    per member when it starts an epoch, ends one, or (within a long epoch) every STEP_LINE_S (``poll``)."""

    def __init__(self, config: SearchConfig, rounds_done=lambda: 0, start: float | None = None):
        self.config, self.rounds_done = config, rounds_done
        self.directory = config.experiment_path / PROGRESS_DIR
        self.shown: dict[str, tuple] = {}  # trial id -> (round, epoch, step, time printed)
        self.start = time.time() if start is None else start

    def read(self) -> list[dict]:
        """Every member's last written state, in trial id order."""
        try:
            files = sorted(self.directory.glob("*.json"))
        except OSError:
            return []
        states = []
        for path in files:
            try:
                states.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # being replaced
        return states

    def poll(self) -> list[str]:
        lines = []
        now = time.time()
        for p in self.read():
            last = self.shown.get(p["trial_id"])
            key = (p["round"], p["epoch"], p["step"])
            if last is not None and last[:3] == key:
                continue
            epoch_edge = last is None or last[:2] != key[:2] or p["step"] == p["steps"]
            if not epoch_edge and now - last[3] < STEP_LINE_S:
                continue
            self.shown[p["trial_id"]] = (*key, now)
            lines.append(self.line(p, now))
        return lines

    def time_left(self, p: dict, now: float) -> tuple[float, float] | None:
        """Seconds left in ``p``'s round and in the run; None before the member's first step.
        A time budget ends the run when it is spent, whatever the rounds left."""
        done = ((p["epoch"] - 1) + p["step"] / max(p["steps"], 1)) / max(p["epochs"], 1)
        if done <= 0:
            return None
        elapsed = p.get("time", now) - p["started"]
        round_left = elapsed * (1 - done) / done
        # Once a round has ended, the driver's own average round is the better measure: members may
        # take turns on the CPUs, so one member's pace understates a round.
        finished = self.rounds_done()
        per_round = (now - self.start) / finished if finished else elapsed / done
        run_left = round_left + per_round * max(0, self.config.rounds - p["round"])
        if self.config.time_budget_s is not None:
            run_left = max(0.0, min(run_left, self.config.time_budget_s - (now - self.start)))
        return min(round_left, run_left), run_left

    def line(self, p: dict, now: float) -> str:
        line = (f"  {p['trial_id']} round {p['round']}/{self.config.rounds} epoch {p['epoch']}/{p['epochs']} "
                f"step {p['step']}/{p['steps']}")
        if p.get("loss") is not None:
            line += f" loss {p['loss']:.3f}"
        left = self.time_left(p, now)
        if left is not None:
            line += f" | ~{_duration(left[0])} left in the round, ~{_duration(left[1])} in the run"
        return line


class PlainLines:
    """Progress for logs, CI and pipes: one printed line per member event (``StepProgress.poll``)."""

    def show(self, steps: StepProgress) -> None:
        for line in steps.poll():
            print(line, flush=True)  # sys.stdout looked up now: a filter or rich's redirect may sit there

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


class LiveBars(PlainLines):
    """Progress on a terminal: a rich bar per member (round, epoch, step/steps, loss, time left in the
    round and the run), redrawn in place below the printed lines (round lines, with ``echo`` the member
    lines of PlainLines too). Starting it sends sys.stdout/stderr through rich, so anything printed
    meanwhile lands above the bars; leaving it (errors and Ctrl-C included) puts them back.

    A display aid: if rich fails while the search runs, the bars stop and plain lines carry on."""

    def __init__(self, stream, echo: bool = False):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.echo, self.tasks, self.failed = echo, {}, False
        self.bars = Progress(TextColumn("{task.description}", markup=False), BarColumn(bar_width=20),
                             MofNCompleteColumn(), TextColumn("{task.fields[loss]}", markup=False),
                             TextColumn("{task.fields[left]}", markup=False),
                             console=Console(file=stream), refresh_per_second=4)

    def show(self, steps: StepProgress) -> None:
        if self.failed:
            return super().show(steps)
        try:
            now = time.time()
            for p in steps.read():
                left = steps.time_left(p, now)
                fields = dict(
                    description=f"{p['trial_id']} round {p['round']}/{steps.config.rounds} "
                                f"epoch {p['epoch']}/{p['epochs']}",
                    completed=p["step"], total=max(p["steps"], 1),
                    loss="" if p.get("loss") is None else f"loss {p['loss']:.3f}",
                    left="" if left is None else f"~{_duration(left[0])} round, ~{_duration(left[1])} run")
                if p["trial_id"] not in self.tasks:
                    self.tasks[p["trial_id"]] = self.bars.add_task(**fields)
                else:
                    self.bars.update(self.tasks[p["trial_id"]], **fields)
        except Exception as exc:  # a display aid: never a reason for the search to fail
            self._fail(exc)
            return super().show(steps)
        if self.echo:
            super().show(steps)

    def _fail(self, exc: Exception) -> None:
        self.failed = True
        streams = sys.stdout, sys.stderr  # stopping puts back rich's own; the line filters above stay
        self._stop()
        sys.stdout, sys.stderr = streams
        print(f"progress display stopped ({type(exc).__name__}: {exc}); plain lines from here", flush=True)

    def _stop(self) -> None:
        with contextlib.suppress(Exception):
            self.bars.stop()
        for handler, stream in self.log_streams:
            handler.setStream(stream)
        self.log_streams = []

    def __enter__(self):
        self.streams, self.log_streams = (sys.stdout, sys.stderr), []
        try:
            self.bars.start()
            # Log handlers made before (Ray's among them) hold the terminal's stream itself: send their
            # lines through rich's redirect too, or they land inside the bars.
            for handler in _stream_handlers():
                if handler.stream in self.streams:
                    self.log_streams.append((handler, handler.setStream(sys.stderr)))
        except Exception as exc:  # a terminal rich cannot drive: plain lines
            self._fail(exc)
        return self

    def __exit__(self, *exc) -> None:
        if not self.failed:
            self._stop()
        sys.stdout, sys.stderr = self.streams


def _stream_handlers() -> list[logging.StreamHandler]:
    """Every handler of every logger that writes to a stream (files left out)."""
    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    handlers = {id(h): h for logger in loggers for h in logger.handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)}
    return list(handlers.values())


_DISPLAY: contextvars.ContextVar[PlainLines | None] = contextvars.ContextVar("spidernet_display", default=None)


def member_display() -> PlainLines:
    """The display that ``search_output`` opened; plain lines when the search runs without it."""
    return _DISPLAY.get() or PlainLines()


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
            member_display().show(self.steps)

        def on_experiment_end(self, trials, **info):
            if getattr(self, "steps", None) is not None:  # the members' last steps, written since the last poll
                member_display().show(self.steps)

        def __getstate__(self):
            return {k: v for k, v in self.__dict__.items() if k not in ("steps", "polled")}

    return _SearchCallback()


# Ray prints this at the start of every fit; its path is a temporary session folder, while the run
# directory holds the same event files for good. run_search prints the right command instead.
RAY_HINTS = ("To visualize your results with TensorBoard",)
# What the members' processes print that tells a user nothing, forwarded by Ray below --verbose 2: the
# CPU memory profiler's trace markers, and Ray's info on every checkpoint written and restored (a
# member's round; a clone taking its donor's weights, which the round lines count as exploits).
WORKER_NOISE = ("USDT:", "Checkpoint successfully created at:", "Restored on ")

# Ray's prefix on a line a worker printed, "(SpiderNetTrainable pid=123, ip=...) ", in colour or not.
_WORKER_PREFIX = re.compile(r"^\s*(?:\x1b\[[0-9;]*m)*\([^()]*pid=[^()]*\)(?:\x1b\[[0-9;]*m)*\s*")


def dropped_lines(verbose: int) -> tuple[str, ...]:
    """The starts of the lines a search at ``verbose`` does not print (see search_output)."""
    return RAY_HINTS + (WORKER_NOISE if verbose < 2 else ())


@contextlib.contextmanager
def native_output_dropped():
    """Drop what native code writes to this process's stdout and stderr while the block runs: torch's
    profiler (kineto, in the memory measurement) prints a ``USDT: ... profiler_start`` and
    ``profiler_stop`` line at each use, which Python's streams never see, so no line filter catches them."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


class _LineFilter:
    """A text stream that passes whole lines to ``stream`` except those starting with ``drop``, where a
    worker's line is judged without Ray's "(name pid=...)" prefix."""

    def __init__(self, stream, drop: tuple[str, ...]):
        self.stream, self.drop, self.pending = stream, drop, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if not _WORKER_PREFIX.sub("", line).lstrip().startswith(self.drop):
                self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):  # isatty, encoding, fileno: the real stream's
        return getattr(self.stream, name)


@contextlib.contextmanager
def without_lines(drop: tuple[str, ...] = RAY_HINTS):
    """Drop lines printed to stdout or stderr that start with one of ``drop`` while the block runs
    (driver side only: Ray prints what the workers print through these streams)."""
    originals = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (_LineFilter(stream, drop) for stream in originals)
    try:
        yield
    finally:
        for filtered, original in zip((sys.stdout, sys.stderr), originals):
            if isinstance(filtered, _LineFilter) and filtered.pending:
                original.write(filtered.pending)
        sys.stdout, sys.stderr = originals


def live_display_wanted(stream) -> bool:
    """Bars on a terminal; plain lines to a file, a pipe, CI's log, pytest's capture, a notebook."""
    try:
        from rich.console import Console

        console = Console(file=stream)
        return console.is_terminal and not console.is_dumb_terminal
    except Exception:  # rich missing or unsure of the stream: plain lines
        return False


@contextlib.contextmanager
def search_output(verbose: int = 0, live: bool | None = None):
    """What the driver prints while a search runs: the members' progress as live bars on a terminal
    (``live`` None: decided by sys.stdout), else plain lines; Ray's lines that tell a user nothing
    dropped for ``verbose`` (``dropped_lines``). From --verbose 1 the bars come with the plain member
    lines printed above them."""
    if live is None:
        live = live_display_wanted(sys.stdout)
    display = PlainLines()
    if live:
        try:
            display = LiveBars(sys.stdout, echo=verbose >= 1)
        except Exception:  # rich missing or broken: plain lines, the search the same
            pass
    # The bars take sys.stdout first, so that the filter sits above rich's redirect and sees every line.
    with display, without_lines(dropped_lines(verbose)):
        token = _DISPLAY.set(display)
        try:
            yield display
        finally:
            _DISPLAY.reset(token)
