"""What every command says about a DATA or CHECKPOINT argument that is not what it should be:
a damaged manifest.json, a data folder given as the checkpoint and the reverse. One `Error:`
line naming the file, what is wrong, and what to do."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from alexnet_cli.cli.app import app

runner = CliRunner()

# Each damage of manifest.json, and the words that must say what is wrong with it.
DAMAGED_MANIFESTS = {
    "truncated": (lambda text: text[:200], "not valid JSON"),
    "empty": (lambda text: "", "(empty)"),
    "a list": (lambda text: "[1, 2]", "(a list, not an object of fields)"),
    "no splits": (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "splits"}),
                  "(missing field 'splits')"),
    "splits a list": (lambda text: json.dumps({**json.loads(text), "splits": ["train"]}),
                      "('splits' is a list, not an object)"),
}


@pytest.fixture(scope="module")
def damaged(tiny_data, tmp_path_factory, make_checkpoint):
    """{damage: a copy of tiny_data with that manifest.json}, and a checkpoint."""
    root = tmp_path_factory.mktemp("damaged")
    folders = {}
    for i, (name, (damage, _)) in enumerate(DAMAGED_MANIFESTS.items()):
        folders[name] = data = root / f"data{i}"
        shutil.copytree(tiny_data, data)
        (data / "manifest.json").write_text(damage((tiny_data / "manifest.json").read_text()))
    return folders, make_checkpoint(root / "net.pt", tiny_data)


@pytest.mark.parametrize("damage", list(DAMAGED_MANIFESTS))
def test_a_damaged_manifest_is_one_line_with_the_fix_in_every_command(damaged, tiny_tree, tmp_path, damage):
    folders, checkpoint = damaged
    data = folders[damage]
    image = next((tiny_tree / "val").rglob("*.JPEG"))
    commands = {"pca": ["pca", str(data)],
                "train": ["train", str(data), "--out", str(tmp_path / "run"), "--device", "cpu"],
                "eval": ["eval", str(checkpoint), str(data), "--device", "cpu"],
                "features": ["features", str(checkpoint), str(data), "--out", str(tmp_path / "f.h5"),
                             "--device", "cpu"],
                "neighbors": ["neighbors", str(checkpoint), str(data), "--query", str(image), "--device", "cpu"],
                "codes": ["codes", str(checkpoint), str(data), "--device", "cpu"]}
    words = DAMAGED_MANIFESTS[damage][1]
    for name, args in commands.items():
        result = runner.invoke(app, args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1, (name, result.output)
        assert lines[0].startswith(f"Error: {data / 'manifest.json'} is corrupt ") and words in lines[0], (name, lines)
        assert lines[0].endswith(f"run `alexnet prep SRC {data}` again to write it anew from the shards"), lines


@pytest.fixture(scope="module")
def mixed_up(tiny_data, tiny_tree, tmp_path_factory, make_checkpoint):
    """A checkpoint, a training run's folder (config.json, checkpoints/best.pt), a query image."""
    root = tmp_path_factory.mktemp("mixed_up")
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"recipe": "paper", "model": {}, "train": {}, "run": {}}))
    make_checkpoint(run / "checkpoints" / "best.pt", tiny_data)
    return make_checkpoint(root / "net.pt", tiny_data), run, next((tiny_tree / "val").rglob("*.JPEG"))


