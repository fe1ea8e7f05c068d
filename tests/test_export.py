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
