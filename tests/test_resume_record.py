"""A search's record stays whole when its driver is killed and resumed, again and again.

One search (synthetic 8x8 data, two members, eight rounds) is run as a user runs it, in a subprocess
with the local Ray it starts, and SIGKILLed with that Ray three times, each followed by ``--resume``:
mid-round, right after an exploit was recorded, and while the result files are being written. Then
``python -m spidernet_ray.report RUN --check`` must find nothing wrong. Ray's snapshot period is left at
its default, so the kills land between snapshots, as they do for users.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from spidernet_ray import report
from spidernet_ray.results import mutation_id, read_state
from spidernet_ray.rundir import STATE_FILE

from test_faults import SMALL, rows_in_file_order, wait_for_exit

ROUNDS = 8  # a fresh clone is protected for a round: two members need rounds for exploits
pytestmark = [pytest.mark.ray, pytest.mark.subprocess]


def genealogy_ids(path: Path) -> list[str]:
    return [entry["mutation"]["id"] for entry in read_state(path)["genealogy"]]


def exploits_recorded(path: Path) -> int:
    try:
        return len(genealogy_ids(path))
    except json.JSONDecodeError:  # caught mid-write: before #23 Ray copied its stale copy over it in place
        return 0


def run_until(cmd, env, path: Path, stop, timeout: float = 300) -> tuple[str, bool]:
    """Run a driver; SIGKILL it and its Ray as soon as ``stop(path, output so far)`` holds. Returns the
    output and whether it was killed (else it ended on its own)."""
    log = Path(tempfile.mkstemp(prefix="driver-", suffix=".log")[1])
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline, killed = time.time() + timeout, False
    while proc.poll() is None and time.time() < deadline:
        if stop(path, log.read_text()):
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started die at once
            killed = True
            break
        time.sleep(0.02)
    else:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    if killed and (path / "rows.jsonl").exists():
        wait_for_exit({r["pid"] for r in rows_in_file_order(path)}, timeout=30)  # workers end with their raylet
    output = log.read_text()
    log.unlink()
    return output, killed


@pytest.fixture(scope="module")
def killed_three_times(tmp_path_factory):
    storage = tmp_path_factory.mktemp("record")
    path = storage / "record"
    ray_tmp = tempfile.mkdtemp(prefix="sn-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_TMPDIR": ray_tmp}
    cmd = [sys.executable, "-m", "spidernet_ray.launch", *SMALL, "--rounds", str(ROUNDS), "--num-cpus", "2",
           "--storage-path", str(storage), "--name", "record"]
    outputs, kills = [], {}
    try:
        # 1. Mid-round: round 1 is done, round 2 under way.
        output, killed = run_until(cmd, env, path, lambda p, out: "\nround 1/" in out)  # a round line
        outputs.append(output)
        kills["mid-round"] = killed and len(rows_in_file_order(path))
        # 2. Resumed, then killed as soon as the state holds an exploit made after the resume.
        before = len(genealogy_ids(path))
        output, killed = run_until([*cmd, "--resume"], env, path, lambda p, out: exploits_recorded(p) > before)
        outputs.append(output)
        kills["after an exploit"] = killed and len(rows_in_file_order(path))
        # 3. Resumed again, then killed once the first result file is written and before the last one.
        output, killed = run_until([*cmd, "--resume"], env, path, lambda p, out: (p / "trials.parquet").exists())
        outputs.append(output)
        kills["writing results"] = killed and not (path / "summary.md").exists()
        # 4. Resumed a third time: every member has finished, so only the result files are written.
        finished = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300, env=env)
        outputs.append(finished.stdout + finished.stderr)
        yield {"path": path, "outputs": outputs, "kills": kills, "returncode": finished.returncode}
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_each_kill_landed_where_it_was_aimed(killed_three_times):
    kills = killed_three_times["kills"]
    assert all(kills.values()), kills
    assert killed_three_times["returncode"] == 0, killed_three_times["outputs"][-1][-3000:]


def test_after_three_kills_and_resumes_the_check_finds_the_record_whole(killed_three_times, capsys):
    code = report.main([str(killed_three_times["path"]), "--check"])
    out = capsys.readouterr().out.strip()
    assert (code, out.splitlines()[0][:3]) == (0, "ok:"), out
    assert len(out.splitlines()) == 1


def test_exploits_made_after_a_resume_are_in_the_genealogy(killed_three_times):
    path = killed_three_times["path"]
    after_first_kill = rows_in_file_order(path)[killed_three_times["kills"]["mid-round"]:]
    made_after = {mutation_id(row) for row in after_first_kill} - {None}
    assert made_after, "no member was cloned after the first resume"
    assert made_after <= set(genealogy_ids(path))
    assert made_after <= set(pq.read_table(path / "genealogy.parquet").column("mutation_id").to_pylist())


def test_a_resumed_search_says_where_it_resumed_and_prints_no_round_twice(killed_three_times):
    outputs = killed_three_times["outputs"]
    for output in outputs[1:]:
        assert sum(line.startswith("resumed after round ") for line in output.splitlines()) == 1, output[-3000:]
    assert f"resumed after round {ROUNDS}/{ROUNDS}" in outputs[-1]
    printed = [line.split("|")[0].strip() for output in outputs for line in output.splitlines()
               if line.startswith("round ")]
    assert len(printed) == len(set(printed)), printed
    assert f"round {ROUNDS}/{ROUNDS}" in printed


def test_the_check_names_an_exploit_removed_from_the_genealogy_and_exits_1(killed_three_times, tmp_path, capsys):
    damaged = tmp_path / "damaged"
    shutil.copytree(killed_three_times["path"], damaged)
    state = json.loads((damaged / STATE_FILE).read_text())
    removed = next(entry for entry in state["genealogy"] if not entry.get("undone"))
    state["genealogy"].remove(removed)
    (damaged / STATE_FILE).write_text(json.dumps(state))
    assert report.main([str(damaged), "--check"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(f"mutation {removed['mutation']['id']}, which is not in the genealogy" in line for line in lines), lines
    assert any(line.startswith("genealogy.parquet does not hold") for line in lines), lines