def test_a_data_folder_as_the_checkpoint_and_the_reverse_are_bad_usage_everywhere(tiny_data, mixed_up, tmp_path):
    """Exit 2 (a bad argument, as a path that does not exist) and one line saying what the path
    is and what was expected, in every command that takes a CHECKPOINT or DATA; `eval DATA DATA`
    exited 1 and `eval CKPT CKPT` 2."""
    checkpoint, run, image = mixed_up
    data = str(tiny_data)
    as_checkpoint = f"{data} is a data folder made by `alexnet prep`, not a checkpoint"
    as_data = f"{checkpoint} is a checkpoint, not a data folder made by `alexnet prep`"
    cases = [
        (["eval", data, data], as_checkpoint),
        (["eval", str(checkpoint), str(checkpoint)], as_data),
        (["eval", data, str(checkpoint)], as_checkpoint),               # the two swapped
        (["eval", str(run), data], f"{run} is a training run's folder, not a checkpoint: give "
                                   f"{run / 'checkpoints' / 'best.pt'}"),
        (["kernels", str(run / "checkpoints")], f"{run / 'checkpoints'} is a folder, not a checkpoint: give "
                                                f"{run / 'checkpoints' / 'best.pt'}"),
        (["eval", str(checkpoint), str(run)], f"{run} is a training run's folder, not a data folder made by "
                                              "`alexnet prep`"),
        (["eval", str(checkpoint), str(image)], f"{image} is a file, not a data folder made by `alexnet prep`"),
        (["train", str(image.parents[2]), "--out", str(tmp_path / "r")],      # the images themselves
         f"{image.parents[2]} is a folder of images to prepare (train/, val/), not a data folder made by "
         f"`alexnet prep`: prepare it with `alexnet prep {image.parents[2]} OUT`, then give OUT"),
        (["predict", data, str(image)], as_checkpoint),
        (["predict", str(checkpoint), str(image), "--data", str(checkpoint)], as_data),
        (["kernels", data], as_checkpoint),
        (["pca", str(checkpoint)], as_data),
        (["train", str(checkpoint), "--out", str(tmp_path / "r")], as_data),
        (["ablate", str(checkpoint), "--out", str(tmp_path / "a")], as_data),
    ]
    for command in ("features", "neighbors", "codes"):
        extra = {"features": ["--out", str(tmp_path / "f.h5")], "neighbors": ["--query", str(image)]}.get(command, [])
        cases += [([command, data, data, *extra], as_checkpoint),
                  ([command, str(checkpoint), str(checkpoint), *extra], as_data)]
    fifo = tmp_path / "fifo"                 # never opened: a FIFO blocks its reader until someone writes
    os.mkfifo(fifo)
    cases += [(["pca", str(fifo)], f"{fifo} is a FIFO, not a data folder made by `alexnet prep`"),
              (["eval", str(checkpoint), str(fifo)], f"{fifo} is a FIFO, not a data folder"),
              (["eval", str(fifo), data], f"{fifo} is a FIFO, not a checkpoint"),
              (["kernels", os.devnull], f"{os.devnull} is a device, not a checkpoint")]
    for args, words in cases:
        result = runner.invoke(app, args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, (args, result.output)
        assert lines[0].startswith("Error: ") and words in lines[0], (args, lines)
        which = ("CHECKPOINT" if "not a checkpoint" in words else "--data" if "--data" in args else "DATA")   # as in --help
        assert lines[0].startswith(f"Error: Invalid value for {which}"), (args, lines)
    assert not (tmp_path / "r").exists() and not (tmp_path / "a").exists()


@pytest.mark.parametrize("value, shown", [("nan", "nan"), ("inf", "inf"), ("-inf", "-inf"), ("-5", "-5"),
                                          ("0", "0"), ("15", "15"), ("1e400", "inf")])
def test_a_memory_budget_that_is_no_budget_is_one_line_before_any_work(tmp_path, monkeypatch, value, shown):
    """`neighbors --memory-mb nan` said "should be greater than or equal to 16", inf another
    sentence: one message for every value that is no budget, before the features are computed."""

    monkeypatch.setattr("alexnet_cli.neighbors.find_neighbors", lambda *a, **k: pytest.fail("features computed"))
    image = tmp_path / "q.png"
    image.write_bytes(b"x")
    result = runner.invoke(app, ["neighbors", str(image), str(tmp_path), "--query", str(image),
                                 f"--memory-mb={value}"])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert f"--memory-mb: must be a finite number of MiB, at least 16, got {shown} " in lines[0], lines


@pytest.mark.parametrize("args, where", [
    (["train", "{data}", "--out", "", "--device", "cpu"], "'--out'"),
    (["predict", "{ckpt}", ""], "'IMAGE'"),
    (["prep", "{data}", ""], "'OUT'"),
])
def test_an_empty_path_is_refused_not_read_as_the_current_folder(tiny_data, make_checkpoint, tmp_path, args, where):
    """`--out ''` (an unset shell variable) became "." ("Error: . is not a training run's folder")."""
    names = {"data": tiny_data, "ckpt": make_checkpoint(tmp_path / "net.pt", tiny_data)}
    result = runner.invoke(app, [a.format(**names) for a in args])
    assert result.exit_code == 2, result.output
    command = args[0]
    assert result.stderr == (f"Error: Invalid value for {where}: an empty path: give a file or folder "
                             f"(see `alexnet {command} --help`)\n"), result.stderr
    helped = runner.invoke(app, [a.format(**names) for a in args] + ["--help"])   # help still wins
    assert helped.exit_code == 0 and "Usage:" in helped.stdout, helped.output


def test_a_symbolic_link_loop_is_named_as_one(tmp_path):
    """click said "path 'loop1' does not exist." of a link that leads back to itself."""
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    result = runner.invoke(app, ["report", str(tmp_path / "loop1")])
    assert result.exit_code == 2, result.output
    assert f"{tmp_path / 'loop1'} is a symbolic link loop" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_an_empty_device_is_refused_not_taken_as_the_default(tiny_data, tmp_path):
    result = runner.invoke(app, ["train", str(tiny_data), "--out", str(tmp_path / "run"), "--device", ""])
    assert result.exit_code == 2, result.output
    assert result.stderr == ("Error: --device '' is empty: use cpu, cuda or cuda:N (or leave the option out for "
                             "the default)\n")
    assert not (tmp_path / "run").exists()
