"""A new user's audit of the data path (session 10): pca.json is not replaced silently, a resume
on another folder or format says so, an empty class is refused, an explicit --num-classes must
match, a batch larger than the data names --batch-size (and ablate leaves no empty --out), a
trivial top-5 in ablate's table is '-' with a note, prep of train/ or a class folder points at
the parent."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from alexnet_cli.ablate import FULL, markdown, table_rows
from alexnet_cli.cli.ablate import table as ablate_table
from alexnet_cli.cli.app import app
from alexnet_cli.config import ModelConfig, TrainConfig, to_dict
from alexnet_cli.errors import AlexnetError, DataError
from alexnet_cli.layouts import find_layout
from alexnet_cli.pca import PCA_FILE, compute_pca, read_pca, write_pca
from alexnet_cli.synth import make_tree
from alexnet_cli.train import fit_classes
from alexnet_cli.train_state import check_resumable

runner = CliRunner()


def _error(result) -> str:
    """The one `Error:` line of a failed command (no traceback, nothing else on stderr)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code != 0 and lines and lines[-1].startswith("Error: "), result.output
    assert sum(line.startswith("Error") for line in lines) == 1 and "Traceback" not in result.output
    return lines[-1]


@pytest.fixture
def data(tiny_data, tmp_path) -> Path:
    """A writable copy of tiny_data (48 training images of 4 classes, raw, with a full pca.json)."""
    return Path(shutil.copytree(tiny_data, tmp_path / "data"))


# --------------------------------------------------------------------------- 1. pca.json kept
def test_pca_sample_does_not_replace_a_full_pass_pca_json(data, monkeypatch):
    """`pca DATA --sample 5` silently replaced the full pass's pca.json that runs depend on
    (their --resume then failed); now it is refused before the pass, naming --overwrite."""
    before = (data / PCA_FILE).read_bytes()
    ran = []
    real = compute_pca
    monkeypatch.setattr("alexnet_cli.pca.compute_pca", lambda *a, **k: ran.append(1) or real(*a, **k))
    refused = runner.invoke(app, ["pca", str(data), "--sample", "5"])
    line = _error(refused)
    assert refused.exit_code == 1 and not ran                   # refused before reading any image
    assert f"{data / PCA_FILE} already holds a PCA, of 48 images" in line
    assert "a sample of 5" in line and "pass --overwrite to replace it" in line
    assert (data / PCA_FILE).read_bytes() == before

    same = runner.invoke(app, ["pca", str(data)])               # the same result again: silent, unchanged
    assert same.exit_code == 0 and "Error" not in same.output and "Warning" not in same.output, same.output
    assert (data / PCA_FILE).read_bytes() == before

    replaced = runner.invoke(app, ["pca", str(data), "--sample", "5", "--overwrite", "--json"])
    assert replaced.exit_code == 0, replaced.output
    assert read_pca(data).images == 5 and json.loads(replaced.stdout)["images"] == 5
    back = _error(runner.invoke(app, ["pca", str(data)]))        # and the full pass may not replace it either
    assert "of 5 images" in back and "all 48 training images" in back


def test_write_pca_refuses_another_result_of_the_same_size(data):
    """The check after the pass: as many images, other eigenvalues (e.g. another --seed)."""
    stats = read_pca(data)
    other = dataclasses.replace(stats, eigenvalues=np.asarray(stats.eigenvalues) * 2)
    with pytest.raises(DataError, match=r"already holds a PCA.*pass `overwrite` to replace it") as caught:
        write_pca(data, other)
    assert caught.value.mentions == ("overwrite",)
    assert read_pca(data).eigenvalues.tolist() == stats.eigenvalues.tolist()
    write_pca(data, other, overwrite=True)
    assert read_pca(data).eigenvalues.tolist() == (np.asarray(stats.eigenvalues) * 2).tolist()


def test_a_corrupt_pca_json_is_replaced_without_overwrite(data):
    """read_pca's advice for a corrupt file is `alexnet pca DATA` again: that must work."""
    (data / PCA_FILE).write_text("{not json")
    result = runner.invoke(app, ["pca", str(data), "--sample", "5"])
    assert result.exit_code == 0, result.output
    assert read_pca(data).images == 5


