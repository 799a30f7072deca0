"""Training on tiny generated shards (CPU): runs, resumes exactly, parallel modes agree,
guards against NaN and a loss stuck at chance."""

from __future__ import annotations

import importlib.util
import dataclasses
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from alexnet_cli.checkpoint import load_checkpoint, load_model
from alexnet_cli.cli.app import app
from alexnet_cli.cli.flags import flag_message
from alexnet_cli.config import resolve_model_config, resolve_train_config
from alexnet_cli.model import AlexNet, WithinMapNorm
from alexnet_cli.optim import PaperSGD, param_groups
from alexnet_cli.pca import compute_pca, write_pca
from alexnet_cli.prep import PrepOptions, prepare
from alexnet_cli.shards import read_manifest
from alexnet_cli.synth import make_tree
from alexnet_cli.train import RunOptions, train
from test_docs import check_documented_json

runner = CliRunner()
FAST = ["--device", "cpu", "--batch-size", "8", "--log-every", "1"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


@pytest.fixture(scope="module")
def step_run(tiny_data, tmp_path_factory) -> SimpleNamespace:
    """`train tiny_data --out RUN --max-steps 1 FAST --json`, run once: the first run of the
    tests that go on from it (resume it, refuse to, damage it). `.run` is its folder, READ-ONLY
    (take a copy with _copy_run), `.result` the CliRunner result (--json changes only what is
    printed on stdout: the run folder, and stderr, are those of the run without it)."""
    out = tmp_path_factory.mktemp("step_run") / "run"
    result = runner.invoke(app, ["train", str(tiny_data), "--out", str(out), "--max-steps", "1", *FAST, "--json"])
    assert result.exit_code == 0, result.output
    return SimpleNamespace(run=out, result=result)


def _copy_run(run: Path, to: Path) -> Path:
    """A real copy of a run folder (tests edit its files in place): the state a test's own
    first run would have left in `to`."""
    return Path(shutil.copytree(run, to))


@pytest.fixture(scope="module")
def epoch_run(small_data, tmp_path_factory) -> SimpleNamespace:
    """`train small_data --out RUN --epochs 1 FAST --json`, run once (4 steps and a validation):
    `.run` the finished run's folder, READ-ONLY (take a copy with _copy_run), `.result` the
    CliRunner result."""
    out = tmp_path_factory.mktemp("epoch_run") / "run"
    result = runner.invoke(app, ["train", str(small_data), "--out", str(out), "--epochs", "1", *FAST, "--json"])
    assert result.exit_code == 0, result.output
    return SimpleNamespace(run=out, result=result)


def test_a_short_run_writes_the_run_folder(epoch_run):
    out, result = epoch_run.run, epoch_run.result                      # read only
    summary = json.loads(result.stdout)
    check_documented_json("train", summary)
    assert summary["epochs"] == 1 and summary["parallel"] == "single"
    assert (out / "checkpoints" / "last.pt").exists() and (out / "checkpoints" / "best.pt").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"] == "paper" and config["model"]["num_classes"] == 4
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(steps) == summary["step"] and {"loss", "lr", "images_per_s"} <= steps[0].keys()
    assert len(epochs) == 1 and 0.0 <= epochs[0]["val_top1_error"] <= 1.0
    assert {"train_top1_error", "train_top5_error", "val_top5_error", "time_s"} <= epochs[0].keys()
    # the checkpoint describes itself and loads with weights_only into a single-device model
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    model = AlexNet(num_classes=4)
    model.load_state_dict(ckpt["model"])
    assert ckpt["classes"] == sorted(ckpt["classes"]) and ckpt["mean_image"].shape == (256, 256, 3)
    assert load_model(out / "checkpoints" / "best.pt").model.config.num_classes == 4
    best = load_checkpoint(out / "checkpoints" / "best.pt")
    assert "optimizer" not in best and all(torch.equal(best["model"][k], v) for k, v in ckpt["model"].items())


def test_loss_falls_on_a_fixed_batch():
    # bias 0.1 (Caffe's): with the paper's bias 1 a net this small overshoots, then sits at
    # chance for a while, which is the stuck-loss case tested below
    torch.manual_seed(0)
    model = AlexNet(num_classes=4, dropout=0.0, bias_fill=0.1)
    cfg = resolve_train_config("paper")
    opt = PaperSGD(param_groups({n: [p] for n, p in model.named_parameters()}, cfg), lr=cfg.lr)
    y = torch.tensor([0, 1, 2, 3])
    x = torch.randn(4, 3, 224, 224) * 20 + 40 * (torch.arange(3)[None, :, None, None] == y[:, None, None, None])
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def _train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "alexnet_cli", "train", str(data), "--out", str(out), "--epochs", "2",
            "--batch-size", "8", "--device", "cpu", "--save-every", "2", "--log-every", "1", "--workers", "1",
            *extra]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """32 training images (4 steps of 8 per epoch) and 8 validation images, raw shards: for the
    tests that train whole epochs (tiny_data's are 6 steps and 16 validation images)."""
    root = tmp_path_factory.mktemp("kill")
    tree = make_tree(root / "tree", classes=4, train_per_class=8, val_per_class=2)
    prepare(tree, root / "data", PrepOptions(format="raw", shard_size=16, block_size=8, workers=1))
    write_pca(root / "data", compute_pca(root / "data"))
    return root / "data"


@pytest.fixture(scope="module")
def one_step_data(tmp_path_factory) -> Path:
    """8 training images (an epoch is one step of 8, or four of 2) and 4 validation images, raw
    shards: for the tests of what happens at and between steps and epochs, whatever the images."""
    root = tmp_path_factory.mktemp("one_step")
    tree = make_tree(root / "tree", classes=4, train_per_class=2, val_per_class=1)
    prepare(tree, root / "data", PrepOptions(format="raw", shard_size=16, block_size=8, workers=1))
    write_pca(root / "data", compute_pca(root / "data"))
    return root / "data"


def test_every_step_is_logged_even_in_a_run_shorter_than_log_every(one_step_data, tmp_path, monkeypatch):
    """An interval ends every --log-every steps and at an epoch's or the run's last step, so a
    short run's loss and images/s are in metrics.jsonl (the audit's --max-steps 3 run with the
    default 50 logged nothing, and report showed 0m00s); each record's loss is the mean of its
    own steps' losses. 4 steps an epoch (8 images in batches of 2), --log-every 3, --max-steps 5:
    records at 3, 4 and 5."""
    from alexnet_cli.report import read_run
    from alexnet_cli.runlog import read_metrics
    from alexnet_cli.train_state import EpochStats

    losses = []
    update = EpochStats.update
    monkeypatch.setattr(EpochStats, "update", lambda self, logits, labels, loss: (
        losses.append(float(loss)), update(self, logits, labels, loss)))
    out = tmp_path / "run"
    args = ["train", str(one_step_data), "--out", str(out), "--device", "cpu", "--batch-size", "2", "--epochs", "2",
            "--log-every", "3", "--max-steps", "5"]
    assert runner.invoke(app, args).exit_code == 0
    steps = [r for r in read_metrics(out) if r["kind"] == "train"]
    assert [(r["step"], r["epoch"]) for r in steps] == [(3, 1), (4, 1), (5, 2)]
    for r, (a, b) in zip(steps, ((0, 3), (3, 4), (4, 5))):
        assert r["loss"] == pytest.approx(sum(losses[a:b]) / (b - a), rel=1e-5) and r["images_per_s"] > 0
    report = read_run(out)
    assert report.step == 5 and report.images_per_s > 0 and report.time_s > 0
    # continued to step 8: the interval after the stop holds step 6 alone, then 7 and 8
    assert runner.invoke(app, [*args[:-1], "8", "--resume"]).exit_code == 0
    steps = [r for r in read_metrics(out) if r["kind"] == "train"]
    assert [r["step"] for r in steps] == [3, 4, 5, 6, 8]
    for r, (a, b) in zip(steps[3:], ((5, 6), (6, 8))):
        assert r["loss"] == pytest.approx(sum(losses[a:b]) / (b - a), rel=1e-5)


