"""Faults a cluster has, each on a real Ray: a member whose loss turns NaN, a memory budget so tight
that every split is refused, a trial's worker killed mid-round, the driver killed mid-search leaving
Ray's snapshot and a checkpoint cut short, and a search spread over a two-node cluster with token auth.

Sizes are tiny (synthetic 8x8 data, 4 channels, one reduction, two members, a few rounds); each
fixture runs one search that several tests read."""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ray.tune import ExperimentAnalysis

from spidernet_ray import launch
from spidernet_ray.pareto import ParetoArchive
from spidernet_ray.rundir import STATE_FILE

pytestmark = pytest.mark.subprocess

SMALL = ["--dataset", "synthetic", "--channels", "4", "--reductions", "1", "--batch-size", "32",
         "--epochs-per-round", "1", "--population", "2", "--seed", "1"]
TIGHT_MEMORY_MB = 0.35  # just above the smallest network's floor (0.3 MB here): growth breaks it


def rows_in_file_order(path: Path) -> list[dict]:
    rows = []
    for line in (path / "rows.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line cut short by a killed driver
    return rows


def assert_every_round_is_covered(path: Path, members: int, rounds: int) -> None:
    """Every reported row is in trials.parquet, every member reports up to the last round, and a member
    skips rounds only when it is cloned from a donor further on (PBT gives a clone its donor's count)."""
    rows = rows_in_file_order(path)
    assert len(pq.read_table(path / "trials.parquet")) == len(rows)
    last: dict[str, int] = {}
    for row in rows:
        iteration, previous = row["training_iteration"], last.get(row["trial_id"], 0)
        assert iteration <= previous + 1 or row["parent_trial"], f"{row['trial_id']}: round {previous} to {iteration}"
        last[row["trial_id"]] = iteration
    assert len(last) == members and set(last.values()) == {rounds}


def rounds_lost(rows: list[dict], kill_index: int, trial_id: str) -> int:
    """Completed rounds of ``trial_id`` done again after the kill (the round in progress is always lost)."""
    before = [r["training_iteration"] for r in rows[:kill_index] if r["trial_id"] == trial_id]
    after = [r["training_iteration"] for r in rows[kill_index:] if r["trial_id"] == trial_id]
    return max(before, default=0) - (after[0] - 1)


# -- a NaN loss and a tight memory budget, in one search ----------------------------------------
@pytest.fixture(scope="module")
def faulty_search(ray_local, tmp_path_factory):
    storage = tmp_path_factory.mktemp("faulty")
    # NaN in round 3 of 5: every member has reported before and goes on after, so the diverged one has
    # someone to be cloned from.
    code = launch.main(SMALL + ["--rounds", "5", "--candidates-per-cell", "2", "--inject-nan-round", "3",
                                "--memory-budget-mb", str(TIGHT_MEMORY_MB),
                                "--storage-path", str(storage), "--name", "faulty"])
    return code, storage / "faulty"


def test_a_nan_loss_is_reported_as_diverged_with_a_reason(faulty_search):
    _, path = faulty_search
    rows = rows_in_file_order(path)
    poisoned = [r for r in rows if r["trial_id"].endswith("_00000") and r["training_iteration"] >= 3]
    assert poisoned and poisoned[0]["diverged"]
    assert "training loss became nan in round" in poisoned[0]["reason"]
    assert not poisoned[0]["feasible"] and poisoned[0]["val_accuracy"] == 0


def test_a_diverged_member_is_never_a_donor_and_is_cloned_over(faulty_search):
    _, path = faulty_search
    rows = rows_in_file_order(path)
    diverged = [r for r in rows if r["diverged"]]
    genealogy = json.loads((path / STATE_FILE).read_text())["genealogy"]
    assert diverged and genealogy
    assert all((g["donor"], g["round"]) not in {(r["trial_id"], r["training_iteration"]) for r in diverged}
               for g in genealogy)
    for row in diverged:  # cloned over after it diverged
        assert any(g["child"] == row["trial_id"] and g["time"] >= row["timestamp"] for g in genealogy), row["reason"]


def test_the_population_finishes_after_a_nan(faulty_search):
    code, path = faulty_search
    assert code == 0
    assert_every_round_is_covered(path, members=2, rounds=5)


def test_splits_over_a_tight_memory_budget_are_refused_and_counted(faulty_search):
    _, path = faulty_search
    rows = pq.read_table(path / "trials.parquet").to_pylist()
    refused = sum(r["split_refused_budget"] for r in rows)
    assert refused > 0
    assert not any(r["split_applied"] for r in rows), "a split over the budget was applied"
    assert f"refused splits (over budget): {refused}" in (path / "summary.md").read_text()


# -- a trial's worker killed mid-round ------------------------------------------------------------
@pytest.fixture(scope="module")
def worker_killed(ray_local, tmp_path_factory):
    storage = tmp_path_factory.mktemp("worker_killed")
    path = storage / "worker"
    kill = {}

    def kill_the_first_member_to_finish_round_1():
        deadline = time.time() + 300
        while time.time() < deadline and not kill:
            rows = rows_in_file_order(path) if (path / "rows.jsonl").exists() else []
            if rows:
                # No exploit can follow the search's first result (nobody to compare with), so this
                # worker goes straight on to round 2: kill it well inside that round.
                time.sleep(0.5)
                kill.update(trial_id=rows[0]["trial_id"], pid=rows[0]["pid"], index=len(rows_in_file_order(path)))
                os.kill(rows[0]["pid"], signal.SIGKILL)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_first_member_to_finish_round_1, daemon=True)
    killer.start()
    code = launch.main(SMALL + ["--rounds", "3", "--storage-path", str(storage), "--name", "worker"])
    killer.join(timeout=10)
    return code, path, kill


