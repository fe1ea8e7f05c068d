"""Bad input is refused before anything is spent: `python -m spidernet_ray.launch` exits with code 2
and one line on stderr naming the problem, with no traceback, nothing written under the storage path
and no Ray started (Ray's temporary folder, pointed into the case's folder, is never created).

Each case runs in its own process, as a user would run it; the processes run two at a time."""

import gzip
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from spidernet_ray.genome import initial_genome

pytestmark = pytest.mark.subprocess

SMALL = ["--dataset", "synthetic", "--channels", "4", "--reductions", "1", "--batch-size", "32"]
GENOME = initial_genome((1, 8, 8), 10, reductions=1, channels=4).to_dict()


def genome_json(**changes) -> str:
    return json.dumps({**GENOME, **changes})


def with_unknown_op() -> str:
    cells = json.loads(json.dumps(GENOME["cells"]))
    cells[0]["edges"][0]["ops"] = ["conv_9x9"]
    return genome_json(cells=cells)


def truncated_idx() -> bytes:
    return gzip.compress(b"\x00\x00\x08\x03\x00\x00")  # an IDX header cut short


# name: (arguments, files to create in the case's folder {dir}, words the error line must contain)
CASES = {
    # flags: sizes
    "population zero": (["--population", "0"], {}, "--population must be a positive integer"),
    "batch size negative": (["--batch-size", "-8"], {}, "--batch-size must be a positive integer"),
    "population not a number": (["--population", "four"], {}, "argument --population: invalid int value"),
    "misspelt flag": (["--populaton", "3"], {}, "unrecognized arguments: --populaton"),
    "reductions too deep for 8px": (["--reductions", "4"], {}, "4 reductions halve a 8px input"),
    "lr not a number": (["--lr", "nan"], {}, "--lr must be a positive number"),
    "val fraction 1": (["--val-fraction", "1"], {}, "--val-fraction must be in (0, 1)"),
    "subset too small to split": (["--subset", "5"], {}, "5 training examples are too few"),
    "proxy samples zero": (["--proxy-samples", "0"], {}, "--proxy-samples must be a positive integer"),
    "time budget zero": (["--time-budget-s", "0"], {}, "--time-budget-s must be a positive number"),
    "crossover probability above 1": (["--crossover", "--crossover-probability", "1.5"], {},
                                      "--crossover-probability must be in [0, 1]"),
    # flags: names
    "unknown dataset": (["--dataset", "imagenet"], {}, "unknown dataset 'imagenet'"),
    "unknown objective mode": (["--objectives", "max:val_accuracy", "fastest:latency_ms"], {},
                               "unknown mode 'fastest'"),
    "unknown objective metric": (["--objectives", "max:val_accuracy", "min:energy_j"], {}, "unknown metric 'energy_j'"),
    "unknown gate": (["--gate", "soft"], {}, "unknown gate 'soft'"),
    "unknown strategy": (["--strategy", "evolution"], {}, "unknown strategy 'evolution'"),
    "name with a path": (["--name", "../escape"], {}, "--name must be a plain folder name"),
    "dashboard on an attached cluster": (["--dashboard", "--address", "127.0.0.1:1"], {}, "an attached cluster serves"),
    "cluster address nobody answers": (["--address", "127.0.0.1:1"], {}, "--address 127.0.0.1:1: nothing answers there"),
    # flags: budgets and resources
    "memory budget below the smallest network": (["--memory-budget-mb", "0.05"], {}, "below the"),
    "latency budget below the smallest network": (["--latency-budget-ms", "0.0001"], {}, "below the"),
    "num gpus above the machine": (["--num-gpus", "4096"], {}, "--num-gpus 4096 exceeds"),
    "cpus per trial above the local ray": (["--num-cpus", "2", "--cpus-per-trial", "8"], {},
                                           "--cpus-per-trial 8 exceeds"),
    "gpus per trial above num gpus": (["--num-gpus", "1", "--gpus-per-trial", "2"], {}, "--gpus-per-trial 2 exceeds"),
    # flags: paths and experiments
    "storage path under a file": (["--storage-path", "{dir}/file.txt/runs"], {"file.txt": "x"}, "is not a folder"),
    # root passes os.access on these: only a real write tells
    "storage path under slash proc": (["--storage-path", "/proc/spidernet-runs"], {}, "cannot write in /proc"),
    "storage path on read-only slash sys": (["--storage-path", "/sys/spidernet-runs"], {}, "cannot write in /sys"),
    "experiment exists": (["--name", "taken"], {"runs/taken/search_config.json": "{}"},
                          "already exists: pass --resume"),
    "resume without a name": (["--resume"], {}, "--resume needs --name"),
    "resume of nothing": (["--resume", "--name", "ghost"], {}, "nothing to resume"),
    "resume of a corrupt saved config": (["--resume", "--name", "broken"],
                                         {"runs/broken/search_config.json": "{trunc"}, "cannot resume"),
    # config files
    "config missing": (["--config", "{dir}/none.toml"], {}, "none.toml does not exist"),
    "config malformed": (["--config", "{dir}/c.toml"], {"c.toml": "population = = 3"}, "is not valid TOML"),
    "config unknown key": (["--config", "{dir}/c.toml"], {"c.toml": "populaton = 3"}, "unknown key(s) populaton"),
    "config wrong type": (["--config", "{dir}/c.toml"], {"c.toml": 'population = "four"'}, "--population must be int"),
    "config objectives not a list": (["--config", "{dir}/c.toml"], {"c.toml": 'objectives = "max:val_accuracy"'},
                                     "objectives must be a list"),
    "config not text": (["--config", "{dir}/c.toml"], {"c.toml": b"\xff\xfe\x00population"},
                        "is unreadable: UnicodeDecodeError"),
    # genome JSON
    "genome missing": (["--genome", "{dir}/none.json"], {}, "none.json does not exist"),
    "genome malformed": (["--genome", "{dir}/g.json"], {"g.json": "{not json"}, "is not valid JSON"),
    "genome unknown operation": (["--genome", "{dir}/g.json"], {"g.json": with_unknown_op()},
                                 "unknown operation 'conv_9x9'"),
    "genome unknown key": (["--genome", "{dir}/g.json"], {"g.json": genome_json(depth=3)},
                           "unknown genome key(s): depth"),
    "genome bad width": (["--genome", "{dir}/g.json"], {"g.json": genome_json(channels="wide")}, "malformed genome"),
    "genome for other inputs": (["--genome", "{dir}/g.json"], {"g.json": genome_json(input_shape=[3, 8, 8])},
                                "is a genome for inputs (3, 8, 8)"),
    "genome contradicts reductions": (["--genome", "{dir}/g.json", "--reductions", "2"],
                                      {"g.json": genome_json()}, "--reductions 2 contradicts"),
    # data roots
    "data root missing": (["--dataset", "fashion_mnist", "--data-root", "{dir}/nowhere"], {}, "does not exist"),
    "data root is a file": (["--dataset", "fashion_mnist", "--data-root", "{dir}/file.txt"], {"file.txt": "x"},
                            "is not a folder"),
    "data root not given": (["--dataset", "mnist"], {}, "pass the folder holding them as the data root"),
    "data root truncated": (["--dataset", "fashion_mnist", "--data-root", "{dir}/fm"],
                            {f"fm/{name}": truncated_idx() for name in [
                                "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]},
                            "IDX header cut short"),
}


def run_case(name: str, root: Path) -> tuple[subprocess.CompletedProcess, Path]:
    argv, files, _ = CASES[name]
    folder = root / name.replace(" ", "_")
    folder.mkdir()
    for relative, content in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    argv = [a.replace("{dir}", str(folder)) for a in argv]
    storage = [] if "--storage-path" in argv else ["--storage-path", str(folder / "runs")]
    env = {**os.environ, "RAY_TMPDIR": str(folder / "ray_tmp"), "RAY_ADDRESS": ""}
    done = subprocess.run([sys.executable, "-m", "spidernet_ray.launch", *SMALL, *argv, *storage],
                          capture_output=True, text=True, timeout=120, env=env)
    return done, folder


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run_case, name, root) for name in CASES}
        return {name: future.result() for name, future in futures.items()}


def test_the_table_covers_at_least_25_cases():
    assert len(CASES) >= 25


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_line_before_ray_starts(name, outcomes):
    done, folder = outcomes[name]
    _, files, message = CASES[name]
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spidernet_ray.launch: error: "), done.stderr
    assert message in lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stdout == ""
    assert not (folder / "ray_tmp").exists(), "Ray was started"
    written = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert written == sorted(files), "something was written"