def test_resume_after_sigkill_is_bitwise_exact(small_data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    # the uninterrupted run and the one to be killed side by side, a core each
    straight = subprocess.Popen(_train_cmd(small_data, clean), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    proc = subprocess.Popen(_train_cmd(small_data, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 240
    # kill it in the middle of the first epoch (4 steps): the last save (every 2 steps) is
    # behind it, so the resumed run also replays the steps after that save and drops their
    # logged lines, then crosses into the second epoch
    while time.time() < deadline:
        if metrics.exists() and metrics.read_text().count('"train"') >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kinds = [json.loads(line)["kind"] for line in metrics.read_text().splitlines()]
    assert kinds.count("epoch") < 2, "finished before the kill"
    _, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err[-3000:]
    done = subprocess.run(_train_cmd(small_data, killed, "--resume"), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    a, b = _weights(clean), _weights(killed)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from the clean one"
    # each step is logged once, as in the clean run
    assert (clean / "metrics.jsonl").read_text().count('"train"') == metrics.read_text().count('"train"') == 8


def test_rerun_without_resume_refuses_to_overwrite(tiny_data, step_run, tmp_path):
    out = _copy_run(step_run.run, tmp_path / "run")
    args = ["train", str(tiny_data), "--out", str(out), "--max-steps", "1", *FAST]
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "--resume" in again.output


def test_model_parallel_on_cpu_cpu_equals_single(tiny_data, tmp_path, monkeypatch):
    """The two-column scheme trains like the grouped convolutions. Compared in float64 (the
    network's weights and the augmented batches), so that the result does not depend on the
    CPU's vector unit: in float32 the two modes sum the same products in other orders, which
    on a host with AVX2 only left conv1 1.6e-5 of its largest weight apart after one step
    (issue 21, F20). The one float32 quantity left is the loss's gradient (cross_entropy of
    logits.float()), so the bound is 100 float32 eps of the step, plus one float64 rounding of
    the weights; a wiring error (a lost gradient, weight decay or learning rate) is at least
    ~1e-3 of the step (one step's weight decay: lr x 5e-4 x w)."""
    from alexnet_cli.augment import TrainAugment

    augment = TrainAugment.__call__
    monkeypatch.setattr(TrainAugment, "__call__", lambda self, *a, **k: augment(self, *a, **k).double())
    common = dict(data_dir=tiny_data, model_cfg=resolve_model_config("paper", dropout=0.0),
                  train_cfg=resolve_train_config("paper", batch_size=8, epochs=1, pca_aug=False))
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)                # the network is built in float64
    try:
        for mode, run in (("single", RunOptions(device="cpu", max_steps=2, workers=1, log_every=1)),
                          ("model", RunOptions(parallel="model", devices=("cpu", "cpu"), max_steps=2, workers=1,
                                               log_every=1))):
            train(out_dir=tmp_path / mode, run=run, **common)
            if mode == "single":
                torch.manual_seed(0)                      # the trainer's initial weights (seed 0)
                start = AlexNet(num_classes=4, dropout=0.0).state_dict()
    finally:
        torch.set_default_dtype(before)
    a, b = (torch.load(tmp_path / m / "checkpoints" / "last.pt", weights_only=True)["model"] for m in ("single", "model"))
    assert a.keys() == b.keys() == start.keys() and a["conv1.weight"].dtype == torch.float64
    eps32, eps64 = torch.finfo(torch.float32).eps, torch.finfo(torch.float64).eps
    for k in a:
        step = (a[k] - start[k]).abs().max()
        assert step > 0, k                                 # every tensor learned
        bound = 100 * eps32 * step + eps64 * start[k].abs().max()
        assert (a[k] - b[k]).abs().max() <= bound, (k, float((a[k] - b[k]).abs().max() / step))


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(tiny_data), "--out", str(out), "--lr", "1e12", "--save-every", "1",
                                 "--epochs", "1", *FAST])
    assert result.exit_code == 1
    assert "NaN" in result.output and "Traceback" not in result.output
    last = out / "checkpoints" / "last.pt"
    if last.exists():                   # what was saved is a usable network: finite weights and outputs
        assert all(torch.isfinite(v).all() for v in _weights(out).values()) and _outputs_finite(last)
    else:
        assert "no checkpoint was written" in result.stderr


def test_stuck_loss_warns_once(tiny_data, tmp_path):
    result = runner.invoke(app, ["train", str(tiny_data), "--out", str(tmp_path / "run"), "--lr", "1e-12",
                                 "--bias-init", "0.1", "--max-steps", "4", "--stuck-steps", "2", *FAST])
    assert result.exit_code == 0, result.output
    assert result.output.count("stayed at chance") == 1
    assert f"ln 4 = {math.log(4):.2f}" in result.output


def test_missing_pca_says_what_to_do(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "pca.json").unlink()
    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), "--max-steps", "1", *FAST])
    assert result.exit_code == 1 and "alexnet pca" in result.output
    ok = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "run2"), "--max-steps", "1",
                             "--no-pca-aug", *FAST])
    assert ok.exit_code == 0, ok.output


