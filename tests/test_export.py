"""Export round trips: every written file loads back and gives the eager network's logits, at a batch
size other than the one it was exported with; ONNX is skipped cleanly without its packages."""

import pytest
import torch

from spidernet_ray import export
from spidernet_ray.checkpoint import save_checkpoint
from spidernet_ray.genome import initial_genome
from spidernet_ray.supernet import DiscreteNet, SuperNet


def small_net():
    genome = initial_genome((1, 8, 8), 10, reductions=1, channels=4)
    # One edge keeps no op at all: the discrete network's "contributes zeros" path is exported too.
    edge_ops = {(k, e.src, e.dst): e.ops[:2] for k, cell in enumerate(genome.cells) for e in cell.edges}
    edge_ops[(1, 1, 3)] = ()
    torch.manual_seed(0)
    net = DiscreteNet(genome, edge_ops, drop_path=0.2)
    net.train()
    with torch.no_grad():  # a few steps' worth of running statistics, so eval differs from train mode
        for _ in range(3):
            net(torch.randn(16, 1, 8, 8))
    return net


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    net = small_net()
    directory = tmp_path_factory.mktemp("export")
    return net, directory, export.export_model(net, directory)


def test_pt2_and_torchscript_are_written_and_checked(exported):
    _, directory, result = exported
    assert set(result.files) >= {"pt2", "torchscript"}
    assert result.files["pt2"] == directory / "model.pt2" and result.files["torchscript"] == directory / "model.ts"
    assert all(diff < 1e-4 for diff in result.max_abs_diff.values())


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.* is deprecated")
@pytest.mark.parametrize("fmt", ["pt2", "torchscript"])
def test_the_loaded_file_gives_the_eval_mode_logits_of_the_last_head(exported, fmt):
    net, directory, _ = exported
    reference = export.inference_copy(net)
    x = torch.randn(7, 1, 8, 8)
    with torch.no_grad():
        expected = reference(x)
        loaded = torch.export.load(str(directory / "model.pt2")).module() if fmt == "pt2" else \
            torch.jit.load(str(directory / "model.ts"))
        assert torch.allclose(loaded(x), expected, rtol=1e-4, atol=1e-5)
        assert torch.equal(expected, reference.forward_heads(x)[-1])


def test_exporting_leaves_the_callers_network_as_it_was(exported):
    net, _, _ = exported
    assert net.training and net.drop_path_prob == 0.2


def test_onnx_is_written_with_its_packages_and_skipped_with_a_message_without(exported):
    _, directory, result = exported
    if export.onnx_available():
        assert (directory / "model.onnx").is_file() and "onnx" in result.files
    else:
        assert "onnx" not in result.files and not (directory / "model.onnx").exists()
        assert "pip install" in result.skipped["onnx"]


def test_an_export_that_does_not_reproduce_the_network_raises_and_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setitem(export._RUNNERS, "torchscript", lambda path, x: torch.zeros(x.shape[0], 10))
    with pytest.raises(export.ExportError, match="does not reproduce"):
        export.export_model(small_net(), tmp_path, formats=("torchscript",))
    assert not (tmp_path / "model.ts").exists()


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown export format"):
        export.export_model(small_net(), tmp_path, formats=("tflite",))


def test_command_line_exports_a_checkpoint_and_turns_a_supernet_into_its_discrete_network(tmp_path, capsys):
    genome = initial_genome((1, 8, 8), 10, reductions=1, channels=4)
    save_checkpoint(SuperNet(genome), tmp_path / "ckpt")
    assert export.main([str(tmp_path / "ckpt"), "--out", str(tmp_path / "out"), "--formats", "torchscript"]) == 0
    assert (tmp_path / "out" / "model.ts").is_file()
    assert "torchscript:" in capsys.readouterr().out
    assert export.main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# -- preprocessing travels with the model --------------------------------------------------------
