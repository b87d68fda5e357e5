"""A checkpoint that --resume cannot continue from (damaged, crafted, of another model, with more
epochs than its run) is refused in one line naming it, before anything is trained or written."""
import os

import pytest
import torch

import experiments
from models import create_model
from runner import checkpoints
from conftest import checkpoint_path, interrupt_at_epoch, record_path, run_args


def resumable_run(data, out, monkeypatch) -> list[str]:
    """A 2-epoch run with its first epoch saved; returns the command line that continues it."""
    argv = run_args(data, out, "--numsamples", "64")
    interrupt_at_epoch(monkeypatch, 1)
    assert experiments.main(argv) == experiments.INTERRUPTED
    monkeypatch.undo()
    return [*argv, "--resume"]


def truncated(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def random_bytes(path):
    path.write_bytes(os.urandom(4096))


def empty(path):
    path.write_bytes(b"")


def edited(change):
    """Damage a checkpoint by changing the dictionary it holds."""
    def edit(path):
        state = torch.load(path, weights_only=True)
        change(state)
        torch.save(state, path)
    return edit


def another_models_weights(state):
    state["model"] = create_model("resnet", 0.125, 10).state_dict()


def more_rows_than_epochs(state):
    state["rows"] = [{**state["rows"][0], "epoch": epoch} for epoch in range(5)]
    state["epochs_completed"] = 5


DAMAGES = {
    "truncated": (truncated, "cannot be read as a checkpoint"),
    "random-bytes": (random_bytes, "cannot be read as a checkpoint"),
    "empty": (empty, "cannot be read as a checkpoint"),
    "not-a-dict": (lambda path: torch.save([1, 2], path), "is not a checkpoint of this program"),
    "missing-model": (edited(lambda state: state.pop("model")), "its 'model' is missing"),
    "rows-not-a-list": (edited(lambda state: state.update(rows=5)), "its 'rows' is not a list"),
    "missing-labels": (edited(lambda state: state["labels"].pop("assigned")), "does not hold a state"),
    "another-model": (edited(another_models_weights), "does not hold a state this run can continue from"),
    "more-rows-than-epochs": (edited(more_rows_than_epochs), "5 epoch rows do not number the epochs of a run of 2"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("damage, message", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_checkpoint_is_refused_in_one_line(synthetic_cifar10, tmp_path, monkeypatch, capsys,
                                                     damage, message):
    argv = resumable_run(synthetic_cifar10, tmp_path, monkeypatch)
    record = record_path(tmp_path).read_bytes()
    checkpoint = checkpoint_path(tmp_path)
    damage(checkpoint)
    damaged = checkpoint.read_bytes()
    capsys.readouterr()
    assert experiments.main(argv) == experiments.USAGE
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and message in err and str(checkpoint) in err, err
    assert "done" not in out
    assert record_path(tmp_path).read_bytes() == record and checkpoint.read_bytes() == damaged
    assert not list(tmp_path.rglob("*.lock"))


def test_a_checkpoint_whose_rows_skip_an_epoch_is_refused(tmp_path):
    state = {key: kind() for key, kind in checkpoints.CHECKPOINT_PARTS.items()}
    state |= {"format": checkpoints.CHECKPOINT_FORMAT, "config": {"epochs": 3}, "rows": [{"epoch": 0}, {"epoch": 2}]}
    with pytest.raises(checkpoints.UsageError, match="2 epoch rows do not number the epochs of a run of 3"):
        checkpoints.check_contents(state, tmp_path / "c.pt")
    state["rows"] = [{"epoch": 0}, {"epoch": 1}]
    checkpoints.check_contents(state, tmp_path / "c.pt")
