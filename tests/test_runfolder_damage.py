"""Damaged run folders (the run-folder audit): `report` on a metrics.jsonl or config.json whose
records are valid JSON but wrong (types, repeats, order) says which line of which file; `train
--resume` writes a deleted best.pt again; a damaged config.json beside the run's last.pt is
said as such, and `--resume` continues the run from last.pt's settings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from alexnet_cli.checkpoint import load_checkpoint
from alexnet_cli.cli.app import app
from alexnet_cli.config import resolve_model_config, resolve_train_config, to_dict
from alexnet_cli.pca import compute_pca, write_pca
from alexnet_cli.prep import PrepOptions, prepare
from alexnet_cli.runlog import read_metrics
from alexnet_cli.synth import make_tree
from alexnet_cli.train import RunOptions, train

runner = CliRunner()


def _error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


# --------------------------------------------------------------------- report: metrics.jsonl, config.json
def _config() -> dict:
    return {"recipe": "paper", "model": to_dict(resolve_model_config("paper", num_classes=4)),
            "train": to_dict(resolve_train_config("paper", epochs=3, batch_size=4)),
            "run": {"log_every": 1, "seed": 0}}


def _records() -> list[dict]:
    """Two epochs of 2 steps, logged as `train` logs them: a warning at a step's record, an
    epoch's record at its last step."""
    records = []
    for e in range(2):
        for step in (2 * e + 1, 2 * e + 2):
            if step == 3:
                records.append({"kind": "warning", "step": step, "message": "loss stuck at chance"})
            records.append({"kind": "train", "step": step, "epoch": e + 1, "loss": 1.0, "lr": 0.01,
                            "images_per_s": 4.0})
        records.append({"kind": "epoch", "epoch": e + 1, "step": 2 * e + 2, "train_top1_error": 0.5,
                        "train_top5_error": 0.0, "lr": 0.01, "time_s": 1.0, "val_top1_error": 0.5 - e / 10,
                        "val_top5_error": 0.0, "val_n": 2, "lr_dropped": False})
    return records


def _run(tmp_path: Path, records: list, config: dict | None = None) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(_config() if config is None else config))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def _damaged(change):
    def make():
        records = _records()
        change(records)
        return records
    return make


@pytest.mark.parametrize("make, said", [
    (_damaged(lambda r: r[0].update(step="x")), 'line 1: the train record\'s "step" is "x", not a whole number'),
    (_damaged(lambda r: r[2].update(val_top1_error=None)),
     'line 3: the epoch record\'s "val_top1_error" is null, not a fraction in [0, 1]'),
    (_damaged(lambda r: r[2].update(train_top1_error=50)), 'line 3: the epoch record\'s "train_top1_error" is 50, not a fraction'),
    (_damaged(lambda r: r[1].pop("images_per_s")), 'line 2: the train record has no "images_per_s"'),
    (_damaged(lambda r: r.__setitem__(1, [2, 1.0])), "line 2: not a JSON object but a list"),
    (_damaged(lambda r: r[1].pop("kind")), 'line 2: a record without its "kind"'),
    (_damaged(lambda r: r.insert(3, dict(r[2]))), "line 4: epoch 1 logged twice (line 3)"),
    (_damaged(lambda r: r.insert(2, dict(r[1]))), "line 3: step 2 is logged twice (lines 2 and 3)"),
    (_damaged(lambda r: r.insert(0, r.pop(1))), "line 2: step 1 comes after step 2 (line 1)"),
    (_damaged(lambda r: r.insert(1, r.pop(2))), "line 3: step 2 comes after the record of epoch 1 that it ended (line 2)"),
    (lambda: _records() + _records()[:3], "line 8: step 1 comes after step 4 (line 7)"),   # two logs joined
])
def test_report_names_the_line_of_a_damaged_or_disordered_record(tmp_path, make, said):
    run = _run(tmp_path, make())
    line = _error_line(runner.invoke(app, ["report", str(run)]))
    assert f"{run / 'metrics.jsonl'}: {said}" in line, line
    if "logged twice" in said or "comes after" in said:
        assert "repeated or out of order" in line
    # the log as `train` writes it reads whole: a warning and an epoch share their step's record's step
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records()))
    [report] = json.loads(runner.invoke(app, ["report", str(run), "--json"]).stdout)
    assert (report["epochs_done"], report["step"], report["best_epoch"]) == (2, 4, 2)
    assert len(read_metrics(run)) == 7