def test_a_killed_worker_restarts_its_trial_and_the_search_completes(worker_killed):
    code, path, kill = worker_killed
    assert kill, "no worker was killed"
    assert code == 0
    failures = {t.trial_id: t.num_failures for t in ExperimentAnalysis(str(path)).trials}
    assert failures[kill["trial_id"]] == 1 and sum(failures.values()) == 1
    assert_every_round_is_covered(path, members=2, rounds=3)


def test_a_killed_worker_loses_at_most_one_round(worker_killed):
    _, path, kill = worker_killed
    lost = rounds_lost(rows_in_file_order(path), kill["index"], kill["trial_id"])
    print(f"worker SIGKILL: {lost} completed round(s) of {kill['trial_id']} redone")
    assert 0 <= lost <= 1


# -- the driver killed mid-search, a snapshot and a checkpoint cut short, then --resume ---------------
def wait_for_exit(pids: set[int], timeout: float) -> None:
    """Wait for processes of our run to end; SIGKILL the ones still there after ``timeout``."""
    deadline = time.time() + timeout
    for pid in pids:
        while time.time() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def driver_killed(tmp_path_factory):
    storage = tmp_path_factory.mktemp("driver_killed")
    path = storage / "driver"
    ray_tmp = tempfile.mkdtemp(prefix="sn-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    # Ray snapshots the experiment at least every 10 s by default; every step here, so that the checkpoint
    # a member is restored from is its newest, with older ones beside it to fall back to.
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_TMPDIR": ray_tmp, "TUNE_GLOBAL_CHECKPOINT_S": "0"}
    # Killed at round 4 of 5: the snapshot kept may lag the newest checkpoints by a round, and still records
    # for some member a checkpoint with an older one beside it (killed at round 3, it sometimes did not).
    cmd = [sys.executable, "-m", "spidernet_ray.launch", *SMALL, "--rounds", "5", "--num-cpus", "2",
           "--storage-path", str(storage), "--name", "driver"]
    try:
        first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                 start_new_session=True)
        seen = []
        for line in first.stdout:
            seen.append(line)
            if line.startswith("round 4/"):
                break
        # The driver and the local Ray it started die at once, as when the driver's machine fails.
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
        assert any(line.startswith("round 4/") for line in seen), "".join(seen)
        rows = rows_in_file_order(path)
        wait_for_exit({r["pid"] for r in rows}, timeout=30)  # workers end once their raylet is gone
        rows = rows_in_file_order(path)
        state = json.loads((path / STATE_FILE).read_text())
        # Ray copies its experiment snapshot into the storage path in place: cut the newest short, as a
        # kill during that copy does, so that --resume has to use the copy the launcher kept.
        snapshot = max(path.glob("experiment_state-*.json"))
        snapshot.write_bytes(snapshot.read_bytes()[:50])
        good = snapshot.with_name(snapshot.name + ".last_good").read_bytes()
        # Truncate the checkpoint that copy restores an unfinished member from, one with an older one beside it.
        scratch = storage / "snapshot"
        scratch.mkdir()
        (scratch / snapshot.name).write_bytes(good)
        corrupted, rounds_done = None, {}
        for trial in ExperimentAnalysis(str(scratch)).trials:
            if trial.status == "TERMINATED" or trial.checkpoint is None:
                continue
            recorded = Path(trial.checkpoint.path)
            checkpoint = path / recorded.parent.name / recorded.name
            # A checkpoint the kill left incomplete (CI once saw one without its weights) is no target.
            complete = [c for c in sorted(checkpoint.parent.glob("checkpoint_*")) if _complete(c)]
            if checkpoint in complete and complete[0] != checkpoint:
                weights = checkpoint / "weights.safetensors"
                weights.write_bytes(weights.read_bytes()[:100])
                corrupted = (trial.trial_id, checkpoint.name)
                # Rounds behind each checkpoint beside it, read now: the resumed member deletes old ones.
                rounds_done = {c.name: json.loads((c / "trainer_state.json").read_text())["rounds_done"]
                               for c in complete if c != checkpoint}
                break
        resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600, env=env)
        yield {"path": path, "rows": rows, "state": state, "corrupted": corrupted, "rounds_done": rounds_done,
               "resumed": resumed, "snapshot": snapshot}
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _complete(checkpoint: Path) -> bool:
    return all((checkpoint / name).is_file() for name in ("weights.safetensors", "trainer_state.json"))


