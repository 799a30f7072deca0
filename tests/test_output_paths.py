"""Output files never destroy what a command reads or what another command made (paths.check_output).

An output option (eval's --per-class and --predictions, the pictures of predict, kernels,
neighbors and report, features' --out) that names one of the command's inputs (the checkpoint,
a query image, however it is linked), a file of a prepared data folder, or a training run's own
file is refused before any work: one `Error:` line naming the option, exit code 2, the file
untouched. Any other existing file is overwritten, as before.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from alexnet_cli.checkpoint import save_checkpoint
from alexnet_cli.cli.app import app
from alexnet_cli.errors import UsageError
from alexnet_cli.kernels import kernel_report
from alexnet_cli.paths import check_output
from alexnet_cli.shards import read_manifest
from alexnet_cli.synth import make_tree

runner = CliRunner()


@pytest.fixture(scope="module")
def place(tiny_data, make_checkpoint, tmp_path_factory) -> Path:
    """A folder holding `data/` (a copy of tiny_data: a failed refusal must not break the
    session's), `run/` (a training run's folder: config.json, metrics.jsonl, checkpoints/last.pt
    and best.pt) and `q.jpg`, an image."""
    root = tmp_path_factory.mktemp("outputs")
    shutil.copytree(tiny_data, root / "data")
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"recipe": "paper", "model": {}, "train": {}, "run": {}}))
    (run / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    manifest = read_manifest(root / "data")
    for name in ("last.pt", "best.pt"):            # the data's classes, so that eval runs on it
        path = make_checkpoint(run / "checkpoints" / name, root / "data")
        payload = torch.load(path, weights_only=True)
        save_checkpoint(path, {**payload, "classes": manifest.classes, "class_names": manifest.class_names})
    tree = make_tree(root / "tree", classes=1, train_per_class=1, val_per_class=0)
    shutil.copy(next((tree / "train").rglob("*.JPEG")), root / "q.jpg")
    return root


def _refused(args: list[str], protected: Path, message: str) -> None:
    """`args` exit with 2 and the one line `message`, before any work, `protected` unchanged."""
    before = protected.read_bytes()
    device = [] if args[0] in ("kernels", "report") else ["--device", "cpu"]     # those two have no --device
    result = runner.invoke(app, [str(a) for a in args] + device)
    assert result.exit_code == 2, (args, result.output)
    assert result.stderr == f"Error: {message}\n", result.stderr
    assert result.stdout == ""                              # no table: nothing was computed
    assert protected.read_bytes() == before


def test_eval_predictions_over_its_checkpoint_is_refused(place):
    best = place / "run" / "checkpoints" / "best.pt"
    _refused(["eval", best, place / "data", "--predictions", best], best,
             f"--predictions {best} is the checkpoint this command reads: choose another file")


def test_eval_per_class_over_the_manifest_is_refused(place):
    data, last = place / "data", place / "run" / "checkpoints" / "last.pt"
    manifest = data / "manifest.json"
    _refused(["eval", last, data, "--per-class", manifest], manifest,
             f"--per-class {manifest} is inside the data folder {data}, which `alexnet prep` wrote: "
             "choose a path outside it")
    assert runner.invoke(app, ["eval", str(last), str(data), "--device", "cpu"]).exit_code == 0   # still a data folder


def test_predict_out_over_its_image_is_refused(place):
    last, image = place / "run" / "checkpoints" / "last.pt", place / "q2.jpg"
    shutil.copy(place / "q.jpg", image)
    _refused(["predict", last, image, "--out", image], image,
             f"--out {image} is an image this command reads: choose another file")
    hard = place / "q2-link.jpg"             # the same file by another name
    os.link(image, hard)
    _refused(["predict", last, image, "--out", hard], image,
             f"--out {hard} is an image this command reads: choose another file")


def test_eval_ensemble_and_a_run_file_are_refused(place):
    last, best = (place / "run" / "checkpoints" / name for name in ("last.pt", "best.pt"))
    _refused(["eval", last, best, place / "data", "--per-class", best], best,
             f"--per-class {best} is a checkpoint this command reads: choose another file")
    config = place / "run" / "config.json"
    _refused(["eval", last, place / "data", "--predictions", config], config,
             f"--predictions {config} is the config.json of the training run in {place / 'run'}, which "
             "`alexnet train` wrote: choose another file")


def test_eval_per_class_and_predictions_in_one_file_are_refused(place):
    """The second write would replace the first: one of the two outputs asked for would be lost."""
    last, both = place / "run" / "checkpoints" / "last.pt", place / "both.csv"
    both.write_text("kept\n")
    _refused(["eval", last, place / "data", "--per-class", both, "--predictions", place / "." / "both.csv"], both,
             f"--predictions {place / 'both.csv'} is also --per-class: the second would replace the first; "
             "choose two files")


def test_kernels_out_through_a_link_to_its_checkpoint_is_refused(place):
    last = place / "run" / "checkpoints" / "last.pt"
    link = place / "kernels-link.png"
    link.symlink_to(last)
    _refused(["kernels", last, "--out", link], last,
             f"--out {link} is the checkpoint this command reads: choose another file")
    inside = place / "run" / "checkpoints" / "kernels.png"
    _refused(["kernels", last, "--out", inside], last,
             f"--out {inside} is inside the checkpoints/ folder of the training run in {place / 'run'}, "
             "which `alexnet train` wrote: choose a path outside it")
    assert not inside.exists()


def test_neighbors_out_over_its_query_or_in_the_data_folder_is_refused(place):
    last, data, image = place / "run" / "checkpoints" / "last.pt", place / "data", place / "q3.jpg"
    shutil.copy(place / "q.jpg", image)
    _refused(["neighbors", last, data, "--query", image, "--split", "val", "--out", image], image,
             f"--out {image} is a query image this command reads: choose another file")
    figure = data / "neighbors.png"
    _refused(["neighbors", last, data, "--query", image, "--split", "val", "--out", figure], image,
             f"--out {figure} is inside the data folder {data}, which `alexnet prep` wrote: choose a path outside it")
    assert not figure.exists()                  # the features cache was not filled either
    assert not list(data.glob("features-*"))


def test_features_and_report_outputs_in_others_folders_are_refused(place):
    last, data = place / "run" / "checkpoints" / "last.pt", place / "data"
    out = data / "features.h5"
    _refused(["features", last, data, "--split", "val", "--out", out], last,
             f"--out {out} is inside the data folder {data}, which `alexnet prep` wrote: choose a path outside it")
    assert not out.exists() and not list(data.glob("*.partial"))
    curves = place / "run" / "checkpoints" / "curves.png"
    _refused(["report", place / "run", "--out", curves], last,
             f"--out {curves} is inside the checkpoints/ folder of the training run in {place / 'run'}, "
             "which `alexnet train` wrote: choose a path outside it")


def test_an_earlier_output_is_still_overwritten(place, tmp_path):
    """Outputs outside those folders are written over, as before: an earlier run's file, a picture
    at a run folder's top level (RUN/kernels.png)."""
    last, data = place / "run" / "checkpoints" / "last.pt", place / "data"
    predictions = tmp_path / "p.csv"
    predictions.write_text("old\n")
    result = runner.invoke(app, ["eval", str(last), str(data), "--predictions", str(predictions), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert predictions.read_text().startswith("index,path,label")
    figure = place / "run" / "kernels.png"
    for _ in range(2):
        result = runner.invoke(app, ["kernels", str(last), "--out", str(figure)])
        assert result.exit_code == 0, result.output
        assert figure.read_bytes()[:4] == b"\x89PNG"
    picture = tmp_path / "fig.png"
    picture.write_bytes(b"old")
    result = runner.invoke(app, ["predict", str(last), str(place / "q.jpg"), "--out", str(picture), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert picture.read_bytes()[:4] == b"\x89PNG"


def test_the_library_refuses_too(place):
    """Python callers get the same rule: a UsageError about `out`, before the checkpoint is read."""
    last = place / "run" / "checkpoints" / "last.pt"
    with pytest.raises(UsageError, match="is inside the checkpoints/ folder of the training run") as caught:
        kernel_report(last, place / "run" / "checkpoints" / "k.png")
    assert caught.value.field == "out"
    with pytest.raises(UsageError, match="is the checkpoint this command reads") as caught:
        check_output(f"{place}/run/../run/checkpoints/last.pt", "out", [("the checkpoint", last)])
    check_output(None, "out", [("the checkpoint", last)])          # no output asked: nothing to refuse
    check_output(place / "elsewhere.png", "out", [("the checkpoint", last)])


def test_outputs_linked_to_a_features_file_or_checkpoint_are_refused(place):
    """neighbors' --out linked to its --features file; features' --out linked to its checkpoint
    (the suffix rule alone lets both through: .png and .h5)."""
    last, data, image = place / "run" / "checkpoints" / "last.pt", place / "data", place / "q.jpg"
    features = place / "feats.h5"
    features.write_bytes(b"not read: the refusal comes first")
    link = place / "neighbors-link.png"
    link.symlink_to(features)
    _refused(["neighbors", last, data, "--query", image, "--features", features, "--out", link], features,
             f"--out {link} is the features file this command reads: choose another file")
    h5 = place / "checkpoint-link.h5"
    h5.symlink_to(last)
    _refused(["features", last, data, "--split", "val", "--out", h5], last,
             f"--out {h5} is the checkpoint this command reads: choose another file")


def test_an_output_name_too_long_for_its_temporaries_is_refused_up_front(tmp_path):
    """A name that fits the file system but not with `.NAME.PID.tmp` around it would fail late,
    naming a hidden temporary the user never gave."""
    fits, too_long = tmp_path / ("f" * 200 + ".h5"), tmp_path / ("f" * 240 + ".h5")
    check_output(fits, "out")
    with pytest.raises(UsageError, match=r"has a name of 243 bytes; this file system allows \d+.*choose a shorter name"):
        check_output(too_long, "out")
# ---------------------------------------------------------------------------- a full disk


def _fills_up(monkeypatch, folder: Path) -> None:
    """Every os.write into `folder` fails as on a full disk (ENOSPC); other writes go through."""
    real = os.write

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)
    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("name, args", [
    ("per-class.csv", ["eval", "{last}", "{data}", "--device", "cpu", "--per-class", "{out}"]),
    ("predictions.csv", ["eval", "{last}", "{data}", "--device", "cpu", "--predictions", "{out}"]),
    ("predictions.jsonl", ["eval", "{last}", "{data}", "--device", "cpu", "--predictions", "{out}"]),
    ("kernels.png", ["kernels", "{last}", "--out", "{out}"]),
    ("predict.jpg", ["predict", "{last}", "{image}", "--device", "cpu", "--out", "{out}"]),
    ("neighbors.png", ["neighbors", "{last}", "{data}", "--query", "{image}", "--split", "val", "--device", "cpu",
                       "--out", "{out}"]),
])


def test_a_full_disk_keeps_an_earlier_output_whole_and_leaves_no_partial_file(place, tmp_path, monkeypatch,
                                                                               name, args):
    """Each output is written atomically (atomic.write_atomic): the old code left a truncated or
    0-byte file where an earlier one had been. (report's figure was written so already.)"""
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / name
    out.write_bytes(b"an earlier result\n")
    names = {"last": place / "run" / "checkpoints" / "last.pt", "data": place / "data", "image": place / "q.jpg",
             "out": out}
    _fills_up(monkeypatch, folder)
    result = runner.invoke(app, [a.format(**{k: str(v) for k, v in names.items()}) for a in args])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]   # after progress lines
    assert len(errors) == 1 and errors[0].startswith(f"Error: {out}: cannot write"), result.stderr
    assert "disk is full" in errors[0] and "free some space" in errors[0] and "Traceback" not in result.stderr
    assert out.read_bytes() == b"an earlier result\n"
    assert [p.name for p in folder.iterdir()] == [name]          # no temporary left beside it


def test_a_full_device_is_not_called_a_full_disk(place, full_device):
    """`eval --predictions DEV` on a full device said "the disk is full (12,045.0 MiB free)"."""
    result = runner.invoke(app, ["eval", str(place / "run" / "checkpoints" / "last.pt"), str(place / "data"),
                                 "--device", "cpu", "--predictions", str(full_device)])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: {full_device}: cannot write it: the device is full (No space left on device): "
                      "choose another file"]


@pytest.mark.parametrize("args, inside", [
    (["prep", "{tree}", "{data}/sub"], "the data folder {data}, which `alexnet prep` wrote"),
    (["train", "{data}", "--out", "{data}/myrun"], "the data folder {data}, which `alexnet prep` wrote"),
    (["train", "{data}", "--out", "{run}/sub"], "the training run's folder {run}, which `alexnet train` wrote"),
    (["train", "{data}", "--out", "{run}/checkpoints/sub"],
     "the training run's folder {run}, which `alexnet train` wrote"),
    (["ablate", "{data}", "--out", "{data}/abl"], "the data folder {data}, which `alexnet prep` wrote"),
    (["ablate", "{data}", "--out", "{run}/abl"], "the training run's folder {run}, which `alexnet train` wrote"),
])
def test_a_new_folder_inside_a_data_or_run_folder_is_refused(place, args, inside):
    """train's and ablate's --out and prep's OUT made runs or shards inside another command's folder."""
    names = {"tree": place / "tree", "data": place / "data", "run": place / "run"}
    argv = [a.format(**names) for a in args]
    out = Path(argv[2] if args[0] == "prep" else argv[3])
    result = runner.invoke(app, argv + ["--device", "cpu"] * (args[0] != "prep"))
    assert result.exit_code == 2, result.output
    flag = "OUT" if args[0] == "prep" else "--out"
    assert result.stderr == f"Error: {flag} {out} is inside {inside.format(**names)}: choose a folder outside it\n"
    assert not out.exists()


def test_a_folder_beside_another_programs_config_json_is_no_run(tmp_path):
    """Only a run's config.json makes a run's folder, and only prep's manifest.json a data folder:
    a project folder holding some tool's config.json, a web app's manifest.json or its own
    checkpoints/best.pt takes runs (the diff review: `alexnet demo` failed under a web app)."""
    from alexnet_cli.paths import check_output_folder
    (tmp_path / "config.json").write_text('{"editor": "vim"}')
    (tmp_path / "manifest.json").write_text('{"name": "my-web-app"}')
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.pt").write_bytes(b"x")
    check_output_folder(tmp_path / "runs" / "run1", "out")
    (tmp_path / "config.json").write_text(json.dumps({"recipe": "paper", "model": {}, "train": {}, "run": {}}))
    with pytest.raises(UsageError, match="is inside the training run's folder"):
        check_output_folder(tmp_path / "runs" / "run1", "out")
    (tmp_path / "config.json").unlink()
    (tmp_path / "manifest.json").write_text(json.dumps({"classes": [], "splits": {}, "format": "raw"}))
    with pytest.raises(UsageError, match="is inside the data folder"):
        check_output_folder(tmp_path / "runs" / "run1", "out")


def test_a_run_ablation_or_data_folder_made_inside_by_an_older_version_is_not_stranded(place, tmp_path):
    """The rule refuses NEW folders only: a run an older version let a user start in data/run
    still resumes, an ablation folder there reruns, a data folder prepared there is checked."""
    from alexnet_cli.ablate import check_ablation_dir
    from alexnet_cli.paths import check_output_folder
    from alexnet_cli.runlog import check_run_dir
    data = Path(shutil.copytree(place / "data", tmp_path / "data"))
    old_run = Path(shutil.copytree(place / "run", data / "oldrun"))
    check_run_dir(old_run, resume=True)                              # was refused: "inside the data folder"
    with pytest.raises(UsageError, match="is inside the data folder"):
        check_run_dir(data / "newrun")
    (data / "abl").mkdir()
    (data / "abl" / "ablations.json").write_text("{}")
    check_ablation_dir(data / "abl")
    check_run_dir(data / "abl" / "pool2")             # a variant the rerun adds (was refused after the others ran)
    with pytest.raises(UsageError, match="is inside the data folder"):
        check_ablation_dir(data / "abl2")
    with pytest.raises(UsageError, match="is inside the data folder"):
        check_output_folder(data / "sub", "OUT")