def test_ablations_and_recipe_are_recorded(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(tiny_data), "--out", str(out), "--max-steps", "1", "--recipe", "code",
                                 "--no-lrn", "--pool", "2", "--activation", "tanh", "--dropout", "0",
                                 "--columns", "1", *FAST])
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    model = ckpt["config"]["model"]
    assert ckpt["config"]["recipe"] == "code" and ckpt["config"]["train"]["aug_chunk"] == 32
    assert (model["lrn"], model["pool_kernel"], model["activation"], model["dropout"], model["columns"]) == \
        (False, 2, "tanh", 0.0, 1)
    assert model["within_map_norm"] is True
    rebuilt = load_model(out / "checkpoints" / "last.pt").model
    assert rebuilt.conv1.out_channels == 48 and isinstance(rebuilt.act, torch.nn.Tanh)
    # the code recipe's network comes back from the checkpoint alone, and evaluates
    assert isinstance(rebuilt.rnorm2, WithinMapNorm) and rebuilt.conv1_pad == (0, 3, 0, 3)
    assert rebuilt.config.conv1_order == "code" and rebuilt.config.lrn is False
    evaluated = runner.invoke(app, ["eval", str(out / "checkpoints" / "last.pt"), str(tiny_data), "--device", "cpu",
                                    "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["n"] == 16


def test_data_parallel_with_gloo_two_processes(small_data, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as s:                     # a free port: another suite on this machine may run it too
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(Path(__file__).with_name("ddp_worker.py")), str(small_data), str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    main, other = (json.loads((out / f"ddp_report_{r}.json").read_text()) for r in (0, 1))
    assert main["world_size"] == 2 and main["summary"]["parallel"] == "data"
    assert main["rank_sums"][0] == main["rank_sums"][1], "ranks disagree on the weights"
    assert (main["summary"]["rank"], other["summary"]["rank"]) == (0, 1)
    assert main["said"] and other["said"] == []                     # rank 0 alone reports
    assert sorted(p.name for p in (out / "straight" / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    # stopped after one step and resumed: the same weights and the same epoch counts, summed
    # over both ranks (last.pt holds the sums so far, not rank 0's own)
    assert main["resumed_sums"] == main["sums"]
    assert main["resumed_counts"] == main["counts"] == other["counts"]
    assert sum(main["counts"][0][0]) == read_manifest(small_data).split("train").count   # every image once
    assert main["diverged"] == other["diverged"] == "diverged before step 2"   # a NaN on rank 1 stops both
    # Ctrl-C on rank 1 during step 1: both ranks stop at the next log step, saved there, and both
    # name the signal (rank 0, which speaks, had none itself)
    assert main["stopped"]["stopped"] == other["stopped"]["stopped"] == "at step 2"
    assert main["stopped"]["saved_step"] == other["stopped"]["saved_step"] == 2
    assert (main["stopped"]["signum"], other["stopped"]["signum"]) == (signal.SIGINT, signal.SIGINT)
    assert main["stopped"]["message"].startswith("Ctrl-C: stopped at step 2 (in epoch 1, batch 2) and saved ")
    # rank 1's signal handler says when it stops, its setting named by the reporter given (a Python one here:
    # as the library writes it; the CLI's shows --log-every)
    assert "Ctrl-C: training stops at the next log step (`log_every`) and saves where it is" in done.stderr


def test_bad_run_options_give_one_error_line(tiny_data, tmp_path):
    base = ["train", str(tiny_data), "--out", str(tmp_path / "run"), "--batch-size", "8"]
    for extra, words in ((["--log-every", "0"], "--log-every"), (["--workers", "-2"], "--workers"),
                         (["--max-steps", "-1"], "--max-steps"), (["--device", "foo"], "unknown device"),
                         (["--parallel", "data"], "torchrun"), (["--momentum", "5"], "momentum"),
                         (["--parallel", "model", "--devices", "cpu"], "two devices"),
                         (["--parallel", "model", "--devices", "cpu,cpu", "--columns", "1"], "two-column"),
                         (["--lrn-kernel", "fastest"], "--lrn-kernel"),
                         (["--compile-mode", "reduce-overhead"], "needs --compile"),
                         (["--compile", "--compile-mode", "fast"], "--compile-mode")):
        result = runner.invoke(app, base + extra)
        assert result.exit_code == 2, (extra, result.output)   # docs/public-surface.md: bad usage
        assert "Error:" in result.output and words in result.output and "Traceback" not in result.output, extra


def test_resume_refuses_another_seed(tiny_data, step_run, tmp_path):
    args = ["train", str(tiny_data), "--out", str(_copy_run(step_run.run, tmp_path / "run")), "--max-steps", "1", *FAST]
    again = runner.invoke(app, args + ["--resume", "--seed", "5"])
    assert again.exit_code == 1 and "--seed" in again.output


def test_resume_of_a_run_older_than_a_setting_takes_its_default(tiny_data, step_run, tmp_path):
    """A checkpoint written before a config field existed resumes when the field has its default,
    and is refused when it does not."""
    from alexnet_cli.checkpoint import save_checkpoint

    out = _copy_run(step_run.run, tmp_path / "run")                # trained to step 1
    base = ["train", str(tiny_data), "--out", str(out), *FAST]
    last = out / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last)
    del ckpt["config"]["train"]["code_epoch_base"]            # as if written by an older version
    save_checkpoint(last, ckpt)
    refused = runner.invoke(app, [*base, "--max-steps", "2", "--resume", "--code-epoch-base", "1"])
    assert refused.exit_code == 1 and "other train settings (--code-epoch-base 0, not 1)" in refused.output
    resumed = runner.invoke(app, [*base, "--max-steps", "2", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(last)["trainer"]["step"] == 2


@pytest.mark.gpu
def test_cuda_training_steps_do_not_sync_with_the_host(tiny_data, tmp_path):
    """Between log lines a CUDA step queues its work and returns: no host-device sync
    (torch.cuda.set_sync_debug_mode raises on any synchronising call)."""
    from alexnet_cli.progress import NullReporter
    from alexnet_cli.train import Trainer

    run = RunOptions(device="cuda", log_every=10**6, max_steps=6)
    trainer = Trainer(tiny_data, tmp_path / "run", resolve_model_config("paper"),
                      resolve_train_config("paper", batch_size=8, epochs=1), run, "paper", NullReporter())
    trainer._prepare_run_dir()
    batches = trainer.train_loader.epoch(0)
    next(batches)   # the loader's first batch (and lazy CUDA init) before the check
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            batch = next(batches)
            x = trainer.augment(batch.images, torch.Generator(device="cuda").manual_seed(0))
            logits, loss = trainer.train_step(x, batch.labels)
            trainer.state.stats.update(logits, batch.labels, loss)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    batches.close()


def test_the_check_before_a_save_keeps_finite_weights_whose_sum_overflows(tiny_data, tmp_path, monkeypatch):
    """The weights' check sums each tensor (cheap); a sum that overflows is rechecked value by
    value: huge finite weights are saved, one NaN among them stops the run without saving."""
    from alexnet_cli.errors import TrainingDiverged
    from alexnet_cli.progress import NullReporter
    from alexnet_cli.train import Trainer

    trainer = Trainer(tiny_data, tmp_path / "run", resolve_model_config("paper"),
                      resolve_train_config("paper", batch_size=8, epochs=1), RunOptions(device="cpu"), "paper",
                      NullReporter())
    trainer._prepare_run_dir()
    monkeypatch.setattr(trainer, "_outputs_bad", lambda: torch.tensor(False))   # the weights' rule alone
    weight = trainer.replica.net.fc6.weight
    with torch.no_grad():
        weight[0, :4] = 3e38
    assert torch.isinf(weight.sum())
    trainer._check_finite(before_save=True)                     # finite: no error
    with torch.no_grad():
        weight[1, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match="^the weights became NaN or infinite by step 0"):
        trainer._check_finite(before_save=True)


def test_fit_trains_each_epoch_with_the_schedules_rates_and_noise(one_step_data, tmp_path, monkeypatch):
    """The code schedule squeezed into 3 epochs (boundaries round(e * 3 / 91)): epoch 0 at 0.01,
    epoch 1 at 0.001, epoch 2 at 1e-4 with conv1 frozen and the colour noise off; biases 0.02.
    Checked where the optimizer and the augmentation receive them, and in metrics.jsonl."""
    from alexnet_cli.runlog import read_metrics
    from alexnet_cli.train import Trainer

    seen = []
    original = Trainer.train_epoch

    def spy(self, epoch, *, color_noise):
        seen.append((epoch, color_noise, {g["name"]: g["lr"] for g in self.optimizer.param_groups}))
        return original(self, epoch, color_noise=color_noise)

    monkeypatch.setattr(Trainer, "train_epoch", spy)
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(one_step_data), "--out", str(out), "--recipe", "code", "--epochs", "3",
                                 "--device", "cpu", "--batch-size", "8", "--log-every", "1"])
    assert result.exit_code == 0, result.output
    assert [(e, noise) for e, noise, _ in seen] == [(0, True), (1, True), (2, False)]
    for (_, _, lr), weights, conv1 in zip(seen, (1e-2, 1e-3, 1e-4), (1e-2, 1e-3, 0.0)):
        assert lr["fc6.weight"] == pytest.approx(weights) and lr["conv3.weight"] == pytest.approx(weights)
        assert lr["conv1.weight"] == pytest.approx(conv1) and lr["fc8.bias"] == pytest.approx(0.02)
    epochs = [r for r in read_metrics(out) if r["kind"] == "epoch"]
    assert [r["lr"] for r in epochs] == pytest.approx([1e-2, 1e-3, 1e-4])


@pytest.mark.slow
def test_compiled_network_matches_eager_in_float64():
    """What `--compile` runs: torch.compile traces the network, and the LRN as the reference ops
    (`--lrn-kernel auto`), where eager mode uses the fused autograd function. In float64 both
    give the same loss and gradients to rounding (in float32 the tiny, cancelling gradients of a
    network at initialisation differ by up to 1% between the two: rounding, not semantics)."""
    torch.manual_seed(0)
    net = AlexNet(num_classes=4, dropout=0.0).double().train()
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 60
    y = torch.tensor([0, 3])

    def loss_and_grads(forward):
        net.zero_grad()
        loss = torch.nn.functional.cross_entropy(forward(x), y)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in net.named_parameters()}

    eager_loss, eager = loss_and_grads(net)
    compiled_loss, compiled = loss_and_grads(torch.compile(net))
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-12)
    for name, g in eager.items():
        assert (compiled[name] - g).abs().max() <= 1e-10 * g.abs().max(), name


def test_trainer_compiles_the_network_with_the_mode_asked_for(tiny_data, tmp_path, monkeypatch):
    from alexnet_cli.progress import NullReporter
    from alexnet_cli.train import Trainer

    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, mode: calls.append(mode) or model)
    for mode in ("default", "reduce-overhead"):
        trainer = Trainer(tiny_data, tmp_path / mode, resolve_model_config("paper"),
                          resolve_train_config("paper", batch_size=8),
                          RunOptions(device="cpu", compile=True, compile_mode=mode), "paper", NullReporter())
        assert trainer.replica.module is trainer.replica.net
    assert calls == ["default", "reduce-overhead"]


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_triton_lrn_kernel_trains_like_the_fused_one_on_cuda(tiny_data, tmp_path):
    """`--lrn-kernel triton` through the whole CUDA training step (fp32, dropout 0): the same
    logged losses as the default kernel, up to float32 rounding."""
    from alexnet_cli.runlog import read_metrics

    losses = {}
    for kernel in ("auto", "triton"):
        out = tmp_path / kernel
        train(tiny_data, out, resolve_model_config("paper", dropout=0.0),
              resolve_train_config("paper", batch_size=8, epochs=1),
              RunOptions(device="cuda", bf16=False, max_steps=3, log_every=1, lrn_kernel=kernel))
        losses[kernel] = [r["loss"] for r in read_metrics(out) if r["kind"] == "train"]
    assert len(losses["triton"]) == 3
    assert losses["triton"] == pytest.approx(losses["auto"], rel=1e-4)


def test_train_leaves_no_process_group_behind_under_torchrun(tiny_data, tmp_path, monkeypatch):
    """Under torchrun, `train` destroys the process group it joined when it returns, and when it
    fails: left to the interpreter's exit, gloo's threads can abort a finished run (SIGABRT)."""
    import torch.distributed as dist

    from alexnet_cli import distributed, train as train_module
    from alexnet_cli.errors import DataError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "LOCAL_RANK": "0",
                       "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(key, value)
    for module in (distributed, train_module):   # a one-process "torchrun" (WORLD_SIZE 1 reads as none)
        monkeypatch.setattr(module, "launched_by_torchrun", lambda: True)
    run = RunOptions(device="cpu", parallel="data", max_steps=1, workers=1)
    summary = train(tiny_data, tmp_path / "run", resolve_model_config("paper"),
                    resolve_train_config("paper", batch_size=8, epochs=1), run)
    assert summary["parallel"] == "data" and summary["step"] == 1
    assert not dist.is_initialized()
    with pytest.raises(DataError):
        train(tmp_path, tmp_path / "run2", resolve_model_config("paper"), resolve_train_config("paper"), run)
    assert not dist.is_initialized()


def test_one_process_modes_are_refused_under_torchrun(monkeypatch):
    """Under torchrun every process of --parallel single or model would act as rank 0 and
    write the same run folder."""
    from alexnet_cli import train as train_module
    from alexnet_cli.errors import UsageError

    monkeypatch.setattr(train_module, "launched_by_torchrun", lambda: True)
    assert train_module.resolve_parallel(RunOptions(parallel="auto")) == "data"
    for mode in ("single", "model"):
        with pytest.raises(UsageError, match="under torchrun use `parallel` data"):
            train_module.resolve_parallel(RunOptions(parallel=mode))


def test_only_rank_0_prints_the_result(tiny_data, tmp_path, monkeypatch):
    result = {"epochs": 1, "step": 3, "finished": True, "best_top1_error": 0.25, "best_split": "train", "run_dir": str(tmp_path),
              "parallel": "data", "device": "cpu", "rank": 1}
    monkeypatch.setattr("alexnet_cli.train.train", lambda *a, **k: result)
    args = ["train", str(tiny_data), "--out", str(tmp_path / "run")]
    for extra in ([], ["--json"]):
        got = runner.invoke(app, args + extra)
        assert got.exit_code == 0 and got.stdout == "", got.output
    result["rank"] = 0
    assert json.loads(runner.invoke(app, args + ["--json"]).stdout)["rank"] == 0
    assert "best train top-1 error 25.00%" in runner.invoke(app, args).stdout


def test_out_must_be_new_empty_or_a_run(tiny_data, step_run, tmp_path):
    """A folder of other files is never overwritten, with or without --resume."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}')
    (mine / "metrics.jsonl").write_text("keep me\n")
    for extra in ([], ["--resume"]):
        result = runner.invoke(app, ["train", str(tiny_data), "--out", str(mine), "--max-steps", "1", *FAST, *extra])
        assert result.exit_code == 1 and "not a training run's folder" in result.stderr, result.output
    assert (mine / "metrics.jsonl").read_text() == "keep me\n" and "settings" in (mine / "config.json").read_text()
    notes = tmp_path / "notes"                   # other files, no config.json at all
    notes.mkdir()
    (notes / "todo.txt").write_text("x")
    result = runner.invoke(app, ["train", str(tiny_data), "--out", str(notes), "--max-steps", "1", *FAST])
    assert result.exit_code == 1 and "todo.txt" in result.stderr, result.output
    scratch = tmp_path / "scratch"             # checkpoints/ made ahead as a link to scratch space: accepted
    scratch.mkdir()
    for name, make in (("dotfiles", lambda d: (d / ".DS_Store").write_text("x")),          # harmless: accepted
                       ("linked", lambda d: (d / "checkpoints").symlink_to(scratch, target_is_directory=True)),
                       ("theirs", lambda d: ((d / "checkpoints").mkdir(), (d / "checkpoints" / "my.pt").write_text(""))),
                       ("blank", lambda d: (d / "config.json").write_text("{}"))):
        folder = tmp_path / name
        folder.mkdir()
        make(folder)
        got = runner.invoke(app, ["train", str(tiny_data), "--out", str(folder), "--max-steps", "1", *FAST])
        assert got.exit_code == (0 if name in ("dotfiles", "linked") else 1), (name, got.output)
    assert (scratch / "last.pt").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert runner.invoke(app, ["train", str(tiny_data), "--out", str(empty), "--max-steps", "1", *FAST]).exit_code == 0
    (empty / "per_class.csv").write_text("eval's output, kept beside the run\n")   # a run's folder stays one
    again = runner.invoke(app, ["train", str(tiny_data), "--out", str(empty), "--max-steps", "2", "--resume", *FAST])
    assert again.exit_code == 0, again.output
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (afile, afile / "sub"):
        result = runner.invoke(app, ["train", str(tiny_data), "--out", str(out), *FAST])
        assert result.exit_code == 2 and "is a file" in result.stderr, result.output
    lone = tmp_path / "lone"                       # a metrics.jsonl without a run's config.json is not ours
    lone.mkdir()
    (lone / "metrics.jsonl").write_text('{"my": "log"}\n')
    result = runner.invoke(app, ["train", str(tiny_data), "--out", str(lone), "--max-steps", "1", *FAST])
    assert result.exit_code == 1 and (lone / "metrics.jsonl").read_text() == '{"my": "log"}\n'
    killed = _copy_run(step_run.run, tmp_path / "killed")   # a run stopped before its first checkpoint starts again
    (killed / "checkpoints" / "last.pt").unlink()
    again = runner.invoke(app, ["train", str(tiny_data), "--out", str(killed), "--max-steps", "1", *FAST])
    assert again.exit_code == 0 and "before its first checkpoint" in again.stderr, again.output


def test_resume_without_a_checkpoint_says_it_starts_anew(tiny_data, tmp_path):
    result = runner.invoke(app, ["train", str(tiny_data), "--out", str(tmp_path / "typo"), "--max-steps", "1",
                                 "--resume", *FAST])
    assert result.exit_code == 0 and "nothing to resume" in result.stderr, result.output


def test_resume_refuses_other_training_data(tiny_data, step_run, tmp_path):
    args = ["train", str(tiny_data), "--out", str(_copy_run(step_run.run, tmp_path / "run")), "--max-steps", "1", *FAST]
    moved = tmp_path / "moved"                       # the same shards elsewhere: fine
    shutil.copytree(tiny_data, moved)
    again = runner.invoke(app, ["train", str(moved), *args[2:], "--resume", "--max-steps", "2"])
    assert again.exit_code == 0, again.output
    manifest = json.loads((moved / "manifest.json").read_text())
    name = manifest["splits"]["train"]["shards"][0]
    manifest["shards"][name]["sha256"] = "0" * 64   # other shards under the same names
    (moved / "manifest.json").write_text(json.dumps(manifest))
    other = runner.invoke(app, ["train", str(moved), *args[2:], "--resume", "--max-steps", "3"])
    assert other.exit_code == 1 and "other data" in other.stderr, other.output


def test_a_run_cut_by_max_steps_says_stopped(tiny_data, step_run, tmp_path):
    args = ["train", str(tiny_data), "--out", str(_copy_run(step_run.run, tmp_path / "run")), "--max-steps", "1", *FAST]
    result = step_run.result                                          # the run of `args` with --json
    assert result.exit_code == 0 and json.loads(result.stdout)["finished"] is False
    again = runner.invoke(app, args[:-len(FAST)] + ["--max-steps", "2", "--resume", *FAST])
    assert again.exit_code == 0 and again.stdout.startswith("stopped: 0 epochs, 2 steps"), again.stdout


def test_devices_must_name_two(tiny_data, tmp_path):
    """A typo in --devices must not quietly mean one device."""
    for devices in ("cpu,cpu,", "cpu,cpu,cpu", "cpu"):
        result = runner.invoke(app, ["train", str(tiny_data), "--out", str(tmp_path / "r"), "--devices", devices,
                                     "--max-steps", "1", *FAST])
        assert result.exit_code == 2 and "--devices takes two devices" in result.stderr, (devices, result.output)


# ---------------------------------------------------------------- hostile input (issue 21)


def test_a_second_train_on_the_same_out_fails_at_once(tiny_data, tmp_path):
    """F9: a run folder in use is locked; a lock left by a SIGKILLed run blocks nothing."""
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from alexnet_cli.runlog import RunLock; "
                               "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)",
                               str(out)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = runner.invoke(app, ["train", str(tiny_data), "--out", str(out), "--max-steps", "1", *FAST])
        assert second.exit_code == 1 and "in use by another `alexnet train`" in second.stderr, second.output
        assert f"process {holder.pid}" in second.stderr
        assert sorted(p.name for p in out.iterdir()) == [".lock"]          # nothing read or written
    finally:
        holder.kill()                                                     # SIGKILL: no clean-up at all
        holder.wait()
    first = runner.invoke(app, ["train", str(tiny_data), "--out", str(out), "--max-steps", "1", *FAST])
    assert first.exit_code == 0, first.output
    resumed = runner.invoke(app, ["train", str(tiny_data), "--out", str(out), "--max-steps", "2", "--resume", *FAST])
    assert resumed.exit_code == 0, resumed.output


def test_a_run_that_fails_before_writing_leaves_no_folder(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "pca.json").unlink()
    out = tmp_path / "new" / "deeper" / "run"
    result = runner.invoke(app, ["train", str(data), "--out", str(out), "--max-steps", "1", *FAST])
    assert result.exit_code == 1 and not (tmp_path / "new").exists()     # nor the folders made above it


@pytest.mark.parametrize("extra", [["--lr", "inf"], ["--lr", "nan"], ["--weight-decay", "inf"],
                                   ["--momentum", "nan"], ["--bias-lr-mult", "inf"], ["--bias-init", "nan"],
                                   ["--dropout", "nan"], ["--init-std-conv345", "inf"],
                                   ["--seed", "-1"], ["--seed", str(10**20)], ["--device", "meta"]])


def test_out_of_range_settings_are_bad_usage_before_anything_is_written(tiny_data, tmp_path, extra):
    """F8, F6: a non-finite number or a seed no generator takes is exit 2, one line, nothing written."""
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(tiny_data), "--out", str(out), "--max-steps", "1", *FAST, *extra])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert extra[0] in result.stderr or "device" in result.stderr
    assert not out.exists()


def _outputs_finite(path: Path) -> bool:
    model = load_model(path).model
    with torch.no_grad():
        return bool(torch.isfinite(model(torch.randn(2, 3, 224, 224) * 50)).all())


def test_nan_guard_never_saves_a_network_with_non_finite_outputs(tiny_data, tmp_path):
    """F8: one step at --lr 1e30 leaves finite weights whose outputs overflow: not saved."""
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(tiny_data), "--out", str(out), "--lr", "1e30", "--max-steps", "1",
                                 *FAST])
    assert result.exit_code == 1, result.output
    assert "outputs became NaN or infinite" in result.stderr and "no checkpoint was written" in result.stderr
    assert not (out / "checkpoints" / "last.pt").exists()


def test_nan_guard_names_the_last_good_checkpoint(one_step_data, tmp_path, monkeypatch):
    """F8: weights that turn NaN after step 2 are never saved; last.pt stays step 2's, and the
    message says so. (An epoch of 4 steps: 8 images in batches of 2.)"""
    from alexnet_cli.train import Trainer

    step = Trainer.train_step

    def poisoned(self, x, y):
        out = step(self, x, y)
        if self.state.pos.step == 2:               # the third step: its weights become NaN
            with torch.no_grad():
                self.replica.net.fc6.weight[0, 0] = float("nan")
        return out
    monkeypatch.setattr(Trainer, "train_step", poisoned)
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(one_step_data), "--out", str(out), "--save-every", "1", "--epochs", "1",
                                 *FAST, "--batch-size", "2"])
    assert result.exit_code == 1, result.output
    assert "weights became NaN or infinite by step 3" in result.stderr
    assert "the last good checkpoint (step 2) is kept" in result.stderr
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["trainer"]["step"] == 2 and _outputs_finite(out / "checkpoints" / "last.pt")


def test_resume_checks_the_pca_and_the_mean_image(tiny_data, tmp_path):
    """F10: --resume after pca.json or the mean image changed would give other weights."""
    import numpy as np

    from alexnet_cli.pca import read_pca, write_pca
    from alexnet_cli.shards import read_manifest

    data, out = tmp_path / "data", tmp_path / "run"
    shutil.copytree(tiny_data, data)
    args = ["train", str(data), "--out", str(out), *FAST]
    assert runner.invoke(app, [*args, "--max-steps", "1"]).exit_code == 0
    pca = (data / "pca.json").read_bytes()
    stats = read_pca(data)
    stats.eigenvalues = [2 * v for v in stats.eigenvalues]
    write_pca(data, stats, overwrite=True)
    refused = runner.invoke(app, [*args, "--max-steps", "2", "--resume"])
    assert refused.exit_code == 1 and "the PCA (pca.json)" in refused.stderr, refused.output
    (data / "pca.json").write_bytes(pca)
    mean_path = data / read_manifest(data).mean_image
    mean = np.load(mean_path)
    np.save(mean_path, mean + 1)
    refused = runner.invoke(app, [*args, "--max-steps", "2", "--resume"])
    assert refused.exit_code == 1 and "the mean image" in refused.stderr, refused.output
    np.save(mean_path, mean)
    assert runner.invoke(app, [*args, "--max-steps", "2", "--resume"]).exit_code == 0


def test_resume_from_a_checkpoint_without_training_state_says_so(small_data, epoch_run, tmp_path):
    out = _copy_run(epoch_run.run, tmp_path / "run")                   # trained for --epochs 1
    args = ["train", str(small_data), "--out", str(out), *FAST]
    shutil.copy(out / "checkpoints" / "best.pt", out / "checkpoints" / "last.pt")
    result = runner.invoke(app, [*args, "--epochs", "2", "--resume"])
    assert result.exit_code == 1 and "no training state" in result.stderr and "KeyError" not in result.stderr


def test_a_full_disk_during_a_save_is_one_line_and_resume_continues(tiny_data, step_run, tmp_path, monkeypatch):
    """F12: ENOSPC inside torch.save (which torch reports as "unexpected pos") is said as a full
    disk, leaves no temporary file, and --resume continues from the checkpoint before."""
    import errno

    from alexnet_cli import checkpoint

    class FullDisk:
        def __init__(self, f):
            self.f, self.left = f, 200_000
        def write(self, b):
            self.left -= len(b)
            if self.left < 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.f.write(b)
        def __getattr__(self, name):
            return getattr(self.f, name)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self.f.close()

    out = _copy_run(step_run.run, tmp_path / "run")                # trained to step 1
    args = ["train", str(tiny_data), "--out", str(out), *FAST]
    fdopen = os.fdopen
    monkeypatch.setattr(checkpoint.os, "fdopen", lambda *a, **k: FullDisk(fdopen(*a, **k)))
    full = runner.invoke(app, [*args, "--max-steps", "2", "--resume"])
    # the run's line, the resume's, then the error's one line
    assert full.exit_code == 1 and full.stderr.count("\n") == 3 and full.stderr.startswith("train: paper recipe"), \
        full.output
    assert full.stderr.splitlines()[1].startswith("Resuming from step 1"), full.output
    assert "the disk is full" in full.stderr and "the checkpoint of step 1 is kept" in full.stderr
    assert "unexpected pos" not in full.stderr and "Traceback" not in full.output
    assert not list((out / "checkpoints").glob(".*.tmp"))
    monkeypatch.undo()                                                   # space freed
    resumed = runner.invoke(app, [*args, "--max-steps", "2", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(out / "checkpoints" / "last.pt")["trainer"]["step"] == 2


def test_a_one_class_data_set_is_a_data_error(tmp_path):
    """F5: exit 1 in the data's terms, not a usage error about a --num-classes nobody gave."""
    from alexnet_cli.prep import PrepOptions, prepare
    from alexnet_cli.synth import make_tree

    tree = make_tree(tmp_path / "tree", classes=1, train_per_class=8, val_per_class=2)
    prepare(tree, tmp_path / "data", PrepOptions(format="raw", workers=1))
    result = runner.invoke(app, ["train", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--no-pca-aug",
                                 *FAST])
    assert result.exit_code == 1 and "the data has 1 class" in result.stderr, result.output
    assert "--num-classes" not in result.stderr


def test_save_errors_in_the_users_terms(tmp_path, monkeypatch):
    """F12: torch.save's own RuntimeError on a full disk (no OSError behind it) is still said as
    a full disk; a file-size limit says how to lift it; any other error is left as it is (a bug,
    shown with its type)."""
    import errno
    from types import SimpleNamespace

    from alexnet_cli import runlog

    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "last.pt"))
    said = str(runlog.save_error(enospc, tmp_path, 7, None))
    assert "last.pt at step 7: the disk is full (No space left on device); no checkpoint was written yet" in said
    torn = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    monkeypatch.setattr(runlog.shutil, "disk_usage", lambda p: SimpleNamespace(free=4096))
    said = str(runlog.save_error(torn, tmp_path, 7, 5))
    assert "the disk is full (0.0 MiB free); the checkpoint of step 5 is kept" in said and "pos" not in said
    monkeypatch.setattr(runlog.shutil, "disk_usage", lambda p: SimpleNamespace(free=10**12))
    assert runlog.save_error(torn, tmp_path, 7, 5) is torn
    eio = OSError(errno.EIO, os.strerror(errno.EIO), "x.pt")
    failed = runlog.save_error(eio, tmp_path, 7, 5)
    assert "Input/output error; the checkpoint of step 5 is kept: continue with `resume` once" in str(failed)
    assert "Input/output error; the checkpoint of step 5 is kept: continue with --resume once" in \
        flag_message(failed)                                         # the CLI's flag (cli/flags.py)
    efbig = OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(tmp_path / "last.pt"))   # `ulimit -f`, FAT32
    said = str(runlog.save_error(efbig, tmp_path, 7, 5))
    assert "last.pt at step 7: the file would exceed the file-size limit" in said and "ulimit -f" in said, said
    assert "the checkpoint of step 5 is kept: continue with `resume` once it can be written" in said, said


