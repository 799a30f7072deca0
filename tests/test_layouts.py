"""Finding the ImageNet layout (alexnet_cli.layouts) and reading the devkit's meta.mat
(alexnet_cli.matfile): every layout of SPEC.md "Data" gives the same labels."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from alexnet_cli import synth
from alexnet_cli.cli.flags import flag_message
from alexnet_cli.errors import DataError, UsageError
from alexnet_cli.layouts import LabelFiles, find_layout
from alexnet_cli.matfile import read_synsets

CLASSES = 3


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    """The same generated images in every layout (same seed: same pixels, same val order)."""
    base = tmp_path_factory.mktemp("layouts")
    return {layout: synth.make_tree(base / layout, classes=CLASSES, train_per_class=2, val_per_class=3,
                                    layout=layout) for layout in synth.LAYOUTS}


def _truth(trees) -> dict[str, str]:
    """val file name -> wnid, from the folders layout (where the folder says it)."""
    return {p.name: p.parent.name for p in (trees["folders"] / "val").rglob("*.JPEG")}


@pytest.mark.parametrize("layout", synth.LAYOUTS)
def test_every_layout_gives_the_same_labels(trees, layout):
    found = find_layout(trees[layout])
    assert found.classes == [synth.wnid(k) for k in range(CLASSES)]
    assert list(found.class_names.values()) == [synth.class_name(k) for k in range(CLASSES)]
    assert {Path(p).name: w for p, w in found.splits["val"]} == _truth(trees)
    assert len(found.splits["train"]) == 2 * CLASSES
    for p, w in found.splits["train"]:
        assert (trees[layout] / p).is_file() and Path(p).parent.name == w
    assert found.unlabeled == {"train": [], "val": []}
    assert ("kaggle" in found.name) == (layout == "kaggle")


def test_devkit_ids_are_not_sorted_order(trees):
    """The devkit's ILSVRC2012_IDs must be mapped through meta.mat, not used as class indices."""
    truth = (trees["devkit"] / "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt")
    ids = [int(x) for x in truth.read_text().split()]
    first = sorted(_truth(trees))[0]
    assert ids[0] - 1 != [synth.wnid(k) for k in range(CLASSES)].index(_truth(trees)[first])


def test_val_synsets_file_replaces_meta_mat(trees, tmp_path):
    root = tmp_path / "devkit"
    shutil.copytree(trees["devkit"], root)
    (root / "ILSVRC2012_devkit_t12/data/meta.mat").unlink()
    with pytest.raises(DataError, match="`val_synsets` FILE") as refused:      # the library's name
        find_layout(root)
    assert "--val-synsets FILE" in flag_message(refused.value)                 # the CLI's flag
    order = {i: synth.wnid(k) for k, i in enumerate(synth.devkit_ids(CLASSES))}
    synsets = tmp_path / "synsets.txt"
    synsets.write_text("".join(f"{order[i]} name {i}\n" for i in sorted(order)))
    found = find_layout(root, labels=LabelFiles(val_synsets=synsets))
    assert {Path(p).name: w for p, w in found.splits["val"]} == _truth(trees)


def test_flags_point_at_label_files_elsewhere(trees, tmp_path):
    root = tmp_path / "loc"
    shutil.copytree(trees["loc"], root)
    labels = tmp_path / "labels"
    labels.mkdir()
    for name in ("LOC_val_solution.csv", "LOC_synset_mapping.txt"):
        (root / name).rename(labels / name)
    with pytest.raises(DataError, match="`val_labels` FILE") as refused:
        find_layout(root)
    assert flag_message(refused.value).endswith("or pass --val-labels FILE")
    found = find_layout(root, labels=LabelFiles(val_labels=labels / "LOC_val_solution.csv",
                                                synset_mapping=labels / "LOC_synset_mapping.txt"))
    assert {Path(p).name: w for p, w in found.splits["val"]} == _truth(trees)
    assert found.class_names[synth.wnid(1)] == synth.class_name(1)


def test_unknown_layout_says_what_was_expected(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match=r"no ImageNet layout found: expected train/<wnid>/\*\.JPEG"):
        find_layout(tmp_path)