def test_a_killed_driver_resumes_and_the_results_cover_every_round(driver_killed):
    resumed, path = driver_killed["resumed"], driver_killed["path"]
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert_every_round_is_covered(path, members=2, rounds=5)
    rows, kill_index = rows_in_file_order(path), len(driver_killed["rows"])
    lost = {trial: rounds_lost(rows, kill_index, trial) for trial in {r["trial_id"] for r in rows}}
    print(f"driver SIGKILL: completed rounds redone per member {lost}")


def test_resume_keeps_the_genealogy_and_the_archive(driver_killed):
    path, before = driver_killed["path"], driver_killed["state"]
    after = json.loads((path / STATE_FILE).read_text())
    # Exploits Ray's snapshot had not recorded are kept, marked undone (the members went on from before them).
    kept = [{k: v for k, v in e.items() if k != "undone"} for e in after["genealogy"][: len(before["genealogy"])]]
    assert before["genealogy"] and kept == before["genealogy"]
    archive = ParetoArchive.from_dict(after["archive"])
    kept = {entry["key"] for entry in after["archive"]["entries"]}
    remeasured = {r["genome_hash"] for r in rows_in_file_order(path)[len(driver_killed["rows"]):]}
    for entry in before["archive"]["entries"]:
        # Still on the front, or beaten by a later entry (offering it again changes nothing), or re-measured.
        assert entry["key"] in kept or entry["key"] in remeasured or not archive.add(entry["key"], entry["metrics"])
    assert len(pq.read_table(path / "genealogy.parquet")) == len(after["genealogy"])