# ------------------------------------------------------- 2. resume on another folder or format
def _resume_check(saved_data: str, saved_decode: str, now_data: str, now_decode: str, key: str = "data_key"):
    model, train = to_dict(ModelConfig(num_classes=4)), to_dict(TrainConfig())
    run = {"seed": 0, "decode": saved_decode, "val_split": "val"}
    keys = {"data_key": "a" * 16, "val_key": "b" * 16, "mean_key": "c" * 16, "pca_key": "d" * 16}
    saved = {"model": model, "train": train, "run": run, "data": saved_data, "world_size": 1, **keys}
    now = {**saved, "run": {**run, "decode": now_decode}, "data": now_data, key: "e" * 16}
    ckpt = {"optimizer": {}, "trainer": {}, "config": saved}
    with pytest.raises(AlexnetError) as caught:
        check_resumable(Path("RUN/checkpoints/last.pt"), ckpt, now)
    return str(caught.value)


def test_resume_on_another_folder_in_another_format_says_so(tmp_path):
    """Was: "the training shards in DATA_B changed since the run began" (nothing changed)."""
    a, b = str(tmp_path / "data_raw"), str(tmp_path / "data_jpeg")
    message = _resume_check(a, "none", b, "cpu")
    assert f"it last trained on {a} (raw shards), not {b} (jpeg shards)" in message
    assert "changed since" not in message
    same_format = _resume_check(a, "cpu", b, "gpu", key="mean_key")
    assert f"it last trained on {a}, not {b}, whose mean image differs" in same_format
    here = _resume_check(a, "none", a, "none", key="pca_key")       # the same folder: its content changed
    assert f"the PCA (pca.json) in {a} changed since the run began" in here


# --------------------------------------------------------------------- 3. a class without images
def test_an_empty_class_folder_is_refused(tmp_path):
    """Was: a class with 0 training images ("3 classes"), never trained, and no word of it."""
    tree = make_tree(tmp_path / "src", classes=2, train_per_class=2, val_per_class=1)
    (tree / "train" / "n003").mkdir()
    with pytest.raises(DataError, match=r"n003: a class folder without any image file"):
        find_layout(tree)
    result = runner.invoke(app, ["prep", str(tree), str(tmp_path / "out"), "--workers", "1"])
    assert result.exit_code == 1 and "train/n003: a class folder without any image file" in _error(result)
    assert not (tmp_path / "out").exists()                           # nothing written


def test_a_class_whose_files_all_fail_to_decode_is_refused(tmp_path):
    tree = make_tree(tmp_path / "src", classes=2, train_per_class=2, val_per_class=0)
    (tree / "train" / "n003").mkdir()
    (tree / "train" / "n003" / "a.JPEG").write_text("not an image")
    result = runner.invoke(app, ["prep", str(tree), str(tmp_path / "out"), "--workers", "1"])
    assert result.exit_code == 1, result.output
    assert "class n003 has no training image that could be read" in _error(result)
    assert not (tmp_path / "out" / "manifest.json").exists()


# ----------------------------------------------------------------- 4. an explicit --num-classes
def test_an_explicit_num_classes_that_does_not_match_is_an_error(tiny_data, tmp_path):
    """Was: --num-classes 1000 on 4-class data silently gave fc8 4 outputs (2 was an error)."""
    out = tmp_path / "run"
    for n in ("1000", "2"):
        result = runner.invoke(app, ["train", str(tiny_data), "--out", str(out), "--num-classes", n,
                                     "--device", "cpu", "--batch-size", "8", "--max-steps", "1"])
        assert result.exit_code == 1
        assert _error(result) == f"Error: --num-classes {n} does not match the data's 4 classes"
        assert not out.exists()
    # the Python API: the default 1000 still follows the data, unless chosen (from_data=False)
    assert fit_classes(ModelConfig(), 4).num_classes == 4
    assert fit_classes(ModelConfig(num_classes=4), 4, from_data=False).num_classes == 4
    with pytest.raises(AlexnetError, match="num_classes 1000 does not match the data's 4 classes"):
        fit_classes(ModelConfig(), 4, from_data=False)