def test_resume_says_where_it_continues(tiny_data, step_run, tmp_path):
    """--resume names the step, the place in the epoch and the checkpoint, on stderr (never in
    --json's stdout); a first run says nothing about resuming; a run with nothing left says so."""
    out = _copy_run(step_run.run, tmp_path / "run")
    args = ["train", str(tiny_data), "--out", str(out), *FAST]
    first = step_run.result                                           # the run of [*args, "--max-steps", "1"]
    assert first.exit_code == 0 and "esum" not in first.stderr, first.output
    resumed = runner.invoke(app, [*args, "--max-steps", "2", "--resume", "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["step"] == 2
    last = out / "checkpoints" / "last.pt"
    assert f"Resuming from step 1 (in epoch 1, batch 1) of {last}" in resumed.stderr, resumed.stderr
    again = runner.invoke(app, [*args, "--max-steps", "2", "--resume"])
    assert again.exit_code == 0, again.output
    assert "already at step 2 (--max-steps 2): nothing left to train" in again.stderr, again.stderr
    assert "Resuming" not in again.stderr


def test_resume_of_a_finished_run_says_nothing_is_left(one_step_data, tmp_path):
    args = ["train", str(one_step_data), "--out", str(tmp_path / "run"), "--epochs", "1", *FAST, "--batch-size", "4"]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, [*args, "--resume"])
    assert again.exit_code == 0 and again.stdout.startswith("done: 1 epoch, 2 steps"), again.output
    assert "finished its 1 epoch at step 2: nothing left to train (a larger --epochs trains it on)" in again.stderr, \
        again.stderr


@pytest.mark.parametrize("classes", [4, 5, 6])
def test_the_epoch_line_shows_no_trivial_top5_error(classes):
    """With at most 5 classes the top-5 error is 0 whatever the network: the epoch's line leaves
    it out and says why (metrics.jsonl keeps it)."""
    from alexnet_cli.train import _epoch_line

    record = {"epoch": 1, "train_top1_error": 0.5, "train_top5_error": 0.0, "val_top1_error": 0.25,
              "val_top5_error": 0.0, "lr": 0.01, "time_s": 1.0, "lr_dropped": False}
    line = _epoch_line(record, classes)
    assert "train top-1 50.00%" in line and "val top-1 25.00%" in line
    if classes <= 5:
        assert "top-5" not in line.replace("no top-5 error", "") and \
            line.endswith(f"(no top-5 error: only {classes} classes)"), line
    else:
        assert "train top-1 50.00% top-5 0.00%" in line and "val top-1 25.00% top-5 0.00%" in line, line


def _flat_val(monkeypatch, error: float = 0.5) -> None:
    """The validation pass, replaced by one that always gives `error` (top-1 and top-5)."""
    import alexnet_cli.train as train_module
    monkeypatch.setattr(train_module, "evaluate_model",
                        lambda *a, **k: SimpleNamespace(top1_error=error, top5_error=error, n=8))


def test_a_flat_val_error_divides_the_next_epochs_rate_by_10(one_step_data, tmp_path, monkeypatch):
    """Plateau rule inside the trainer, patience 1: epoch 1 sets the best val top-1, epoch 2 does
    not beat it, so epoch 2's record says lr_dropped and epoch 3 trains at a tenth; epoch 3 is
    flat again (a second drop). The schedule watches the val error, not the training error: a
    falling training error does not keep the rate.

    The training errors are set (falling), not those the run measured: a case with the measured
    ones asserted nothing more (the same val errors, drops and rates) and could fail only where
    this one does; the measured errors in an epoch's record are test_a_short_run_writes_the_run_folder's."""
    from alexnet_cli.runlog import read_metrics
    from alexnet_cli.train_state import EpochStats

    _flat_val(monkeypatch)
    train_errors = (0.9, 0.6, 0.3, 0.1)
    falling = iter(train_errors)
    monkeypatch.setattr(EpochStats, "epoch_result", lambda self: SimpleNamespace(
        top1_error=(e := next(falling)), top5_error=e / 2))
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(one_step_data), "--out", str(out), "--epochs", "3", "--patience", "1",
                                 "--max-lr-drops", "3", "--no-pca-aug", *FAST])
    assert result.exit_code == 0, result.output
    epochs = [r for r in read_metrics(out) if r["kind"] == "epoch"]
    assert [r["val_top1_error"] for r in epochs] == [0.5, 0.5, 0.5]
    assert [r["train_top1_error"] for r in epochs] == list(train_errors[:3])
    assert [r["lr_dropped"] for r in epochs] == [False, True, True]
    assert [r["lr"] for r in epochs] == pytest.approx([0.01, 0.01, 0.001])
    assert "learning rate divided by 10" in result.output


