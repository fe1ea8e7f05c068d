"""What a person watching a search sees while it runs: live bars on a terminal, one plain line per event
elsewhere, an honest time left, and Ray's chatter kept to the verbose level asked for."""

import dataclasses
import io
import logging
import os
import sys
import time

import pytest

from spidernet_ray.config import SearchConfig
from spidernet_ray.progress import (LiveBars, MemberProgress, PlainLines, StepProgress, _LineFilter, dropped_lines,
                                    member_display, search_output)

USDT = ("\x1b[36m(SpiderNetTrainable pid=5499)\x1b[0m USDT:2026-12-07 22:03:12 5499:5499 "
        "SyncActivityProfilerHandler.cpp:52] profiler_start")
CHECKPOINT = "(SpiderNetTrainable pid=5499, ip=10.0.0.2) Checkpoint successfully created at: Checkpoint(...)"
WARNING = "\x1b[36m(SpiderNetTrainable pid=5499)\x1b[0m UserWarning: the learning rate is very high"


class Terminal(io.StringIO):
    """What rich takes for a terminal: a text stream that says it is a TTY."""

    def isatty(self):
        return True


def one_member_at_epoch_end(tmp_path, rounds=3):
    config = SearchConfig(storage_path=str(tmp_path), name="run", rounds=rounds)
    MemberProgress(config.experiment_path, "t_0", round_=1, epochs=2, steps=10).update(epoch=0, step=10, loss=1.5)
    return StepProgress(config)


def test_off_a_terminal_a_members_epoch_is_one_plain_line(tmp_path, capsys):
    steps = one_member_at_epoch_end(tmp_path)
    with search_output(verbose=0):  # pytest's captured stdout is no terminal
        assert type(member_display()) is PlainLines
        member_display().show(steps)
        member_display().show(steps)  # nothing new: nothing printed
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("  t_0 round 1/3 epoch 1/2 step 10/10 loss 1.500 | ~")
    assert "\x1b" not in line  # no escape codes in a log


def test_on_a_terminal_each_member_gets_a_bar_and_printed_lines_land_above_it(tmp_path, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    steps = one_member_at_epoch_end(tmp_path)
    with search_output(verbose=0):
        assert isinstance(member_display(), LiveBars)
        member_display().show(steps)
        print("round 1/3 | population 1")
    assert sys.stdout is terminal  # given back
    screen = terminal.getvalue()
    assert "t_0 round 1/3 epoch 1/2" in screen and "10/10" in screen and "loss 1.500" in screen
    assert "round 1/3 | population 1" in screen
    assert "step 10/10" not in screen  # verbose 0: the bar, not the plain line too
    assert screen.endswith("\x1b[?25h")  # the cursor shown again


def test_a_log_record_lands_above_the_bars_not_inside_them(tmp_path, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    logger = logging.getLogger("test_progress.ray_like")  # Ray's handler too holds the terminal from before
    handler = logging.StreamHandler(terminal)
    monkeypatch.setattr(logger, "handlers", [handler])
    monkeypatch.setattr(logger, "propagate", False)
    with search_output(verbose=0):
        member_display().show(one_member_at_epoch_end(tmp_path))
        logger.warning("Stop signal received, ending Ray Tune run")
    assert "\x1b[2KStop signal received, ending Ray Tune run\n" in terminal.getvalue()  # the bars' line erased first
    assert handler.stream is terminal


def test_the_bars_stop_and_the_terminal_is_given_back_when_the_search_fails(tmp_path, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    stderr = sys.stderr
    with pytest.raises(RuntimeError, match="a member broke"), search_output(verbose=0):
        member_display().show(one_member_at_epoch_end(tmp_path))
        raise RuntimeError("a member broke")
    assert sys.stdout is terminal and sys.stderr is stderr
    assert terminal.getvalue().endswith("\x1b[?25h")
    assert type(member_display()) is PlainLines  # outside a search: plain lines


def test_a_failing_live_display_falls_back_to_plain_lines_and_the_search_goes_on(tmp_path, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    steps = one_member_at_epoch_end(tmp_path)
    with search_output(verbose=0):
        display = member_display()

        def broken(*args, **kwargs):
            raise ValueError("no room")

        monkeypatch.setattr(display.bars, "add_task", broken)
        display.show(steps)  # does not raise
        print("round 1/3 | population 1")
    assert sys.stdout is terminal
    screen = terminal.getvalue()
    assert "progress display stopped (ValueError: no room); plain lines from here" in screen
    assert "  t_0 round 1/3 epoch 1/2 step 10/10 loss 1.500" in screen
    assert screen.endswith("round 1/3 | population 1\n")


def test_the_runs_time_left_is_at_most_what_the_time_budget_leaves(tmp_path):
    now = time.time()
    # Half an epoch took 10 s: 10 s left in the round, 9 more rounds of 20 s; the run started 50 s ago.
    member = {"trial_id": "t_0", "round": 1, "epochs": 1, "steps": 10, "epoch": 1, "step": 5, "loss": 2.0,
              "started": now - 10, "time": now}
    config = SearchConfig(storage_path=str(tmp_path), name="run", rounds=10)
    unbounded = StepProgress(config, start=now - 50)
    budgeted = StepProgress(dataclasses.replace(config, time_budget_s=60), start=now - 50)
    assert unbounded.time_left(member, now) == pytest.approx((10, 190))
    assert budgeted.time_left(member, now) == pytest.approx((10, 10))
    assert budgeted.line(member, now).endswith("~10s left in the round, ~10s in the run")


def test_below_verbose_2_the_profilers_and_checkpoints_worker_lines_are_dropped_and_warnings_pass():
    out = io.StringIO()
    stream = _LineFilter(out, dropped_lines(verbose=1))
    stream.write("\n".join([USDT, CHECKPOINT, WARNING, "round 1/2 | population 2"]) + "\n")
    assert out.getvalue().splitlines() == [WARNING, "round 1/2 | population 2"]


def test_at_verbose_2_the_workers_lines_pass_whole():
    out = io.StringIO()
    _LineFilter(out, dropped_lines(verbose=2)).write(f"{USDT}\n{CHECKPOINT}\n")
    assert out.getvalue().splitlines() == [USDT, CHECKPOINT]


def test_rays_own_table_first_shows_at_verbose_2():
    from spidernet_ray.tuner import ray_verbosity

    assert [ray_verbosity(v) for v in range(5)] == [0, 0, 1, 2, 2]


def test_at_verbose_0_ray_prints_no_experiment_box(ray_local, tmp_path, capfd, monkeypatch):
    from ray import tune

    from spidernet_ray.tuner import ray_verbosity, rays_console

    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    tuner = tune.Tuner(lambda config: {"score": 1.0},
                       run_config=tune.RunConfig(name="quiet", storage_path=str(tmp_path),
                                                 verbose=ray_verbosity(0)))
    with rays_console(ray_verbosity(0)):
        assert not tuner.fit().errors
    out = capfd.readouterr().out
    assert "Configuration for experiment" not in out and "View detailed results here" not in out
    assert "RAY_AIR_NEW_OUTPUT" not in os.environ  # set for the fit only
