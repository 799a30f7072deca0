"""Paths of the wrong kind (error-contract audit, session 14): `pca --out` replaced a device node
(as root, /dev/null became a regular file), a symlink itself, and any file that was no PCA (a
user's notes, a picture); `train --pca` of a FIFO, a device, a manifest or a checkpoint advised
to write a PCA over it; a features file, a manifest or a run's last.pt that is no such file was
said to be missing, or left without advice. Device nodes are made here (mknod, where allowed)
and FIFOs: never a real /dev file."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alexnet_cli.cli.app import app
from alexnet_cli.pca import PCA_FILE

runner = CliRunner()
FAST = ["--device", "cpu", "--batch-size", "8", "--log-every", "1"]


def _one_error(result, code: int, *words: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert all(w in lines[0] for w in words), (words, lines[0])
    return lines[0]


def _specials(folder: Path, suffix: str = "") -> dict[str, Path]:
    """A FIFO, and a null device node where this process may make one (root), in `folder`."""
    made = {"a FIFO": folder / f"fifo{suffix}"}
    os.mkfifo(made["a FIFO"])
    try:
        os.mknod(folder / f"null{suffix}", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        made["a device"] = folder / f"null{suffix}"
    except (PermissionError, AttributeError):
        pass
    return made


@pytest.fixture(scope="module")
def pca_doc(tiny_data) -> str:
    return (tiny_data / PCA_FILE).read_text()


# ---------------------------------------------------------------------------- pca --out

def test_pca_out_refuses_a_device_or_fifo_up_front_and_never_replaces_it(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr("alexnet_cli.pca.compute_pca", lambda *a, **k: pytest.fail("the pass ran"))
    for kind, path in _specials(tmp_path).items():
        mode = path.stat().st_mode
        for extra in ([], ["--overwrite"]):
            result = runner.invoke(app, ["pca", str(tiny_data), "--out", str(path), *extra])
            _one_error(result, 2, f"--out {path} is {kind}, not a regular file", "give a file's path")
            assert path.stat().st_mode == mode, kind                      # still the device, the FIFO
    assert not any(stat.S_ISREG(p.lstat().st_mode) for p in tmp_path.iterdir())      # no partial sums beside


def test_pca_out_through_a_link_writes_its_target_and_keeps_the_link(tiny_data, tmp_path, pca_doc):
    target = tmp_path / "store" / "shared.json"
    target.parent.mkdir()
    target.write_text(pca_doc[:40])                                     # a PCA cut short: replaced
    link = tmp_path / "pca.json"
    link.symlink_to(target)
    result = runner.invoke(app, ["pca", str(tiny_data), "--out", str(link), "--json"])
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text())["eigenvalues"] == json.loads(pca_doc)["eigenvalues"]


@pytest.mark.parametrize("content, words", [
    (b"important notes\n", "not JSON"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(200), "not JSON"),           # a JPEG
    (b'{"name": "my settings"}', "JSON without eigenvalues"),
    (b"[1, 2, 3]", "JSON, but not an object"),
])
def test_pca_out_refuses_a_file_that_is_no_pca(tiny_data, tmp_path, monkeypatch, content, words):
    """`echo important > notes.txt; alexnet pca data --out notes.txt` replaced the notes."""
    notes = tmp_path / "notes.txt"
    notes.write_bytes(content)
    with monkeypatch.context() as m:
        m.setattr("alexnet_cli.pca.compute_pca", lambda *a, **k: pytest.fail("the pass ran"))
        result = runner.invoke(app, ["pca", str(tiny_data), "--out", str(notes)])
    _one_error(result, 2, f"--out {notes} is not a PCA file ({words}), and pca replaces only a PCA file: choose "
               "another file, or pass --overwrite to replace it")
    assert notes.read_bytes() == content
    forced = runner.invoke(app, ["pca", str(tiny_data), "--out", str(notes), "--sample", "2", "--overwrite"])
    assert forced.exit_code == 0, forced.output
    assert json.loads(notes.read_text())["images"] == 2


@pytest.mark.parametrize("damage", ["empty", "cut short", "a PCA's keys, damaged values"])
def test_pca_out_replaces_a_damaged_pca(tiny_data, tmp_path, pca_doc, damage):
    out = tmp_path / "mine.json"
    doc = json.loads(pca_doc)
    out.write_text({"empty": "", "cut short": pca_doc[:len(pca_doc) // 2],
                    "a PCA's keys, damaged values": json.dumps({**doc, "eigenvalues": [1, 2]})}[damage])
    result = runner.invoke(app, ["pca", str(tiny_data), "--out", str(out), "--sample", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["images"] == 2


# ---------------------------------------------------------------------------- train --pca

def test_train_pca_of_the_wrong_kind_says_what_it_is(tiny_data, tmp_path, make_checkpoint):
    """`--pca /dev/zero` said "not found: compute it with `alexnet pca DATA --out /dev/zero`";
    a manifest or a checkpoint "is corrupt: run `alexnet pca DATA --out` it again"."""
    args = ["train", str(tiny_data), "--out", str(tmp_path / "run"), "--max-steps", "1", *FAST]
    for kind, path in _specials(tmp_path).items():
        line = _one_error(runner.invoke(app, [*args, "--pca", str(path)]), 2,
                          f"{path} is {kind}, not a PCA file: give the file `alexnet pca` wrote (its --out)")
        assert "--out " + str(path) not in line
    checkpoint = make_checkpoint(tmp_path / "best.pt", tiny_data)
    manifest = tiny_data / "manifest.json"
    for path, words in ((checkpoint, "not JSON"), (manifest, "JSON without eigenvalues")):
        line = _one_error(runner.invoke(app, [*args, "--pca", str(path)]), 2,
                          f"{path} is not a PCA file ({words}): give one made by `alexnet pca {tiny_data} --out FILE`")
        assert "again" not in line and f"--out {path}" not in line
    assert not (tmp_path / "run").exists()


def test_train_pca_of_a_damaged_pca_advises_to_write_it_again(tiny_data, tmp_path, pca_doc):
    damaged = tmp_path / "mine.json"
    damaged.write_text(pca_doc[:30])
    result = runner.invoke(app, ["train", str(tiny_data), "--out", str(tmp_path / "run"), "--pca", str(damaged),
                                 *FAST])
    _one_error(result, 1, f"{damaged} is corrupt (", f"run `alexnet pca {tiny_data} --out {damaged}` again")
    # and that command does write it
    assert runner.invoke(app, ["pca", str(tiny_data), "--out", str(damaged), "--sample", "2"]).exit_code == 0


def test_a_data_folders_pca_json_that_is_a_fifo(tiny_data, tmp_path):
    """It was "not found (where DATA is read-only: ...)"."""
    data = Path(shutil.copytree(tiny_data, tmp_path / "data"))
    (data / PCA_FILE).unlink()
    os.mkfifo(data / PCA_FILE)
    result = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), *FAST])
    _one_error(result, 1, f"{data / PCA_FILE} is a FIFO, not a PCA file: remove it and run `alexnet pca {data}`")
    again = runner.invoke(app, ["pca", str(data)])
    _one_error(again, 1, f"{data / PCA_FILE} is a FIFO, not a regular file", "remove it")
    assert stat.S_ISFIFO((data / PCA_FILE).stat().st_mode)


# ---------------------------------------------------------------------------- features, manifest, last.pt

def test_features_files_of_the_wrong_kind_say_what_they_are(tiny_data, tmp_path, make_checkpoint):
    """`features --out FIFO` and `neighbors --features /dev/zero` said "no such features file"."""
    checkpoint = make_checkpoint(tmp_path / "model.pt", tiny_data)
    query = tmp_path / "q.png"
    from PIL import Image
    Image.new("RGB", (40, 30), (200, 10, 10)).save(query)
    for kind, path in _specials(tmp_path, ".h5").items():
        out = runner.invoke(app, ["features", str(checkpoint), str(tiny_data), "--split", "val", "--out", str(path),
                                  "--device", "cpu"])
        _one_error(out, 2, f"{path} is {kind}, not a features file")
        given = runner.invoke(app, ["neighbors", str(checkpoint), str(tiny_data), "--query", str(query),
                                    "--features", str(path), "--device", "cpu"])
        _one_error(given, 2, f"{path} is {kind}, not a features file")
        assert not stat.S_ISREG(path.stat().st_mode)


def test_a_manifest_that_is_a_link_to_a_device_is_not_called_missing(tiny_data, tmp_path):
    data = Path(shutil.copytree(tiny_data, tmp_path / "data"))
    (data / "manifest.json").unlink()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (data / "manifest.json").symlink_to(fifo)
    result = runner.invoke(app, ["pca", str(data)])
    _one_error(result, 1, f"{data / 'manifest.json'} is a FIFO, not a manifest file: remove it, then run "
               f"`alexnet prep SRC {data}`")


def test_a_truncated_last_pt_says_what_to_do(tiny_data, tmp_path):
    run = tmp_path / "run"
    args = ["train", str(tiny_data), "--out", str(run), *FAST]
    assert runner.invoke(app, [*args, "--max-steps", "1"]).exit_code == 0
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:4096])
    result = runner.invoke(app, [*args, "--max-steps", "2", "--resume"])
    _one_error(result, 1, f"{last}: not a readable checkpoint (", "): restore it from a copy to continue the run, "
               "or train anew into another run folder (best.pt holds the weights, not the state to continue from)")


def test_a_large_file_is_refused_as_no_pca_without_being_read(tmp_path, monkeypatch):
    """The diff review: `pca --out big.bin` read a 500 MB file whole (1.5 GB of memory) before
    refusing it; a PCA is about 1 KB."""
    from pathlib import Path

    from alexnet_cli import pca as pca_module
    big, text = tmp_path / "big.bin", tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(pca_module.MAX_PCA_BYTES + 1)
    text.write_text('{"rows": [' + "0, " * pca_module.MAX_PCA_BYTES + "0]}")
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("read whole"))
    with pytest.raises(pca_module._Foreign, match="^not JSON$"):
        pca_module._document(big)
    with pytest.raises(pca_module._Foreign, match="bytes: too large for one"):
        pca_module._document(text)