@pytest.mark.parametrize("change, said", [
    (lambda c: c["train"].update(epochs="two"), '"train": {"epochs": "two"} is not a whole number of at least 1'),
    (lambda c: c["run"].update(log_every=None), '"run": {"log_every": null} is not a whole number of at least 1'),
    (lambda c: c["model"].update(num_classes=4.5), '"model": {"num_classes": 4.5} is not a whole number'),
    (lambda c: c.update(train=[1]), 'config.json has "train": [1], not a JSON object of settings'),
    (lambda c: c.update(recipe=["paper"]), 'config.json has "recipe": ["paper"], not text'),
])
def test_report_names_what_is_wrong_in_config_json(tmp_path, change, said):
    config = _config()
    change(config)
    line = _error_line(runner.invoke(app, ["report", str(_run(tmp_path, _records(), config))]))
    assert "config.json" in line and said in line, line


def test_report_on_a_run_whose_config_json_is_damaged_says_how_to_write_it_again(tmp_path):
    run = _run(tmp_path, _records())
    (run / "config.json").write_text(json.dumps(_config())[:50])        # cut short
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.pt").write_bytes(b"")                # report never reads it
    line = _error_line(runner.invoke(app, ["report", str(run)]))
    assert f"{run / 'config.json'} is not JSON" in line and "damaged" in line, line
    assert f"alexnet train DATA --out {run} --resume" in line and "last.pt holds them" in line


# --------------------------------------------------------------------- train --resume in a damaged folder
@pytest.fixture(scope="module")
def mini_data(tmp_path_factory) -> Path:
    """The smallest data a run trains on: 2 classes, 2 training images each (one step of 4 per
    epoch) and one validation image each."""
    root = tmp_path_factory.mktemp("mini")
    tree = make_tree(root / "tree", classes=2, train_per_class=2, val_per_class=1)
    prepare(tree, root / "data", PrepOptions(format="raw", shard_size=16, block_size=8, workers=1))
    write_pca(root / "data", compute_pca(root / "data"))
    return root / "data"


@pytest.fixture(scope="module")
def epoch_run(mini_data, tmp_path_factory) -> Path:
    """A run of 2 epochs stopped by `max_steps` after the first: last.pt and best.pt both hold
    epoch 1's weights. READ-ONLY: copy it."""
    out = tmp_path_factory.mktemp("epoch_run") / "run"
    train(mini_data, out, resolve_model_config("paper"), resolve_train_config("paper", epochs=2, batch_size=4),
          RunOptions(device="cpu", log_every=1, workers=1, max_steps=1))
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", str(data), "--out", str(out), "--epochs", "2", "--batch-size", "4", "--device", "cpu",
            "--log-every", "1", "--workers", "1", *extra]


def test_resume_writes_a_deleted_best_pt_again_from_last_pt(mini_data, epoch_run, tmp_path):
    """last.pt was written with best.pt at the best epoch's end: it holds the same weights."""
    run = _copy(epoch_run, tmp_path)
    best = run / "checkpoints" / "best.pt"
    before = load_checkpoint(best)
    best.unlink()
    result = runner.invoke(app, _train_args(mini_data, run, "--max-steps", "1", "--resume"))   # nothing to train
    assert result.exit_code == 0, result.output
    assert "best.pt was missing: written again from" in result.stderr, result.stderr
    after = load_checkpoint(best)
    assert after.keys() == before.keys() and "optimizer" not in after
    assert all(torch.equal(after["model"][k], v) for k, v in before["model"].items())
    assert after["trainer"]["best_step"] == after["trainer"]["step"] == 1


KILLED_AT_FIRST_BEST = """
import os, sys
from pathlib import Path
from alexnet_cli import runlog
from alexnet_cli.cli.app import app
runlog.RunFolder.write_best = lambda self, payload: os._exit(9)     # SIGKILL between the two files
app(sys.argv[1:])
"""


