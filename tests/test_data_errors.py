"""A data folder moved, or a shard gone, while `train` runs: the run saves the last step it
completed before it reports the error, so that `--resume` (from DATA where it is now) loses no
work and ends with the same weights as a run never interrupted (bitwise on the CPU).

The move is a real rename, made between two steps: after `n` training batches (the loader's next
read opens the shards by path, and fails as it would after a real move: the batches read ahead
before the move are trained first), or as the validation pass begins."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from alexnet_cli import train as train_module
from alexnet_cli.checkpoint import load_checkpoint
from alexnet_cli.cli.app import app
from alexnet_cli.errors import DataError
from alexnet_cli.loader import ShardLoader

runner = CliRunner()
FAST = ["--device", "cpu", "--batch-size", "8", "--log-every", "1", "--workers", "1", "--epochs", "2"]


def _train(data: Path, out: Path, *extra: str):
    return runner.invoke(app, ["train", str(data), "--out", str(out), *FAST, *extra])


def _error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def _trainer(out: Path) -> tuple[int, int, int]:
    t = load_checkpoint(out / "checkpoints" / "last.pt")["trainer"]
    return t["epoch"], t["batch"], t["step"]


def _records(out: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = (load_checkpoint(r / "checkpoints" / "last.pt")["model"] for r in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _move_after_batches(monkeypatch, n: int, src: Path, dst: Path) -> None:
    """Rename `src` to `dst` when the `n`-th training batch has been trained (as the loop asks for
    the next); the loader then reads on from there, reopening its shards by path."""
    epoch, handed = ShardLoader.epoch, []

    def moving(self, e, start_batch=0):
        if self.split != "train":
            yield from epoch(self, e, start_batch)
            return
        for k, batch in enumerate(epoch(self, e, start_batch)):
            if len(handed) == n:
                src.rename(dst)
                yield from epoch(self, e, start_batch + k)      # what comes after the move: read now
                return
            handed.append(1)
            yield batch
    monkeypatch.setattr(ShardLoader, "epoch", moving)


@pytest.fixture(scope="module")
def clean_run(tiny_data, tmp_path_factory) -> Path:
    """Two epochs of tiny_data (6 steps each) never interrupted: the weights to match. READ-ONLY."""
    out = tmp_path_factory.mktemp("clean") / "run"
    assert _train(tiny_data, out).exit_code == 0
    return out


def test_data_moved_mid_epoch_saves_the_last_step_and_resume_from_the_new_path_is_exact(
        tiny_data, clean_run, tmp_path, monkeypatch):
    data, moved, out = tmp_path / "data", tmp_path / "moved", tmp_path / "run"
    shutil.copytree(tiny_data, data)
    _move_after_batches(monkeypatch, 8, data, moved)                    # epoch 2, batch 2 done
    failed = _train(data, out)
    assert failed.exit_code == 1, failed.output
    error = _error_line(failed)
    last = out / "checkpoints" / "last.pt"
    assert f"{data} was moved or deleted" in error and "run `alexnet prep` again" not in error, error
    assert f"saved {last} at step 8 (in epoch 2, batch 2)" in error, error
    assert error.endswith(f"continue from where the data is now with the same command and --resume: "
                          f"`alexnet train NEWPATH --out {out} ... --resume`"), error
    assert _trainer(out) == (1, 2, 8)
    monkeypatch.undo()
    resumed = _train(moved, out, "--resume")                            # the data's content, not its path
    assert resumed.exit_code == 0, resumed.output
    assert "Resuming from step 8" in resumed.stderr
    assert _trainer(out) == (2, 0, 12) and _same_weights(out, clean_run)
    assert [r["step"] for r in _records(out, "train")] == list(range(1, 13))    # each step logged once


def test_a_shard_gone_mid_epoch_is_named_and_saved(tiny_data, clean_run, tmp_path, monkeypatch):
    data, out = tmp_path / "data", tmp_path / "run"
    shutil.copytree(tiny_data, data)
    shard = data / "train-00001.h5"
    _move_after_batches(monkeypatch, 3, shard, shard.with_suffix(".away"))
    failed = _train(data, out)
    assert failed.exit_code == 1, failed.output
    error = _error_line(failed)
    assert f"shard {shard} was moved or deleted while in use" in error, error
    assert f"saved {out / 'checkpoints' / 'last.pt'} at step 3 (in epoch 1, batch 3)" in error, error
    assert error.endswith("when the data is whole again, run the same command with --resume to continue"), error
    assert _trainer(out) == (0, 3, 3)
    monkeypatch.undo()
    shard.with_suffix(".away").rename(shard)
    resumed = _train(data, out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert _same_weights(out, clean_run)


def test_data_moved_during_validation_saves_before_it_and_resume_validates(
        tiny_data, clean_run, tmp_path, monkeypatch):
    """The first epoch's training is done, its validation is not: last.pt holds the position
    before the validation (every batch of the epoch trained), so that --resume validates the
    epoch (the plateau schedule watches it) and saves, as the run never stopped would have."""
    data, moved, out = tmp_path / "data", tmp_path / "moved", tmp_path / "run"
    shutil.copytree(tiny_data, data)
    evaluate = train_module.evaluate_model

    def moving(*args, **kwargs):
        data.rename(moved)
        return evaluate(*args, **kwargs)
    monkeypatch.setattr(train_module, "evaluate_model", moving)
    failed = _train(data, out)
    assert failed.exit_code == 1, failed.output
    error = _error_line(failed)
    assert f"{data} was moved or deleted" in error, error
    assert f"saved {out / 'checkpoints' / 'last.pt'} at step 6 (epoch 1 trained, not yet validated)" in error, error
    assert _trainer(out) == (0, 6, 6) and not _records(out, "epoch")
    assert not (out / "checkpoints" / "best.pt").exists()
    monkeypatch.undo()
    resumed = _train(moved, out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert _trainer(out) == (2, 0, 12) and _same_weights(out, clean_run)
    assert [r["step"] for r in _records(out, "epoch")] == [6, 12]
    for a, b in zip(_records(out, "epoch"), _records(clean_run, "epoch")):
        assert {k: v for k, v in a.items() if k != "time_s"} == {k: v for k, v in b.items() if k != "time_s"}
    assert (out / "checkpoints" / "best.pt").exists()


def test_a_failure_before_the_first_step_saves_nothing(tiny_data, tmp_path, monkeypatch):
    data, out = tmp_path / "data", tmp_path / "run"
    shutil.copytree(tiny_data, data)
    _move_after_batches(monkeypatch, 0, data, tmp_path / "moved")
    failed = _train(data, out)
    assert failed.exit_code == 1
    assert "no step was done, nothing was saved" in _error_line(failed)
    assert not (out / "checkpoints" / "last.pt").exists()


def test_an_unreadable_shard_is_a_data_error(tiny_data, monkeypatch):
    """A read that fails (EIO: an NFS hiccup, a bad disk) is the loader's DataError naming the
    shard, not a bare OSError."""
    def failing(fd, buffers, offset):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr("alexnet_cli.loader.os.preadv", failing)
    loader = ShardLoader(tiny_data, "train", 8, shuffle=False, workers=1)
    with pytest.raises(DataError, match=r"shard .*train-00000\.h5 cannot be read \(.*Input/output error"):
        next(iter(loader.epoch(0)))


def test_a_validation_failure_on_the_max_steps_step_is_validated_by_resume(three_step_data, tmp_path, monkeypatch):
    """`--max-steps` reached on an epoch's last step leaves that epoch's validation to do: the
    resumed run does it (and writes best.pt) rather than find "nothing left to train"."""
    data, out = tmp_path / "data", tmp_path / "run"
    shutil.copytree(three_step_data, data)
    evaluate = train_module.evaluate_model
    monkeypatch.setattr(train_module, "evaluate_model", lambda *a, **k: (data.rename(tmp_path / "away"),
                                                                         evaluate(*a, **k))[1])
    args = ["--batch-size", "4", "--max-steps", "3"]                          # 3 steps an epoch
    failed = _train(data, out, *args)
    assert failed.exit_code == 1 and "at step 3 (epoch 1 trained, not yet validated)" in _error_line(failed)
    monkeypatch.undo()
    (tmp_path / "away").rename(data)
    resumed = _train(data, out, *args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "Resuming from step 3 (epoch 1 trained, not yet validated)" in resumed.stderr
    assert _trainer(out) == (1, 0, 3) and [r["step"] for r in _records(out, "epoch")] == [3]
    assert (out / "checkpoints" / "best.pt").exists()
