"""The generated tree (alexnet_cli.synth): layouts, determinism, odd files, and classes that
differ visibly enough for a small network to learn them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from alexnet_cli import synth
from alexnet_cli.images import load_image


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_folders_layout_counts_and_sizes(tiny_tree):
    for k in range(4):
        train = sorted((tiny_tree / "train" / synth.wnid(k)).glob("*.JPEG"))
        val = sorted((tiny_tree / "val" / synth.wnid(k)).glob("*.JPEG"))
        assert len(train) == 12 and len(val) == 4
        for p in train[:3] + val[:1]:
            with Image.open(p) as img:
                assert img.format == "JPEG" and img.mode == "RGB"
                assert 64 <= min(img.size) <= 128 and max(img.size) <= 160
    assert (tiny_tree / "LOC_synset_mapping.txt").read_text().splitlines()[0] == f"{synth.wnid(0)} red discs"


def test_same_seed_same_tree_other_seed_differs(tmp_path):
    a = synth.make_tree(tmp_path / "a", classes=2, train_per_class=2, val_per_class=1, seed=3)
    b = synth.make_tree(tmp_path / "b", classes=2, train_per_class=2, val_per_class=1, seed=3)
    c = synth.make_tree(tmp_path / "c", classes=2, train_per_class=2, val_per_class=1, seed=4)
    assert _files(a) == _files(b)
    for f in _files(a):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    train = [f for f in _files(a) if f.startswith("train/")]
    assert train == [f for f in _files(c) if f.startswith("train/")]
    assert all((a / f).read_bytes() != (c / f).read_bytes() for f in train)


@pytest.mark.parametrize("layout, expected", [
    ("loc", ["LOC_synset_mapping.txt", "LOC_val_solution.csv", "val/ILSVRC2012_val_00000001.JPEG"]),
    ("devkit", ["ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt",
                "ILSVRC2012_devkit_t12/data/meta.mat", "val/ILSVRC2012_val_00000001.JPEG"]),
    ("kaggle", ["ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000001.JPEG", "LOC_val_solution.csv"]),
])
def test_flat_layouts_write_their_label_files(tmp_path, layout, expected):
    root = synth.make_tree(tmp_path, classes=3, train_per_class=1, val_per_class=2, layout=layout)
    files = _files(root)
    for f in expected:
        assert f in files
    assert sum(f.endswith(".JPEG") and "/val/" in f"/{f}" for f in files) == 6


def test_unknown_layout_is_refused(tmp_path):
    with pytest.raises(ValueError, match="layout"):
        synth.make_tree(tmp_path, layout="zip")


def test_odd_files_are_what_they_claim(tmp_path):
    root = synth.make_tree(tmp_path, classes=2, train_per_class=1, val_per_class=1, odd_files=True)
    folder = root / "train" / synth.wnid(0)
    assert set(synth.ODD_FILES) <= {p.name for p in folder.iterdir()}
    with Image.open(folder / "odd_cmyk.JPEG") as img:
        assert img.mode == "CMYK"
    with Image.open(folder / "odd_gray.JPEG") as img:
        assert img.mode == "L"
    with Image.open(folder / "odd_png.JPEG") as img:
        assert img.format == "PNG"
    assert (folder / "odd_empty.JPEG").stat().st_size == 0
    assert not list((root / "train" / synth.wnid(1)).glob("odd_*"))


def test_classes_are_separable_by_a_nearest_centroid_on_tiny_thumbnails(tiny_tree):
    """The demo trains on these: a trivial classifier on 8x8 thumbnails must already get
    most validation images right."""
    def feats(split):
        xs, ys = [], []
        for k in range(4):
            for p in sorted((tiny_tree / split / synth.wnid(k)).glob("*.JPEG")):
                thumb = Image.fromarray(load_image(p)).resize((8, 8), Image.Resampling.BOX)
                xs.append(np.asarray(thumb, np.float64).reshape(-1))
                ys.append(k)
        return np.array(xs), np.array(ys)

    xt, yt = feats("train")
    xv, yv = feats("val")
    centroids = np.stack([xt[yt == k].mean(0) for k in range(4)])
    pred = np.argmin(((xv[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == yv).mean() >= 0.75


def test_many_classes_get_distinct_names_and_sorted_wnids():
    names = [synth.class_name(k) for k in range(20)]
    assert len(set(names)) == 20
    wnids = [synth.wnid(k) for k in range(20)]
    assert wnids == sorted(wnids) and len(set(wnids)) == 20