def test_a_kill_during_the_first_save_leaves_a_run_that_resumes(mini_data, epoch_run, tmp_path):
    """The kill audit: the first save wrote best.pt, then last.pt, so a kill between them left
    best.pt alone, a folder that could neither resume nor start again. Now the first save writes
    last.pt first; killed before best.pt, the run resumes, writes best.pt again, and both hold
    the weights of the uninterrupted run."""
    import subprocess
    import sys
    run = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_FIRST_BEST, *_train_args(mini_data, run, "--max-steps", "1")],
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == 9, killed.stderr[-3000:]
    assert (run / "checkpoints" / "last.pt").is_file() and not (run / "checkpoints" / "best.pt").exists()
    result = runner.invoke(app, _train_args(mini_data, run, "--max-steps", "1", "--resume"))
    assert result.exit_code == 0, result.output
    assert "best.pt was missing: written again from" in result.stderr, result.stderr
    for name in ("last.pt", "best.pt"):
        want, got = load_checkpoint(epoch_run / "checkpoints" / name), load_checkpoint(run / "checkpoints" / name)
        assert all(torch.equal(got["model"][k], v) for k, v in want["model"].items()), name


def test_resume_from_a_checkpoint_without_the_best_epochs_weights_writes_best_pt_at_the_next_epoch(
        mini_data, epoch_run, tmp_path):
    """A last.pt that cannot tell it holds best.pt's weights (a version before `best_step`, or
    saved steps after the best epoch): best.pt is written by the next epoch's end, whatever its
    error (the audit: the run finished with no best.pt at all, since no later epoch beat the
    lost one), and said so. Here the lost best epoch had no error at all."""
    run = _copy(epoch_run, tmp_path)
    last = run / "checkpoints" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["trainer"].pop("best_step", None)
    ckpt["trainer"]["best_top1"] = 0.0
    torch.save(ckpt, last)
    (run / "checkpoints" / "best.pt").unlink()
    result = runner.invoke(app, _train_args(mini_data, run, "--resume"))
    assert result.exit_code == 0, result.output
    assert "best.pt is missing" in result.stderr and "written again at the end of the next epoch" in result.stderr
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["trainer"]["step"] == best["trainer"]["best_step"] == 2
    assert all(torch.equal(best["model"][k], v) for k, v in load_checkpoint(last)["model"].items())


@pytest.mark.parametrize("damage", ["cut", "list", "missing"])
def test_a_damaged_config_json_beside_last_pt_is_said_and_resume_writes_it_again(mini_data, epoch_run, tmp_path,
                                                                                damage):
    run = _copy(epoch_run, tmp_path)
    config = run / "config.json"
    text = config.read_text()
    if damage == "missing":
        config.unlink()
    else:
        config.write_text(text[:100] if damage == "cut" else "[1, 2]\n")
    line = _error_line(runner.invoke(app, _train_args(mini_data, run, "--max-steps", "1")))
    said = {"cut": "is not JSON (", "list": "is not a JSON object but a list", "missing": "is missing"}[damage]
    assert f"{config} {said}" in line and "settings are damaged or lost" in line, line
    assert "last.pt holds them: continue the run with --resume" in line and "not a training run's" not in line
    assert (config.read_text() if config.exists() else None) == (None if damage == "missing" else
                                                                 text[:100] if damage == "cut" else "[1, 2]\n")
    if damage != "cut":
        return                                 # one resume suffices: the check is the same for each
    result = runner.invoke(app, _train_args(mini_data, run, "--max-steps", "1", "--resume"))
    assert result.exit_code == 0, result.output
    assert f"Note: {config} is not JSON" in result.stderr and "read from" in result.stderr, result.stderr
    written = json.loads(config.read_text())
    saved = load_checkpoint(run / "checkpoints" / "last.pt")["config"]
    assert written["model"] == saved["model"] and written["train"] == saved["train"]


def test_a_config_json_that_is_no_regular_file_or_too_large_is_not_read(tmp_path):
    """Reading a config.json linked to /dev/zero took all memory (the error-contract audit's
    report finding, the same read in every run-folder check); a FIFO blocked."""
    import os

    from alexnet_cli.runlog import MAX_CONFIG_BYTES, config_problem
    zero = tmp_path / "zero.json"
    zero.symlink_to("/dev/zero")
    assert config_problem(zero) == "is not a regular file but a device"
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    assert config_problem(fifo) == "is not a regular file but a FIFO"
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(MAX_CONFIG_BYTES + 1)
    assert config_problem(big).startswith(f"is {MAX_CONFIG_BYTES + 1:,} bytes, not a run's settings")
    (tmp_path / "dir.json").mkdir()
    assert config_problem(tmp_path / "dir.json") == "is a folder, not a file"