# ------------------------------------------------------------ 5. a batch larger than the data
def test_a_batch_larger_than_the_data_names_batch_size_and_leaves_no_folder(tiny_data, tmp_path):
    train = runner.invoke(app, ["train", str(tiny_data), "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert _error(train) == ("Error: --batch-size 128 is larger than the training split (48 images), which "
                             "must fill one batch at least: give a smaller one")
    assert not (tmp_path / "run").exists()
    out = tmp_path / "ablations"
    ablate = runner.invoke(app, ["ablate", str(tiny_data), "--out", str(out), "--device", "cpu",
                                 "--variants", "no-lrn"])
    assert ablate.exit_code == 1 and "--batch-size 128 is larger than the training split" in _error(ablate)
    assert not out.exists()                                     # was: an empty folder left behind
    out.mkdir()                                                 # a folder the user made is theirs: kept
    assert runner.invoke(app, ["ablate", str(tiny_data), "--out", str(out), "--device", "cpu"]).exit_code == 1
    assert out.is_dir()


# ------------------------------------------------------------- 6. ablate's trivial top-5
def _doc(num_classes: int) -> dict:
    def variant(name: str, top1: float) -> dict:
        return {"name": name, "what": name, "top1_error": top1, "top5_error": 0.0, "delta_top1": top1 - 0.5,
                "delta_top5": 0.0, "paper": "paper", "train_val_gap": 0.1, "epochs_done": 1, "epochs": 1,
                "state": "finished", "eval": {"n": 8}}
    return {"recipe": "paper", "split": "val", "crops": 1, "model": {"num_classes": num_classes},
            "variants": [variant(FULL, 0.5), variant("no-lrn", 0.6)]}


def _render(table) -> str:
    console = Console(file=io.StringIO(), width=100)
    console.print(table)
    return console.file.getvalue()


def test_ablate_table_marks_a_trivial_top5_as_eval_does_with_a_note():
    """Was: a plain 0.00 top-5 (and Δ) with no note; then '-'; now `(trivial)`, as eval and report."""
    doc = _doc(3)
    rows = table_rows(doc)
    assert [r[3] for r in rows] == ["0.00% (trivial)"] * 2 and [r[5] for r in rows] == ["", "+0.00 (trivial)"]
    md = markdown(doc)
    assert "top-5 (trivial): only 3 classes: every label is among the top 5" in md
    shown = _render(ablate_table(doc))
    assert "50.00/0.00" in shown and "+10.00/+0.00" in shown and "(trivial)" in shown and "only 3 classes" in shown
    many = _doc(10)                                                 # more than 5 classes: figures, no note
    assert [r[3] for r in table_rows(many)] == ["0.00%", "0.00%"] and "trivial" not in markdown(many)
    assert "50.00/0.00" in _render(ablate_table(many)) and "only" not in _render(ablate_table(many))


# ------------------------------------------------------- 7. prep of train/ or of a class folder
def test_prep_of_train_or_a_class_folder_names_the_parent(tiny_tree, tmp_path):
    parent = tiny_tree.resolve()
    for src in (tiny_tree / "train", next((tiny_tree / "train").iterdir())):
        with pytest.raises(DataError) as caught:
            find_layout(src)
        assert str(caught.value) == (f"{src}: no ImageNet layout found (train/ or val/ in it); did you mean the "
                                     f"parent folder {parent}?")
    result = runner.invoke(app, ["prep", str(tiny_tree / "val"), str(tmp_path / "out")])
    assert f"did you mean the parent folder {parent}?" in _error(result)
    (tmp_path / "other").mkdir()                                 # no layout anywhere near: the long message
    with pytest.raises(DataError, match="no ImageNet layout found: expected train/"):
        find_layout(tmp_path / "other")
