"""Shared fixtures: a tiny generated ImageNet-like tree and its prepared data folder.

Both are session-scoped and built once (a second or two on the CPU). Treat them as
READ-ONLY: copy them (shutil.copytree) before changing anything.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from alexnet_cli.checkpoint import save_checkpoint
from alexnet_cli.model import AlexNet
from alexnet_cli.pca import compute_pca, write_pca
from alexnet_cli.shards import read_mean_image
from alexnet_cli.prep import PrepOptions, prepare
from alexnet_cli.synth import make_tree


def pytest_configure(config):
    """Under pytest-xdist (pyproject's addopts: a worker per core, up to 4), each worker's torch,
    and the commands its tests start, use their share of the cores: two workers each running
    torch on every core would ask for twice the cores there are."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = str(max(1, len(os.sched_getaffinity(0)) // int(workers)))
        torch.set_num_threads(int(threads))
        os.environ["OMP_NUM_THREADS"] = threads


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory) -> Path:
    """train/<wnid>/*.JPEG and val/<wnid>/*.JPEG: 4 visually distinct classes, 12 train and
    4 val images each, sizes around 64-160 px (alexnet_cli.synth)."""
    return make_tree(tmp_path_factory.mktemp("tiny_tree"), classes=4, train_per_class=12, val_per_class=4)


@pytest.fixture(scope="session")
def tiny_data(tiny_tree, tmp_path_factory) -> Path:
    """`tiny_tree` prepared in raw format (shards of 16 images in blocks of 8, so there are
    several shards and blocks), plus pca.json. READ-ONLY."""
    out = tmp_path_factory.mktemp("tiny_data")
    prepare(tiny_tree, out, PrepOptions(format="raw", shard_size=16, block_size=8, workers=1))
    write_pca(out, compute_pca(out))
    return out


@pytest.fixture(scope="session")
def three_step_data(tmp_path_factory) -> Path:
    """4 classes of 3 training images and 1 validation image (12 and 4), raw, with pca.json: an
    epoch of 3 steps at batch size 4, for the tests of a run's last step or validation that
    need no more images (tiny_data's 3 steps of 16 train 4 times as many). READ-ONLY."""
    root = tmp_path_factory.mktemp("three_step")
    tree = make_tree(root / "tree", classes=4, train_per_class=3, val_per_class=1)
    prepare(tree, root / "data", PrepOptions(format="raw", shard_size=16, block_size=8, workers=1))
    write_pca(root / "data", compute_pca(root / "data"))
    return root / "data"


@pytest.fixture(scope="session")
def make_checkpoint():
    """A factory: make_checkpoint(path, data_dir=None, columns=2) writes a randomly initialised
    4-class network (seed 0) as a checkpoint, with data_dir's mean image (zeros without one)."""
    def make(path: Path, data_dir: Path | None = None, columns: int = 2) -> Path:
        torch.manual_seed(0)
        model = AlexNet(num_classes=4, columns=columns)
        mean = torch.from_numpy(read_mean_image(data_dir)) if data_dir else torch.zeros(256, 256, 3)
        save_checkpoint(path, {"model": model.state_dict(), "classes": ["a", "b", "c", "d"],
                               "class_names": ["a", "b", "c", "d"], "mean_image": mean,
                               "config": {"recipe": "paper", "model": dataclasses.asdict(model.config),
                                          "train": {"mean_crop": "crop"}}})
        return path
    return make


@pytest.fixture
def full_device(tmp_path) -> Path:
    """A device that is always full, as /dev/full (made here, never the real one)."""
    path = tmp_path / "full"
    try:
        os.mknod(path, 0o600 | 0o020000, os.makedev(1, 7))        # S_IFCHR
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot make a device node here ({exc})")
    return path