def test_a_snapshot_cut_short_by_the_kill_is_replaced_by_the_last_good_copy(driver_killed):
    assert f"{driver_killed['snapshot'].name} was cut short" in driver_killed["resumed"].stderr
    json.loads(driver_killed["snapshot"].read_text())


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(driver_killed):
    assert driver_killed["corrupted"], "no member had two checkpoints when the driver was killed"
    trial_id, name = driver_killed["corrupted"]
    rows = rows_in_file_order(driver_killed["path"])[len(driver_killed["rows"]):]
    first = next(r for r in rows if r["trial_id"] == trial_id)
    assert f"{name} is unreadable" in first["checkpoint_fallback"]
    assert "restored the earlier checkpoint_" in first["checkpoint_fallback"]
    assert not first["diverged"]
    # The member goes on from the round of the checkpoint it was restored from, not of the one cut short.
    earlier = first["checkpoint_fallback"].split("restored the earlier ")[1].split()[0]
    assert first["training_iteration"] == driver_killed["rounds_done"][earlier] + 1


# -- two nodes with token auth -----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_groups(groups: list[int]) -> None:
    """Stop what our `ray start` calls started (each in its own process group), nothing else."""
    for sig, grace in ((signal.SIGTERM, 3), (signal.SIGKILL, 5)):
        for group in groups:
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline and any(_group_alive(g) for g in groups):
            time.sleep(0.2)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture(scope="module")
def two_nodes():
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip(f"no `ray` command beside {sys.executable}")
    root = Path(tempfile.mkdtemp(prefix="sn-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    # Our own token, in the environment: nothing is read from or written to ~/.ray.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_ADDRESS": "",
           "RAY_USAGE_STATS_ENABLED": "0"}
    groups = []

    def ray_start(*args: str) -> None:
        proc = subprocess.Popen([str(ray_cli), "start", *args], env=env, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        groups.append(proc.pid)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out[-3000:]

    try:
        ray_start("--head", "--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                  "--include-dashboard", "false", "--temp-dir", str(root / "head"))
        ray_start("--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                  "--temp-dir", str(root / "node"))
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"  # what `--address auto` attaches to
        search = subprocess.run(
            [sys.executable, "-m", "spidernet_ray.launch", *SMALL, "--rounds", "2", "--address", "auto",
             "--storage-path", str(root / "shared"), "--name", "two"],
            capture_output=True, text=True, timeout=600, env=env)
        yield {"search": search, "path": root / "shared" / "two", "env": env, "root": root}
    finally:
        stop_process_groups(groups)
        shutil.rmtree(root, ignore_errors=True)


def test_a_search_on_two_nodes_runs_trials_on_both(two_nodes):
    search, path = two_nodes["search"], two_nodes["path"]
    assert search.returncode == 0, search.stdout[-3000:] + search.stderr[-3000:]
    rows = pq.read_table(path / "trials.parquet").to_pylist()
    assert len({r["node_id"] for r in rows}) == 2
    members = {r["trial_id"] for r in rows}
    assert len(members) == 2 and max(r["training_iteration"] for r in rows) == 2


def test_a_two_node_search_writes_its_results_to_the_shared_storage_path(two_nodes):
    path = two_nodes["path"]
    for name in ["trials.parquet", "pareto.parquet", "genealogy.parquet", "summary.md", STATE_FILE]:
        assert (path / name).is_file(), name
    assert list(path.glob("SpiderNetTrainable_*/checkpoint_*/weights.safetensors"))


def test_attaching_to_the_cluster_without_its_token_is_refused_in_one_line(two_nodes):
    home = two_nodes["root"] / "home"  # no ~/.ray/auth_token there
    env = {k: v for k, v in two_nodes["env"].items() if k != "RAY_AUTH_TOKEN"} | {"HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "spidernet_ray.launch", *SMALL, "--address", "auto",
                           "--storage-path", str(home / "runs")], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "wants its auth token" in done.stderr
    assert not (home / "runs").exists()
