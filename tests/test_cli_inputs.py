"""What every command says about a DATA or CHECKPOINT argument that is not what it should be:
a damaged manifest.json, a data folder given as the checkpoint and the reverse. One `Error:`
line naming the file, what is wrong, and what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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