def test_only_some_splits_and_missing_split(trees):
    found = find_layout(trees["folders"], splits=["val"])
    assert list(found.splits) == ["val"] and found.classes == [synth.wnid(k) for k in range(CLASSES)]
    with pytest.raises(UsageError, match="unknown split 'test'"):
        find_layout(trees["folders"], splits=["test"])


def test_stray_files_and_unknown_val_classes_are_unlabeled(trees, tmp_path):
    root = tmp_path / "folders"
    shutil.copytree(trees["folders"], root)
    (root / "train" / "stray.JPEG").write_bytes(b"x")
    extra = root / "val" / "n99999999"
    extra.mkdir()
    (extra / "v.JPEG").write_bytes(b"x")
    found = find_layout(root)
    assert found.unlabeled["train"] == [{"path": "train/stray.JPEG", "reason": "not inside a class folder"}]
    assert found.unlabeled["val"] == [{"path": "val/n99999999/v.JPEG",
                                       "reason": "class n99999999 is not among the training classes"}]
    assert "n99999999" not in found.classes


def test_no_train_folder_takes_classes_from_val(trees, tmp_path):
    root = tmp_path / "valonly"
    shutil.copytree(trees["loc"], root)
    shutil.rmtree(root / "train")
    found = find_layout(root)
    assert found.classes == [synth.wnid(k) for k in range(CLASSES)] and list(found.splits) == ["val"]


# ---------------------------------------------------------------------------- meta.mat

def _synsets():
    return [(k + 1, f"n0{k}", f"thing {k}, stuff") for k in range(5)]


def test_meta_mat_v73_written_by_synth(tmp_path):
    path = tmp_path / "meta.mat"
    synth.write_meta_mat_v73(path, _synsets())
    got = read_synsets(path)
    assert [(s["ILSVRC2012_ID"], s["WNID"], s["words"]) for s in got] == _synsets()


@pytest.mark.parametrize("compress", [True, False])
def test_meta_mat_v5_like_the_devkit(tmp_path, compress):
    """The devkit's meta.mat is MATLAB v5; scipy (if installed) writes a reference one."""
    sio = pytest.importorskip("scipy.io")
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O"), ("children", "O")]
    records = np.zeros((len(_synsets()), 1), dtype=dtype)
    for i, (sid, w, words) in enumerate(_synsets()):
        records[i, 0] = (np.array([[sid]], np.uint16), w, words, np.array([[0.0]]), np.zeros((1, 0)))
    path = tmp_path / "meta.mat"
    sio.savemat(path, {"synsets": records, "other": np.arange(6.0).reshape(2, 3)}, do_compression=compress)
    got = read_synsets(path)
    assert [(s["ILSVRC2012_ID"], s["WNID"], s["words"]) for s in got] == _synsets()
    assert got[0]["num_children"] == 0


def test_not_a_mat_file(tmp_path):
    path = tmp_path / "meta.mat"
    path.write_bytes(b"hello")
    with pytest.raises(DataError, match="not a MATLAB"):
        read_synsets(path)


def test_class_folders_straight_in_src_are_told_where_they_belong(tmp_path):
    """torchvision's ImageFolder layout (SRC/cats/*.jpg): the error says to move them into
    SRC/train/; a folder of no images gets the plain message."""
    from PIL import Image

    for name in ("cats", "dogs"):
        (tmp_path / "flat" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "flat" / name / "a.jpg")
    (tmp_path / "flat" / "notes").mkdir()
    (tmp_path / "flat" / "notes" / "readme.txt").write_text("x")
    with pytest.raises(DataError) as flat:
        find_layout(tmp_path / "flat")
    assert "2 folders of images (cats, dogs): if they are the classes, move them into " \
           f"{tmp_path / 'flat' / 'train'}" in str(flat.value)
    (tmp_path / "other" / "notes").mkdir(parents=True)
    with pytest.raises(DataError) as other:
        find_layout(tmp_path / "other")
    assert "folders of images" not in str(other.value) and "expected train/<wnid>" in str(other.value)
