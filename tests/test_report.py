"""`alexnet report`: the runs' table and JSON equal what their metrics.jsonl holds; the picture
is drawn; a run being written and bad input are handled."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from alexnet_cli.cli.app import app
from alexnet_cli.config import resolve_model_config, resolve_train_config
from alexnet_cli.errors import DataError, TrainingDiverged
from alexnet_cli.report import RunReport, read_run, read_runs
from alexnet_cli.runlog import read_metrics
from alexnet_cli.train import RunOptions, train

runner = CliRunner()


@pytest.fixture(scope="module")
def two_runs(tiny_data, tmp_path_factory) -> tuple[Path, Path]:
    """Two short runs on the CPU: `paper` (one whole epoch: 2 steps and a validation) and
    `no-lrn` (stopped by --max-steps after 1 step)."""
    root = tmp_path_factory.mktemp("runs")
    run = RunOptions(device="cpu", log_every=1, workers=1)
    train(tiny_data, root / "paper", resolve_model_config("paper"), resolve_train_config("paper", epochs=1, batch_size=24),
          run)
    train(tiny_data, root / "no-lrn", resolve_model_config("paper", lrn=False),
          resolve_train_config("paper", epochs=1, batch_size=24), RunOptions(device="cpu", log_every=1, workers=1,
                                                                            max_steps=1))
    return root / "paper", root / "no-lrn"


def _error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_report_json_and_picture_hold_what_the_runs_logged(two_runs, tmp_path):
    paper, no_lrn = two_runs
    picture = tmp_path / "curves.png"
    result = runner.invoke(app, ["report", str(paper), str(no_lrn), "--out", str(picture), "--json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [r["run"] for r in records] == ["paper", "no-lrn"]
    a, b = records
    logged = read_metrics(paper)
    epochs = [r for r in logged if r["kind"] == "epoch"]
    steps = [r for r in logged if r["kind"] == "train"]
    assert len(epochs) == 1 and len(steps) == 2
    assert a["epochs_done"] == 1 and a["epochs"] == 1 and a["step"] == 2 and a["state"] == "finished"
    assert a["best_epoch"] == 1 and a["best_val_top1_error"] == epochs[0]["val_top1_error"]
    assert a["best_val_top5_error"] == a["last_val_top5_error"] == epochs[0]["val_top5_error"]
    assert a["last_train_top1_error"] == epochs[0]["train_top1_error"]
    assert a["images_per_s"] == statistics.median(r["images_per_s"] for r in steps)
    assert a["time_s"] == pytest.approx(epochs[0]["time_s"])
    assert a["changed"] == {"batch_size": 24} and a["recipe"] == "paper" and a["lr_drops"] == []
    # the run stopped by --max-steps: no epoch yet, its one step, the ablation named
    assert b["changed"] == {"lrn": False, "batch_size": 24}
    assert b["epochs_done"] == 0 and b["step"] == 1 and b["best_val_top1_error"] is None
    assert b["state"] == "stopped"           # its lock is free: stopped at once, though written a moment ago
    assert read_run(no_lrn, now=time.time() + 3600).state == "stopped"
    assert b["time_s"] == pytest.approx(24 / read_metrics(no_lrn)[0]["images_per_s"])
    # the picture: a real, non-blank image of a sensible size
    img = np.asarray(Image.open(picture).convert("RGB"))
    assert 800 <= img.shape[1] <= 2000 and 300 <= img.shape[0] <= 1200
    assert (img < 200).any(axis=2).mean() > 0.01            # lines, text and axes drawn
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # colours: not one flat fill


def test_report_without_a_picture_runs_without_torch(two_runs):
    """Reading runs needs no network: `alexnet report RUN` starts in a fraction of torch's import."""
    code = ("import sys\nfrom typer.testing import CliRunner\n"
            "from alexnet_cli.cli.app import app\n"
            "result = CliRunner().invoke(app, ['report', *sys.argv[1:]])\n"
            "print(result.exit_code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, *map(str, two_runs)], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.split() == ["0", "False"], done.stderr


def test_report_table_names_runs_settings_and_states(two_runs):
    result = runner.invoke(app, ["report", *map(str, two_runs)])
    assert result.exit_code == 0, result.output
    for text in ("paper", "no-lrn", "--no-lrn", "1/1", "0/1", "finished"):
        assert text in result.stdout, text
    assert "[bold]" not in result.stdout and "[/]" not in result.stdout    # styles, not markup printed as text
    # 4 classes: every label is in the top 5, so the top-5 error reads 0.00 whatever the network,
    # marked as `eval` marks it
    best = read_run(two_runs[0]).best_val_top1_error
    assert f"{100 * best:.2f}/0.00" in result.stdout and "/-" not in result.stdout and "(trivial)" in result.stdout
    assert "top-5 (trivial): a run of at most 5 classes" in " ".join(result.stdout.split())
    assert json.loads(runner.invoke(app, ["report", str(two_runs[0]), "--json"]).stdout)[0]["num_classes"] == 4


def test_runs_are_named_by_their_folders_however_given(two_runs, monkeypatch, tmp_path):
    """`.` and `./paper` are the folder `paper` (they read "." and "/paper"); two folders of one
    name are told apart by their parents; the same folder twice keeps its name."""
    paper, no_lrn = two_runs
    monkeypatch.chdir(paper)
    assert [r.name for r in read_runs([".", f"../{paper.name}", str(no_lrn)])] == ["paper", "paper", "no-lrn"]
    monkeypatch.chdir(paper.parent)
    assert [r.name for r in read_runs([f"./{paper.name}"])] == ["paper"]
    twin = tmp_path / "other" / "paper"                      # its logs, not its checkpoints
    shutil.copytree(paper, twin, ignore=shutil.ignore_patterns("checkpoints"))
    assert [r.name for r in read_runs([paper, twin])] == [f"{paper.parent.name}/paper", "other/paper"]


def test_report_reads_a_run_being_written(two_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_runs[0], run, ignore=shutil.ignore_patterns("checkpoints"))
    metrics = run / "metrics.jsonl"
    complete = metrics.read_text()
    before = read_run(run)
    with open(metrics, "a") as f:                        # the trainer is in the middle of a line
        f.write('{"kind": "train", "step": 3, "epoch": 2, "lo')
    result = runner.invoke(app, ["report", str(run), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["step"] == before.step == 2
    # a damaged line that is not the last one is an error, not silently dropped
    metrics.write_text(complete.replace('"kind": "epoch"', '"kind": "epo', 1))
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 1 and "metrics.jsonl: line 3 is not JSON" in _error_line(result)


def test_the_run_lock_says_whether_a_run_is_running(two_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_runs[1], run, ignore=shutil.ignore_patterns("checkpoints"))   # stopped by --max-steps
    assert (run / ".lock").exists() and read_run(run).state == "stopped"
    hold = ("import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(run / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert read_run(run, now=time.time() + 3600).state == "running"   # however old its files
        result = runner.invoke(app, ["report", str(run), "--json"])
        assert result.exit_code == 0 and json.loads(result.stdout)[0]["state"] == "running"
    finally:
        holder.kill()
        holder.wait()
    assert read_run(run).state == "stopped"                           # the lock is free again
    # no lock file (a run of an older version): the files' times decide, as before
    (run / ".lock").unlink()
    (run / "metrics.jsonl").touch()
    assert read_run(run).state == "running"
    assert read_run(run, now=time.time() + 3600).state == "stopped"


def test_best_last_rate_drops_time_and_divergence_from_the_log(two_runs, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(two_runs[0] / "config.json", run / "config.json")
    config = json.loads((run / "config.json").read_text())
    config["train"].update(epochs=5, lr_schedule="code", lr=0.02)
    (run / "config.json").write_text(json.dumps(config))
    lrs = [0.02, 0.02, 0.002, 0.002]
    errors = [0.6, 0.4, 0.45, 0.42]
    lines = [{"kind": "train", "step": 2 * e + 1, "epoch": e + 1, "loss": 1.0, "lr": lrs[e], "images_per_s": 24.0}
             for e in range(4)]
    lines += [{"kind": "epoch", "epoch": e + 1, "step": 2 * e + 2, "train_top1_error": 0.5, "train_top5_error": 0.1,
               "lr": lrs[e], "time_s": 10.0, "val_top1_error": errors[e], "val_top5_error": errors[e] / 2,
               "val_n": 16, "lr_dropped": False} for e in range(3)]
    lines.sort(key=lambda r: (r["step"], r["kind"] == "epoch"))
    lines.append({"kind": "diverged", "step": 8})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    r = read_run(run)
    assert r.changed == {"lr": 0.02, "lr_schedule": "code", "batch_size": 24}
    assert (r.best_epoch, r.best_val_top1_error, r.best_val_top5_error) == (2, 0.4, 0.2)
    assert (r.last_val_top1_error, r.epochs_done, r.epochs_total, r.step) == (0.45, 3, 5, 8)
    assert r.lr_drops == [2]                     # the rate fell after epoch 2 (a fixed schedule's drop)
    assert r.time_s == pytest.approx(3 * 10.0 + 24 / 24.0)   # three epochs + the interval of epoch 4
    assert r.state == "diverged"


def test_bad_input_is_one_error_line(two_runs, tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"x")
    result = runner.invoke(app, ["report", str(two_runs[0]), str(other)])
    assert result.exit_code == 2 and "is not a training run's folder" in _error_line(result)   # a wrong kind of folder
    result = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in _error_line(result)
    result = runner.invoke(app, ["report", str(two_runs[0]), "--out", str(tmp_path / "curves.xyz")])
    assert result.exit_code == 2 and ".png" in _error_line(result)
    assert not (tmp_path / "curves.xyz").exists()


def test_a_run_stopped_by_a_nan_loss_reads_diverged(tiny_data, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged):
        train(tiny_data, run, resolve_model_config("paper"), resolve_train_config("paper", epochs=1, batch_size=24,
                                                                                  lr=1e12),
              RunOptions(device="cpu", log_every=1, workers=1))
    assert read_metrics(run)[-1]["kind"] == "diverged"
    result = runner.invoke(app, ["report", str(run), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)[0]["state"] == "diverged"


def test_a_train_starting_while_report_peeks_at_the_lock_waits_it_out(tmp_path):
    """`report` holds a shared lock on RUN/.lock for an instant (RunLock.held); a `train`
    taking the lock in that instant tries again for a moment instead of failing."""
    import fcntl
    import os
    import threading

    from alexnet_cli.runlog import RunLock

    lock = RunLock(tmp_path)
    lock.path.write_text("")
    fd = os.open(lock.path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)                             # report's peek, as held() takes it
    release = threading.Timer(0.05, lambda: (fcntl.flock(fd, fcntl.LOCK_UN), os.close(fd)))
    release.start()
    try:
        lock.acquire()
        assert lock.held() is True                             # ours now
    finally:
        release.join()
        lock.release()


def test_report_names_changed_settings_as_the_user_sets_them(tmp_path):
    """The table names a changed setting by its flag (`--bias-init 0.1`, `--no-lrn`), one that no
    flag sets in plain words with the paper's section; never by the config's field name. JSON
    keeps the field names."""
    from alexnet_cli.config import to_dict
    run = tmp_path / "run"
    run.mkdir()
    model = resolve_model_config("paper", lrn=False, lrn_alpha_over_n=True, pool_kernel=2, bias_fill=0.1)
    config = {"recipe": "paper", "model": to_dict(model), "train": to_dict(resolve_train_config("paper", pca_std=0.2))}
    (run / "config.json").write_text(json.dumps(config))
    shown = runner.invoke(app, ["report", str(run)], env={"COLUMNS": "80"})
    assert shown.exit_code == 0, shown.output
    for text in ("--no-lrn", "--lrn-alpha-over-n", "--pool 2", "--bias-init 0.1", "PCA colour noise std 0.2 (paper 5.1)"):
        assert text in " ".join(line.strip() for line in shown.stdout.splitlines()), text
    for field in ("lrn_alpha_over_n", "pool_kernel", "bias_fill", "pca_std", "lrn=False"):
        assert field not in shown.stdout, field
    [record] = json.loads(runner.invoke(app, ["report", str(run), "--json"]).stdout)
    assert record["changed"] == {"lrn": False, "lrn_alpha_over_n": True, "pool_kernel": 2, "bias_fill": 0.1,
                                 "pca_std": 0.2}


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def test_report_table_labels_each_run_on_its_own_section_within_80_columns(two_runs):
    """Every run: a line of numbers under labelled columns (its state under `state`, its best
    error's epoch beside that error), then its recipe and changes on a labelled line, then a
    rule before the next run; nothing wider than 80 columns."""
    paper, no_lrn = two_runs
    shown = runner.invoke(app, ["report", str(paper), str(no_lrn)], env={"COLUMNS": "80"})
    assert shown.exit_code == 0, shown.output
    lines = _lines(shown.stdout)
    assert max(map(len, lines)) <= 80
    header = next(line for line in lines if line.startswith("run "))
    assert header.split() == ["run", "state", "epochs", "best", "(epoch)", "last", "lr/10", "after", "img/s", "time"]
    first = next(i for i, line in enumerate(lines) if line.startswith("paper "))
    best = read_run(paper)
    assert lines[first].split()[:6] == ["paper", "finished", "1/1", f"{100 * best.best_val_top1_error:.2f}/0.00",
                                        f"({best.best_epoch})", f"{100 * best.last_val_top1_error:.2f}/0.00"]
    assert header.index("state") == lines[first].index("finished")          # under its label
    assert lines[first + 1].split() == ["(trivial)", "(trivial)"]           # 4 classes: under best and last
    assert lines[first + 2] == "  recipe paper; changed: --batch-size 24"
    assert set(lines[first + 3]) == {"─"}                                   # the rule between the runs
    assert lines[first + 4].split()[:3] == ["no-lrn", "stopped", "0/1"]     # no epoch: nothing to mark
    assert lines[first + 5] == "  recipe paper; changed: --no-lrn, --batch-size 24"
    assert "no val split" not in shown.stdout                               # both runs validate


def _report_of(name: str, **changes) -> RunReport:
    record = dict(name=name, path=Path(name), recipe="paper", changed={}, epochs_done=90, epochs_total=90,
                  step=450_000, best_epoch=88, best_val_top1_error=0.4012, best_val_top5_error=0.1834,
                  last_val_top1_error=0.4031, last_val_top5_error=0.1840, last_train_top1_error=0.35, val_split="val",
                  lr_drops=[30, 60, 80], num_classes=1000, images_per_s=1234.5, time_s=27 * 3600 + 120,
                  state="finished")
    return RunReport(**{**record, **changes})


@pytest.mark.parametrize("width", [80, 100, 160])
def test_report_table_of_imagenet_runs_fits_the_width_with_every_number_whole(width):
    """1000 classes (top-5 shown), three rate drops, a long name: the numbers stay whole on the
    run's line at 80 columns and wider; only a name too long for the width folds."""
    from rich.console import Console

    from alexnet_cli.cli.report import table
    runs = [_report_of("paper"), _report_of("ablations/no-pca-aug", changed={"pca_aug": False}, state="running")]
    console = Console(width=width, record=True, markup=False)
    console.print(table(runs))
    lines = _lines(console.export_text())
    assert max(map(len, lines)) <= width
    rows = [line for line in lines if line.split()[1:2] in (["finished"], ["running"])]
    assert len(rows) == 2
    for row in rows:
        assert "40.12/18.34 (88)" in row and "40.31/18.40" in row and "1,234" in row and "27h02m" in row
    assert "30, 60, 80" in rows[0]
    assert ("ablations/no-pca-aug" in rows[1]) == (width >= 100)   # whole where the width allows
    assert "  recipe paper; changed: --no-pca-aug" in lines
    assert sum(set(line) == {"─"} for line in lines) == 2             # under the header, between the runs


@pytest.mark.parametrize("width", [50, 60, 80])
def test_a_narrow_terminal_never_parts_a_flag_from_its_value(width):
    """The settings line wraps between settings, never inside one: `--lr` and `0.0025` stay on
    one line at 60 columns and at 50 (a setting in words too)."""
    from rich.console import Console

    from alexnet_cli.cli.common import setting_text
    from alexnet_cli.cli.report import table
    changed = {"lr": 0.0025, "batch_size": 24, "lrn": False, "pool_kernel": 2, "bias_fill": 0.1, "pca_std": 0.2,
               "dropout_style": "inverted", "momentum": 0.95, "weight_decay": 0.001, "bias_lr_mult": 2.0}
    console = Console(width=width, record=True, markup=False)
    console.print(table([_report_of("paper", changed=changed)]))
    lines = _lines(console.export_text())
    start = next(i for i, line in enumerate(lines) if line.startswith("  recipe paper; changed:"))
    settings = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        settings.append(line)
    assert max(map(len, settings)) <= width and len(settings) > 1                       # it did wrap
    for field, value in changed.items():
        assert any(setting_text(field, value) in line for line in settings), setting_text(field, value)
    assert " ".join(line.strip() for line in settings) == \
        "recipe paper; changed: " + ", ".join(setting_text(k, v) for k, v in changed.items())


def test_a_trivial_top5_error_is_shown_as_eval_shows_it():
    """At most 5 classes: the top-5 error, 0.00, marked `(trivial)` under best and last, as `eval`
    prints it (`0.00% (trivial)`); 6 classes or more: no mark."""
    from rich.console import Console

    from alexnet_cli.cli.report import table
    runs = [_report_of("five", num_classes=5, best_val_top5_error=0.0, last_val_top5_error=0.0),
            _report_of("six", num_classes=6)]
    console = Console(width=80, record=True, markup=False)
    console.print(table(runs))
    lines = _lines(console.export_text())
    five = next(i for i, line in enumerate(lines) if line.startswith("five "))
    assert "40.12/0.00 (88)" in lines[five] and "40.31/0.00" in lines[five]
    assert lines[five + 1].split() == ["(trivial)", "(trivial)"]
    six = next(i for i, line in enumerate(lines) if line.startswith("six "))
    assert "40.12/18.34 (88)" in lines[six] and "(trivial)" not in lines[six + 1]
    assert "top-5 (trivial): a run of at most 5 classes" in " ".join(" ".join(lines).split())


def test_a_run_without_a_validation_split_shows_its_training_error(two_runs, tmp_path):
    """Data with no val split: the run watched its training error. The table says "no val split"
    and shows that error marked `train`, with a line saying what it is; JSON: "val_split" null."""
    run = tmp_path / "noval"
    shutil.copytree(two_runs[0], run, ignore=shutil.ignore_patterns("checkpoints"))
    config = json.loads((run / "config.json").read_text())
    assert config["val_key"] is not None and config["run"]["val_split"] == "val"
    config["val_key"] = None                                 # what train writes for data without the split
    (run / "config.json").write_text(json.dumps(config))
    records = [{k: v for k, v in r.items() if not k.startswith("val_")} for r in read_metrics(run)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    train_error = read_run(run).last_train_top1_error
    shown = runner.invoke(app, ["report", str(two_runs[0]), str(run)], env={"COLUMNS": "80"})
    assert shown.exit_code == 0, shown.output
    [row] = [line for line in _lines(shown.stdout) if line.startswith("noval ")]
    assert row.split()[:8] == ["noval", "finished", "1/1", "no", "val", "split", "train", f"{100 * train_error:.2f}"]
    assert "no val split: the run's data had no validation split; 'train' is its last epoch's training top-1 error" \
        in " ".join(shown.stdout.split())
    records = json.loads(runner.invoke(app, ["report", str(two_runs[0]), str(run), "--json"]).stdout)
    assert [r["val_split"] for r in records] == ["val", None]
    assert records[1]["best_val_top1_error"] is None and records[1]["last_train_top1_error"] == train_error
    # a run older than "val_key": its epochs say it did not validate; with no epoch yet, nothing says so
    del config["val_key"]
    (run / "config.json").write_text(json.dumps(config))
    assert read_run(run).val_split is None
    (run / "metrics.jsonl").write_text("")
    assert read_run(run).val_split == "val"


def _run_with_log(run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of `run`, and its metrics.jsonl (removed, for the test to put something in its place)."""
    copy = tmp_path / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("*.pt", ".lock"))
    (copy / "metrics.jsonl").unlink()
    return copy, copy / "metrics.jsonl"


def test_a_log_line_too_long_for_a_record_is_damage(two_runs, tmp_path):
    """A metrics.jsonl ending in megabytes without a newline (joined with a binary file, zeros) was
    read whole into memory; a run's last partial line is a few hundred bytes."""
    run, log = _run_with_log(two_runs[0], tmp_path)
    lines = (two_runs[0] / "metrics.jsonl").read_bytes()
    log.write_bytes(lines + b"\0" * (2**20 + 1))
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 1
    number = lines.count(b"\n") + 1
    assert _error_line(result) == (f"Error: {log}: line {number} is longer than 1 MiB, while a record is a few "
                                   "hundred bytes: the log is damaged")
    log.write_bytes(lines + b"{" + b" " * (2**20 - 3) + b"}\n")          # a line of just 1 MiB: read, as JSON
    with pytest.raises(DataError, match=f"line {number}: a record without its \"kind\""):
        read_metrics(run)


def test_a_log_that_is_no_regular_file_is_refused(two_runs, tmp_path):
    """A metrics.jsonl linked to /dev/zero filled the memory; a FIFO waited for ever."""
    run, log = _run_with_log(two_runs[0], tmp_path)
    try:
        os.mknod(log, 0o600 | 0o020000, os.makedev(1, 3))         # a device (reads as /dev/null), made here
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot make a device node here ({exc})")
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 1
    assert _error_line(result) == (f"Error: {log}: not a regular file but a device: a run writes its log as a file")
