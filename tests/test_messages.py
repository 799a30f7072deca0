"""What a new user reads: error lines and notes that can be acted on as they are. A command a
message suggests still works when copied into a shell (paths quoted), a mismatch says what
differs, a clamped number is said, a folder where images belong says what to give, --help reads
as the rest, and a wrong kind of path is bad usage (exit 2, docs/public-surface.md)."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shlex

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from alexnet_cli.cli.app import app
from alexnet_cli.errors import DataError, UsageError, shell_word
from alexnet_cli.features import create_features_file, extract_features, load_encoder
from alexnet_cli.model import AlexNet
from alexnet_cli.neighbors import find_neighbors, split_features
from alexnet_cli.pca import compute_pca, read_pca
from alexnet_cli.progress import NullReporter
from alexnet_cli.report import report
from alexnet_cli.shards import read_manifest, read_split_index

runner = CliRunner()


def _error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def _suggested(message: str, command: str) -> list[str]:
    """The words of the command line in backticks that starts with `command`, as a shell reads them."""
    start = message.index(f"`{command} ")
    return shlex.split(message[start + 1:message.index("`", start + 1)])


class _Notes(NullReporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str, mentions: tuple[str, ...] = ()) -> None:
        self.lines.append(message)


@pytest.fixture(scope="module")
def spaced(tiny_data, tmp_path_factory, make_checkpoint):
    """tiny_data and a checkpoint under names with spaces (the data folder a link to it)."""
    root = tmp_path_factory.mktemp("spaced")
    data = root / "data raw"
    data.symlink_to(tiny_data, target_is_directory=True)
    return data, make_checkpoint(root / "my net.pt", tiny_data)


# ---------------------------------------------------------------------------- 1. commands to copy

def test_shell_word_quotes_only_what_the_shell_would_split():
    assert shell_word("runs/x/last.pt") == "runs/x/last.pt"
    assert shell_word("my imagenet") == "'my imagenet'" and shlex.split(shell_word("it's here")) == ["it's here"]


def test_a_source_folder_given_as_data_suggests_a_prep_line_that_copies(tmp_path):
    source = tmp_path / "my imagenet"
    (source / "train" / "n01").mkdir(parents=True)
    result = runner.invoke(app, ["train", str(source), "--out", str(tmp_path / "runs" / "x")])
    assert result.exit_code == 2
    assert _suggested(_error_line(result), "alexnet prep") == ["alexnet", "prep", str(source), "OUT"]


def test_a_missing_pca_suggests_a_pca_line_that_copies(tmp_path):
    data = tmp_path / "data copy"
    data.mkdir()
    with pytest.raises(DataError) as e:
        read_pca(data)
    assert _suggested(str(e.value), "alexnet pca") == ["alexnet", "pca", str(data)]
    (data / "pca.json").write_text("{")                 # damaged: "run it again" copies as well
    with pytest.raises(DataError) as e:
        read_pca(data)
    assert _suggested(str(e.value), "alexnet pca") == ["alexnet", "pca", str(data)]


def test_missing_codes_suggest_a_codes_line_that_copies(spaced, tiny_tree):
    data, checkpoint = spaced
    query = next((tiny_tree / "val").rglob("*.JPEG"))
    with pytest.raises(DataError) as e:
        find_neighbors(checkpoint, data, query, k=2, split="val", device="cpu", codes=True, bits=64)
    assert _suggested(str(e.value), "alexnet codes") == ["alexnet", "codes", str(checkpoint), str(data),
                                                          "--split", "val", "--bits", "64"]


def test_a_run_without_its_config_suggests_a_train_line_that_copies(tmp_path):
    run = tmp_path / "my run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"weights")
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 1                         # a damaged run, not a wrong kind of folder
    assert _suggested(_error_line(result), "alexnet train")[3:5] == ["--out", str(run)]


# ---------------------------------------------------------------------------- 2. features of other data

def _features_of(encoder, data, path, *, count: int, data_key: str) -> None:
    """A complete features file by `encoder` of 'val', as if made from data of `count` images (`data_key`)."""
    paths, labels = read_split_index(data, "val")
    manifest = read_manifest(data)
    create_features_file(path, paths=list(paths[:count]) + ["x"] * (count - len(paths)),
                         labels=np.resize(labels, count), classes=manifest.classes,
                         class_names=manifest.class_names, split="val", key=encoder.key, data=data_key,
                         network=encoder.network)
    with h5py.File(path, "r+") as f:
        f.attrs["done"] = count


def test_features_of_other_data_say_what_differs_and_how_to_remake_them(spaced, tmp_path):
    data, checkpoint = spaced
    encoder = load_encoder(checkpoint, data, "cpu")
    same_size = tmp_path / "other feat.h5"
    _features_of(encoder, data, same_size, count=16, data_key="0123456789abcdef")
    with pytest.raises(DataError) as e:
        split_features(encoder, data, "val", same_size, batch_size=8, workers=1, progress=NullReporter())
    message = str(e.value)
    assert f"of other images of 'val' than {data}'s (of other data of the same size" in message, message
    assert "(16 images;" not in message                  # the counts, equal, explained nothing
    assert _suggested(message, "alexnet features") == ["alexnet", "features", str(checkpoint), str(data), "--split",
                                                        "val", "--out", str(same_size), "--overwrite"]
    smaller = tmp_path / "small.h5"
    _features_of(encoder, data, smaller, count=10, data_key="0123456789abcdef")
    with pytest.raises(DataError, match=r"of 10 images of 'val', not of .*data raw's 16: compute them again"):
        split_features(encoder, data, "val", smaller, batch_size=8, workers=1, progress=NullReporter())


# ---------------------------------------------------------------------------- 3. last.pt first

def test_a_run_folder_given_as_a_checkpoint_points_at_last_pt_then_best_pt(tiny_data, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"recipe": "paper", "model": {}, "train": {}, "run": {}}))
    for name in ("best.pt", "last.pt"):
        (run / "checkpoints" / name).write_bytes(b"x")
    line = _error_line(result := runner.invoke(app, ["eval", str(run), str(tiny_data)]))
    assert result.exit_code == 2
    last, best = run / "checkpoints" / "last.pt", run / "checkpoints" / "best.pt"
    assert f"give {last} (the final network, to compare with the paper) or {best} (the lowest validation" in line


# ---------------------------------------------------------------------------- 4. --out of features

def test_features_out_must_name_an_hdf5_file(tiny_data, spaced, tmp_path):
    checkpoint = spaced[1]
    result = runner.invoke(app, ["features", str(checkpoint), str(tiny_data), "--out", str(tmp_path / "feat.npy")])
    assert result.exit_code == 2 and ".h5" in _error_line(result) and "--out" in _error_line(result)
    assert not list(tmp_path.glob("feat.npy*"))
    with pytest.raises(UsageError, match="out .*feat.npy: the suffix names the format"):
        extract_features(checkpoint, tiny_data, tmp_path / "feat.npy", split="val", device="cpu")


# ---------------------------------------------------------------------------- 5. clamping is said

def test_pca_says_when_the_sample_is_more_than_the_images(tiny_data):
    notes = _Notes()
    stats = compute_pca(tiny_data, progress=notes, sample=1000)
    assert stats.images == 48
    assert "Note: 'train' holds 48 images, fewer than `sample` 1,000: all of them are used" in notes.lines


def test_predict_says_when_k_is_more_than_the_classes(spaced, tiny_tree):
    image = next((tiny_tree / "val").rglob("*.JPEG"))
    result = runner.invoke(app, ["predict", str(spaced[1]), str(image), "--k", "10", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "Note: the network has 4 classes, fewer than --k 10: all of them are shown" in result.stderr
    assert len(json.loads(result.stdout)[0]["top"]) == 4


# ---------------------------------------------------------------------------- 6. a folder of images

def test_a_folder_given_as_an_image_says_to_give_its_images(tiny_data, tiny_tree, spaced):
    checkpoint = spaced[1]
    folder = next(p for p in (tiny_tree / "val").iterdir() if p.is_dir())
    image = next(folder.glob("*.JPEG"))
    for args in (["predict", str(checkpoint), str(image), str(folder)],
                 ["neighbors", str(checkpoint), str(tiny_data), "--query", str(folder)]):
        result = runner.invoke(app, args)
        line = _error_line(result)
        assert result.exit_code == 2 and f"{folder} is a folder, not an image: give its images, e.g. " \
                                         f"{folder}/*.JPEG" in line, line
    result = runner.invoke(app, ["predict", str(checkpoint), str(tiny_tree / "val")])   # folders of folders
    assert result.exit_code == 2 and f"e.g. {tiny_tree / 'val'}/*/*.JPEG" in _error_line(result)


def test_one_unreadable_image_among_several_says_which_and_that_none_was_predicted(tiny_data, tiny_tree, spaced,
                                                                                   tmp_path):
    checkpoint = spaced[1]
    image = next((tiny_tree / "val").rglob("*.JPEG"))
    bad = tmp_path / "notes.JPEG"
    bad.write_text("not an image")
    result = runner.invoke(app, ["predict", str(checkpoint), str(image), str(bad)])
    line = _error_line(result)
    assert result.exit_code == 1 and line.startswith(f"Error: {bad}: not an image") and "no image was predicted" in line
    result = runner.invoke(app, ["neighbors", str(checkpoint), str(tiny_data), "--query", str(image), "--query",
                                 str(bad)])
    line = _error_line(result)
    assert result.exit_code == 1 and line.startswith(f"Error: {bad}: not an image") and "no query was searched" in line


# ---------------------------------------------------------------------------- 7. --help

def test_help_shows_several_paths_as_paths_and_each_command_its_own_decode_default():
    for command, argument in (("eval", "CHECKPOINT"), ("predict", "IMAGE"), ("report", "RUN")):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "160"})
        assert result.exit_code == 0 and "list[" not in result.stdout, result.stdout
        row = next(line for line in result.stdout.splitlines() if f" {argument} " in line and "*" in line)
        assert ">..." in row, row
    helps = {c: " ".join(runner.invoke(app, [c, "--help"], env={"COLUMNS": "400"}).stdout.split())
             for c in ("train", "eval", "features", "neighbors", "codes")}
    assert all("--decode cpu|gpu|auto" in text for text in helps.values())
    assert all("eval, features, neighbors and codes" not in text for text in helps.values())
    assert "Default: auto." in helps["train"]
    assert "Default: the decoder the first CHECKPOINT's run trained with" in helps["eval"]
    for command in ("features", "neighbors", "codes"):
        assert "Default: the decoder CHECKPOINT's run trained with" in helps[command]


# ---------------------------------------------------------------------------- 8. exit codes

def test_a_data_folder_given_as_a_run_is_bad_usage(tiny_data):
    result = runner.invoke(app, ["report", str(tiny_data)])
    line = _error_line(result)
    assert result.exit_code == 2, result.output
    assert f"{tiny_data} is a data folder made by `alexnet prep`, not a training run's folder" in line
    assert _suggested(line, "alexnet train") == ["alexnet", "train", str(tiny_data), "--out", "RUN"]
    with pytest.raises(UsageError):
        report(tiny_data)


def test_predict_of_a_bare_state_dict_without_data_is_bad_usage(tiny_tree, tmp_path):
    torch.manual_seed(0)
    model = AlexNet(num_classes=4)
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    assert dataclasses.is_dataclass(model.config)
    image = next((tiny_tree / "val").rglob("*.JPEG"))
    result = runner.invoke(app, ["predict", str(tmp_path / "bare.pt"), str(image), "--device", "cpu"])
    assert result.exit_code == 2 and "--data is needed" in _error_line(result)


def test_the_manifest_errors_quote_the_data_folder(tmp_path):
    data = tmp_path / "my data"
    data.mkdir()
    with pytest.raises(DataError) as missing:
        read_manifest(data)
    (data / "manifest.json").write_text("{")
    with pytest.raises(DataError) as damaged:
        read_manifest(data)
    for exc in (missing, damaged):
        assert _suggested(str(exc.value), "alexnet prep")[:4] == ["alexnet", "prep", "SRC", str(data)], str(exc.value)


@pytest.mark.parametrize("args, said", [
    (["train", "DATA", "--epochs", "many"], "--epochs must be an integer, got 'many'"),
    (["train", "DATA", "--epochs", "1.5"], "--epochs must be an integer, got '1.5'"),
    (["train", "DATA", "--lr", "fast"], "--lr must be a number, got 'fast'"),
    (["summary", "--pool", "x"], "--pool must be an integer, got 'x'"),
    (["neighbors", "CKPT", "DATA", "--k", "z"], "--k must be an integer, got 'z'"),
    # out of the option's range: said "Input should be greater than or equal to 1"
    (["pca", "DATA", "--workers", "0"], "--workers must be at least 1, got 0"),
    (["kernels", "CKPT", "--scale", "0"], "--scale must be at least 1, got 0"),
    (["demo", "--classes", "100"], "--classes must be at most 64, got 100"),
])
def test_a_value_of_the_wrong_type_is_said_like_the_other_bad_values(tmp_path, args, said):
    """typer 0.29 checks types with pydantic and said "Invalid value for '--epochs': Input should be
    a valid integer, unable to parse string as an integer"; now as our other errors say a value."""
    (tmp_path / "m.pt").write_bytes(b"")
    args = [str(tmp_path) if a == "DATA" else str(tmp_path / "m.pt") if a == "CKPT" else a for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert _error_line(result) == f"Error: {said} (see `alexnet {args[0]} --help`)"


@pytest.mark.parametrize("code, said", [(errno.ENOSPC, "the disk is full"), (errno.EFBIG, "ulimit -f"),
                                        (errno.EACCES, "Permission denied")])
def test_an_os_error_with_no_room_says_what_to_do_at_the_boundary(tmp_path, code, said):
    """A write that found no room anywhere in a command (a checkpoint, a shard, the codes) says
    why and what to do, as the commands' own checks do; other OS errors keep the system's words."""
    from alexnet_cli.cli.app import _message

    path = tmp_path / "run" / "last.pt"
    line = _message(OSError(code, os.strerror(code), str(path)))
    assert line.startswith(f"{path}: ") and said in line, line
    assert _message(OSError(code, os.strerror(code), 3)) == f"3: {os.strerror(code)}"    # a descriptor, not a path