def test_mean_crop_channel_trains_on_image_minus_channel_mean_and_evaluates(tiny_data, tmp_path, monkeypatch):
    """mean_crop "channel": the training batch is the (mirrored) crop minus the manifest's mean_rgb
    at every pixel; the checkpoint records it and eval subtracts the same."""
    import alexnet_cli.evaluate as evaluate_module
    from alexnet_cli.augment import TrainAugment

    seen, modes = [], []
    apply, crops = TrainAugment.apply, evaluate_module.test_crops

    def spy(self, images, draw):
        batch = apply(self, images, draw)
        seen.append((images.clone(), draw, batch.clone()))
        return batch

    monkeypatch.setattr(TrainAugment, "apply", spy)
    monkeypatch.setattr(evaluate_module, "test_crops", lambda *a, **k: modes.append(k["mean_crop"]) or crops(*a, **k))
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(tiny_data), "--out", str(out), "--max-steps", "2", "--no-pca-aug",
                                 "--mean-crop", "channel", *FAST])
    assert result.exit_code == 0, result.output
    mean_rgb = torch.tensor(read_manifest(tiny_data).mean_rgb, dtype=torch.float32)
    images, draw, batch = seen[0]                                             # batch: (B, 3, 224, 224)
    assert len(seen) == 2                                                      # --max-steps 2
    for b in range(images.shape[0]):
        t, l = int(draw.top[b]), int(draw.left[b])
        patch = images[b, t:t + 224, l:l + 224].float()
        if draw.flip[b]:
            patch = patch.flip(1)
        torch.testing.assert_close(batch[b].permute(1, 2, 0), patch - mean_rgb, rtol=0, atol=1e-3)
    assert load_model(out / "checkpoints" / "last.pt").mean_crop == "channel"
    modes.clear()
    evaluated = runner.invoke(app, ["eval", str(out / "checkpoints" / "last.pt"), str(tiny_data), "--device", "cpu",
                                    "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["n"] == 16 and modes and set(modes) == {"channel"}


def test_resume_refuses_a_log_cut_or_edited_since_the_checkpoint(tiny_data, tmp_path):
    """Resume cuts metrics.jsonl back to its size at the checkpoint: a log cut shorter since would
    be padded with NULs, one edited since spliced mid-record. Both are refused, the log untouched;
    a log moved away is fine."""
    out = tmp_path / "run"
    args = ["train", str(tiny_data), "--out", str(out), *FAST]
    assert runner.invoke(app, [*args, "--max-steps", "2", "--log-every", "1"]).exit_code == 0
    log = out / "metrics.jsonl"
    records = log.read_text()
    first, rest = records.split("\n", 1)
    for damaged in ("", first[:20], first + '\n{"garbage\n' + rest):
        log.write_text(damaged)
        result = runner.invoke(app, [*args, "--max-steps", "3", "--resume"])
        assert result.exit_code == 1, result.output
        assert "no longer begins with the" in result.stderr and "Traceback" not in result.output
        assert log.read_text() == damaged
    log.unlink()
    result = runner.invoke(app, [*args, "--max-steps", "3", "--resume", "--log-every", "1"])
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in map(json.loads, log.read_text().splitlines())] == [3]


def test_a_run_whose_last_checkpoint_is_missing_is_not_started_over(small_data, epoch_run, tmp_path):
    """Without last.pt but with best.pt, starting again from step 0 would overwrite best.pt."""
    out = _copy_run(epoch_run.run, tmp_path / "run")                   # a finished run of one epoch
    args = ["train", str(small_data), "--out", str(out), "--epochs", "1", *FAST]
    (out / "checkpoints" / "last.pt").unlink()
    best = (out / "checkpoints" / "best.pt").read_bytes()
    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 1 and "last.pt is missing but" in result.stderr, result.output
    assert (out / "checkpoints" / "best.pt").read_bytes() == best


def test_a_finished_run_trains_on_to_more_epochs_as_if_given_them_from_the_start(small_data, epoch_run, tmp_path):
    """Under the plateau schedule `--epochs` only says where the run stops: a finished run of 1
    epoch resumed with --epochs 2 ends with the weights, metrics and config of a run of 2; fewer
    epochs than it has trained are refused, and so is another length under a fixed schedule
    (its drops move with `epochs`)."""
    out = _copy_run(epoch_run.run, tmp_path / "run")                   # finished: 1 epoch
    longer = runner.invoke(app, ["train", str(small_data), "--out", str(out), "--epochs", "2", *FAST, "--resume"])
    assert longer.exit_code == 0, longer.output
    fresh = tmp_path / "fresh"
    assert runner.invoke(app, ["train", str(small_data), "--out", str(fresh), "--epochs", "2", *FAST]).exit_code == 0
    for name, tensor in _weights(fresh).items():
        assert torch.equal(_weights(out)[name], tensor), name
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 2
    def records(run: Path) -> list[dict]:        # all but the clocks
        return [{k: v for k, v in json.loads(line).items() if k not in ("time_s", "images_per_s")}
                for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records(out) == records(fresh) and len(records(out)) == 10     # 4 steps and the epoch, twice
    shorter = runner.invoke(app, ["train", str(small_data), "--out", str(out), "--epochs", "1", *FAST, "--resume"])
    assert shorter.exit_code == 1 and "stands after epoch 2: --epochs 1 would have ended it before; give 2 or more" \
        in " ".join(shorter.output.split()), shorter.output
    # --epochs left out: the recipe's 90 is not asked for, so the run's 1 must stand (as before)
    kept = _copy_run(epoch_run.run, tmp_path / "kept")
    refused = runner.invoke(app, ["train", str(small_data), "--out", str(kept), *FAST, "--resume"])
    assert refused.exit_code == 1 and "other train settings (--epochs 1, not 90)" in refused.output, refused.output
    assert json.loads((kept / "config.json").read_text())["train"]["epochs"] == 1


@pytest.mark.parametrize("schedule, given, allowed", [("plateau", True, True), ("plateau", False, False),
                                                       ("code", True, False), ("code2010", True, False)])


def test_another_length_is_a_resume_only_under_the_plateau_schedule_and_when_asked(tmp_path, schedule, given,
                                                                                    allowed):
    """The code's schedules place their drops by `epochs`: another length is another run."""
    from alexnet_cli.errors import AlexnetError
    from alexnet_cli.train_state import check_resumable

    model = dataclasses.asdict(resolve_model_config("paper"))
    run, now = resolve_train_config("paper", lr_schedule=schedule, epochs=10), \
        resolve_train_config("paper", lr_schedule=schedule, epochs=20)
    ckpt = {"optimizer": {}, "trainer": {"epoch": 10, "batch": 0},
            "config": {"model": model, "train": dataclasses.asdict(run)}}
    config = {"model": model, "train": dataclasses.asdict(now), "run": {"seed": 0, "decode": "none",
              "val_split": "val"}, "world_size": 1}
    if allowed:
        check_resumable(tmp_path / "last.pt", ckpt, config, other_epochs=given)
    else:
        with pytest.raises(AlexnetError, match=r"other train settings \(`epochs` 10, not 20\)"):
            check_resumable(tmp_path / "last.pt", ckpt, config, other_epochs=given)


def test_a_resume_too_short_is_said_with_every_other_difference(tmp_path):
    """`epochs` behind where a plateau run stands is one of the differences, not the first one
    said: fixing it should not reveal a second."""
    from alexnet_cli.errors import AlexnetError
    from alexnet_cli.train_state import check_resumable

    model = dataclasses.asdict(resolve_model_config("paper"))
    run, now = resolve_train_config("paper", epochs=10), resolve_train_config("paper", epochs=5, momentum=0.8)
    ckpt = {"optimizer": {}, "trainer": {"epoch": 7, "batch": 3},
            "config": {"model": model, "train": dataclasses.asdict(run)}}
    config = {"model": model, "train": dataclasses.asdict(now), "run": {"seed": 0, "decode": "none",
              "val_split": "val"}, "world_size": 1}
    with pytest.raises(AlexnetError) as refused:
        check_resumable(tmp_path / "last.pt", ckpt, config)
    said = str(refused.value)
    assert "`epochs` 5 would have ended it before; give 8 or more" in said and "`momentum` 0.9, not 0.8" in said, said
    assert {"epochs", "momentum"} <= set(refused.value.mentions), refused.value.mentions


@pytest.mark.parametrize("part", ["model", "train"])
def test_a_run_from_a_newer_version_is_not_resumed_without_its_new_settings(tmp_path, part):
    """A setting this version does not know would be dropped on resume: the run would go on as
    another (a `--plateau-best since-drop` run resumed by a version without it goes on as `run`)."""
    from alexnet_cli.errors import CheckpointError
    from alexnet_cli.train_state import check_resumable

    model, train = dataclasses.asdict(resolve_model_config("paper")), dataclasses.asdict(resolve_train_config("paper"))
    saved = {"model": model, "train": train}
    saved[part] = {**saved[part], "from_the_future": 1}
    ckpt = {"optimizer": {}, "trainer": {"epoch": 1, "batch": 0}, "config": saved}
    config = {"model": model, "train": train, "run": {"seed": 0, "decode": "none", "val_split": "val"},
              "world_size": 1}
    with pytest.raises(CheckpointError, match=f"{part} settings this version does not know \\(from_the_future\\).*"
                                              "upgrade alexnet-cli"):
        check_resumable(tmp_path / "last.pt", ckpt, config)


def test_the_run_says_what_it_trains_before_the_first_step(step_run):
    """One line on stderr before training: the recipe and what differs from it, as the flags
    that give it; the length, batch, schedule; where; the data."""
    from alexnet_cli.train import _changes

    first = step_run.result.stderr.splitlines()[0]
    assert first == ("train: paper recipe; 90 epochs of 6 steps of 8 (plateau schedule from lr 0.01); single on cpu; "
                     "48 training images (raw shards), 16 'val' images to validate"), first
    model, train = resolve_model_config("paper", lrn=False, num_classes=4), resolve_train_config("paper", epochs=3,
                                                                                               crop_offsets=33)
    assert _changes("paper", model, train) == {"lrn": False, "crop_offsets": 33}
    assert _changes("code", resolve_model_config("code"), resolve_train_config("code")) == {}


@pytest.mark.parametrize("best, drops", [("run", [3, 5, 7]), ("since-drop", [3])])   # records count from 1
def test_plateau_best_drops_the_same_when_a_run_is_taken_on(one_step_data, tmp_path, monkeypatch, best, drops):
    """The val errors of test_schedule's example (patience 2), through the trainer: 4 epochs,
    then `--resume --epochs 7` takes the finished run on (the state of the schedule, the best
    since a drop included, comes back from last.pt); the drops are the whole sequence's."""
    from alexnet_cli.runlog import read_metrics

    errors = iter([0.5, 0.6, 0.6, 0.55, 0.52, 0.51, 0.505])
    import alexnet_cli.train as train_module
    monkeypatch.setattr(train_module, "evaluate_model",
                        lambda *a, **k: SimpleNamespace(top1_error=(e := next(errors)), top5_error=e, n=4))
    out = tmp_path / "run"
    args = ["train", str(one_step_data), "--out", str(out), "--patience", "2", "--plateau-best", best,
            "--no-pca-aug", *FAST]
    for more in (["--epochs", "4"], ["--epochs", "7", "--resume"]):
        result = runner.invoke(app, [*args, *more])
        assert result.exit_code == 0, result.output
        changes = "--plateau-best since-drop, --no-pca-aug" if best == "since-drop" else "--no-pca-aug"
        assert result.stderr.startswith(f"train: paper recipe with {changes}; "), result.stderr     # the banner
    epochs = [r for r in read_metrics(out) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs if r["lr_dropped"]] == drops
    assert [r["val_top1_error"] for r in epochs] == [0.5, 0.6, 0.6, 0.55, 0.52, 0.51, 0.505]
    assert json.loads((out / "config.json").read_text())["train"]["plateau_best"] == best


def test_a_run_recorded_before_plateau_best_resumes_with_the_default_only(tmp_path):
    """A run written before `plateau_best` existed compared with the run's best: it resumes with
    the default; with "since-drop" the refusal says the value the run has."""
    from alexnet_cli.errors import AlexnetError
    from alexnet_cli.train_state import check_resumable

    model = dataclasses.asdict(resolve_model_config("paper"))
    old = dataclasses.asdict(resolve_train_config("paper"))
    del old["plateau_best"]
    ckpt = {"optimizer": {}, "trainer": {"epoch": 3, "batch": 0}, "config": {"model": model, "train": old}}
    config = {"model": model, "train": dataclasses.asdict(resolve_train_config("paper")),
              "run": {"seed": 0, "decode": "none", "val_split": "val"}, "world_size": 1}
    check_resumable(tmp_path / "last.pt", ckpt, config)
    config["train"] = dataclasses.asdict(resolve_train_config("paper", plateau_best="since-drop"))
    with pytest.raises(AlexnetError) as refused:
        check_resumable(tmp_path / "last.pt", ckpt, config)
    assert "other train settings (`plateau_best` run, not since-drop)" in str(refused.value)
    assert flag_message(refused.value).count("--plateau-best run, not since-drop") == 1