def test_the_preprocessing_inside_the_file_reproduces_the_logits_from_published_digits(tmp_path):
    """A user holding only model.ts and sklearn's raw 0..16 digits gets the logits the network gives the
    batches it was trained on: every step of the input pipeline is in the file."""
    import json

    import numpy as np
    from sklearn.datasets import load_digits

    from spidernet_ray.data import load_dataset
    from spidernet_ray.data.batches import Batches

    splits = load_dataset("digits", seed=0)
    net = small_net()
    result = export.export_model(net, tmp_path, formats=("pt2", "torchscript"), preprocess=splits.preprocessing())
    assert json.loads((tmp_path / "preprocess.json").read_text()) == splits.preprocessing()

    raw = load_digits().images[:7, None]  # as published: float values 0..16, (N, 1, 8, 8)
    pipeline = Batches((np.rint(raw * 255 / 16)).astype(np.uint8), np.zeros(7, dtype=np.int64), 7,
                       mean=splits.mean, std=splits.std)
    model_input = next(iter(pipeline))[0]
    with torch.no_grad():
        expected = export.inference_copy(net)(model_input)
    for fmt, path in result.files.items():
        p = export.read_preprocess(path)
        assert p["classes"] == list("0123456789") and p["input_shape"] == [1, 8, 8]
        mean, std = np.array(p["mean"])[:, None, None], np.array(p["std"])[:, None, None]
        x = ((np.round(raw * p["raw_scale"]) / 255 - mean) / std).astype(np.float32)
        logits = export._RUNNERS[fmt](path, torch.from_numpy(x))
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4, msg=fmt)


def test_a_file_exported_without_preprocessing_says_it_carries_none(exported):
    _, _, result = exported
    assert export.read_preprocess(result.files["torchscript"]) is None


@pytest.fixture(scope="module")
def finished_run(ray_local, tmp_path_factory):
    from helpers import launch_into_temp

    flags = ["--dataset", "digits", "--subset", "300", "--population", "2", "--rounds", "2",
             "--epochs-per-round", "1", "--channels", "4", "--reductions", "1", "--batch-size", "32",
             "--candidates-per-cell", "2", "--seed", "1"]
    code, run = launch_into_temp(tmp_path_factory, "exportable", flags)
    assert code == 0
    return run


def test_export_best_finds_the_front_leaders_checkpoint_and_prints_where_it_went(finished_run, capsys):
    import json
    from pathlib import Path

    import pyarrow.parquet as pq

    from spidernet_ray.checkpoint import load_checkpoint

    best = pq.read_table(finished_run / "pareto.parquet").to_pylist()[0]
    assert export.main([str(finished_run), "--best", "--formats", "torchscript"]) == 0
    out = capsys.readouterr().out
    folder = finished_run / "export" / best["genome_hash"]
    assert str((folder / "model.ts").resolve()) in out and "preprocess.json" in out
    assert export.read_preprocess(folder / "model.ts")["raw_scale"] == pytest.approx(255 / 16)
    # The file is the network of the checkpoint saved at exactly the front row's round: same logits.
    # A front row may be an architecture snapshot taken inside the round, whose weights no checkpoint
    # holds: then the round's checkpoint stands in, and the output says so.
    source = next(line for line in out.splitlines() if line.endswith(" ->"))[:-3]
    assert Path(source).parent == finished_run / best["trial_dir"]
    assert json.loads((Path(source) / "trainer_state.json").read_text())["rounds_done"] == best["training_iteration"]
    round_row = next(r for r in pq.read_table(finished_run / "trials.parquet").to_pylist()
                     if r["trial_id"] == best["trial_id"] and r["training_iteration"] == best["training_iteration"])
    supernet = load_checkpoint(source)
    assert supernet.discrete_genome().hash == round_row["genome_hash"]
    net = supernet.to_discrete()
    snapshot = round_row["genome_hash"] != best["genome_hash"]
    assert ("is a snapshot taken during round" in out) == snapshot and ("note:" in out) == snapshot
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(folder / "model.ts"))(x), export.inference_copy(net)(x))


def test_export_genome_refuses_an_unknown_hash_in_one_line(finished_run, capsys):
    assert export.main([str(finished_run), "--genome", "nosuchhash"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
