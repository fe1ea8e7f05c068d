"""What a person running a search sees: Ray's misleading lines dropped, tracking that fails in one line."""

import importlib.util
import io

import pytest

from spidernet_ray import launch
from spidernet_ray.progress import _LineFilter


def test_rays_tensorboard_hint_is_dropped_and_every_other_line_passes_whole():
    out = io.StringIO()
    stream = _LineFilter(out, ("To visualize your results with TensorBoard",))
    stream.write("round 1/2 | population 2\nTo visualize your results with TensorBoard, run: `tensorboard --logdir /tmp/ray/x`\n")
    stream.write("View detailed results here: /runs/a")
    assert out.getvalue() == "round 1/2 | population 2\n"  # the unfinished line waits for its end
    stream.write("\n")
    assert out.getvalue() == "round 1/2 | population 2\nView detailed results here: /runs/a\n"


@pytest.mark.parametrize("tracker", ["mlflow", "wandb"])
def test_tracking_without_its_package_is_refused_in_one_line_before_ray_starts(tracker, tmp_path, capsys):
    if importlib.util.find_spec(tracker) is not None:
        pytest.skip(f"{tracker} is installed here")
    code = launch.main(["--dataset", "synthetic", "--tracking", tracker, "--storage-path", str(tmp_path),
                        "--name", "t"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"pip install 'spidernet_ray[{tracker}]'" in err
    assert not (tmp_path / "t").exists()


def test_an_unknown_tracker_is_refused_by_the_flag_parser(capsys):
    with pytest.raises(SystemExit) as exit_:
        launch.main(["--tracking", "comet"])
    assert exit_.value.code == 2


def test_a_members_epoch_and_step_reach_the_driver_with_loss_and_time_left(tmp_path):
    from spidernet_ray.config import SearchConfig
    from spidernet_ray.progress import MemberProgress, StepProgress

    config = SearchConfig(storage_path=str(tmp_path), name="run", rounds=3)
    member = MemberProgress(config.experiment_path, "t_0", round_=1, epochs=2, steps=10)
    reader = StepProgress(config)
    assert reader.poll() == []  # nobody has written yet
    member.update(epoch=0, step=10, loss=1.5)  # the last step of an epoch is always written
    (line,) = reader.poll()
    assert "t_0 round 1/3 epoch 1/2 step 10/10 loss 1.500" in line
    assert "left in the round" in line and "in the run" in line
    assert reader.poll() == []  # nothing new, nothing printed
    member.update(epoch=1, step=3, loss=1.2)  # within WRITE_EVERY_S of the last write: not written
    assert reader.poll() == []
    member.update(epoch=1, step=10, loss=1.1)
    (line,) = reader.poll()
    assert "epoch 2/2 step 10/10 loss 1.100" in line
