"""`alexnet predict`: the top-k classes of the user's own images (paper section 7.1, figure 4
left), through exactly the preprocessing of the training data: any image mode to RGB, shorter
side to 256, the central 256x256 patch (alexnet_cli.images, as `prep`; a photo is first turned
upright as its EXIF orientation says), then the centre crop of (image - mean image) or the
average softmax of the ten test crops (section 5.1). With one crop that is
LoadedModel.preprocess, the same load and crop for one image in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from alexnet_cli.checkpoint import LoadedModel, load_model
from alexnet_cli.config import TOP_K
from alexnet_cli.errors import CheckpointError, NotFiniteError, UsageError
from alexnet_cli.devices import resolve_device
from alexnet_cli.evaluate import Member, average_softmax, check_crops
from alexnet_cli.figures import check_picture_path, grid, hbar_chart, hstack, labeled_tile, save_picture
from alexnet_cli.images import load_image, load_images
from alexnet_cli.paths import check_output, path_list
from alexnet_cli.progress import NullReporter, Reporter
from alexnet_cli.shards import read_manifest


@dataclass
class TopClass:
    wnid: str
    name: str
    index: int
    prob: float

    def to_json(self) -> dict[str, Any]:
        return {"class": self.wnid, "name": self.name, "index": self.index, "prob": self.prob}


@dataclass
class Prediction:
    image: str               # the path as given
    top: list[TopClass]      # most probable first
    true_class: TopClass | None = None   # the image's class when its folder is named so (`folder_class`)

    def to_json(self) -> dict[str, Any]:
        truth = None if self.true_class is None else self.true_class.to_json()
        return {"image": self.image, "top": [t.to_json() for t in self.top], "true_class": truth}


def folder_class(path: Path, classes: Sequence[str]) -> int | None:
    """The index of the class an image's folder is named after (`val/n01440764/x.JPEG`, the
    layout `prep` reads), or None: an image of a labelled tree says its own true class."""
    try:
        return list(classes).index(path.parent.name)
    except ValueError:
        return None


def _mean_and_names(loaded: LoadedModel, data_dir: Path | None) -> tuple[torch.Tensor, list[str], list[str]]:
    """The checkpoint's mean image and class names; one without them (a bare state_dict, or
    weights saved with their config alone) takes them from `data_dir`."""
    classes, names = loaded.classes, loaded.class_names
    if data_dir is not None:
        manifest = read_manifest(data_dir)
        if len(manifest.classes) != len(classes):
            raise CheckpointError(f"{loaded.path}: predicts {len(classes)} classes but {data_dir} has "
                                  f"{len(manifest.classes)}")
        if not loaded.lists_classes:    # no names of its own
            classes, names = list(manifest.classes), list(manifest.class_names)
    return loaded.needed_mean(data_dir), classes, names


def predict(checkpoint: str | Path, images: str | Path | Sequence[str | Path], *, k: int | None = None, crops: int = 1,
            device: str | torch.device | None = None, bf16: bool = True, data_dir: str | Path | None = None,
            batch_size: int = 32, progress: Reporter = NullReporter()) -> list[Prediction]:
    """Top-k classes and probabilities for each image file, in the order given.

    One image may be given as a path. A file that is not a readable image raises DataError
    naming it, before any work is done. `k`: None for the top 5 (TOP_K), or every class of a
    network of fewer; a `k` asked above the network's classes shows them all, with a note.
    """
    images = path_list(images)
    check_crops(crops)
    if k is not None and k < 1:
        raise UsageError(f"k must be at least 1, got {k}", field="k", value=k)
    if batch_size < 1:
        raise UsageError(f"batch_size must be positive, got {batch_size}", field="batch_size", value=batch_size)
    dev = resolve_device(device)
    pixels = load_images(images, exif=True)               # each uint8 (256, 256, 3), upright as LoadedModel.preprocess
    loaded = load_model(checkpoint, dev)
    mean, classes, names = _mean_and_names(loaded, None if data_dir is None else Path(data_dir))
    loaded.tell_assumptions(progress)
    member = Member(loaded.model, mean.to(dev, torch.float32), loaded.mean_crop)
    if k is None:
        k = min(TOP_K, len(classes))
    elif k > len(classes):
        progress.log(f"Note: the network has {len(classes)} classes, fewer than `k` {k}: all of them are shown",
                     mentions=("k",))
        k = len(classes)
    out: list[Prediction] = []
    for start in range(0, len(pixels), batch_size):
        batch = torch.from_numpy(np.stack(pixels[start:start + batch_size])).to(dev)  # (B, 256, 256, 3)
        probs = average_softmax([member], batch, crops=crops, bf16=bf16)              # (B, C)
        finite = torch.isfinite(probs).all(dim=1).tolist()                               # host sync
        if not all(finite):
            image = images[start + finite.index(False)]
            raise NotFiniteError(f"{checkpoint}: the network's outputs are NaN or infinite for {image} (its "
                                 "weights are finite but too large: the training diverged?)")
        top = probs.topk(k, dim=1)                                                       # (B, k)
        rows = probs.tolist() if any(folder_class(Path(p), classes) is not None
                                     for p in images[start:start + batch_size]) else None      # host sync
        for j, (path, idx, prob) in enumerate(zip(images[start:start + batch_size], top.indices.tolist(),
                                                  top.values.tolist())):
            c = folder_class(Path(path), classes)
            truth = None if c is None else TopClass(classes[c], names[c], c, rows[j][c])
            out.append(Prediction(str(path), [TopClass(classes[i], names[i], i, p) for i, p in zip(idx, prob)], truth))
    return out


def draw_predictions(predictions: Sequence[Prediction], out: str | Path, *, cols: int = 2,
                     thumb: int = 160, true_classes: Sequence[str | None] | None = None) -> Path:
    """The paper's figure 4 (left): each image beside bars for its five most probable classes;
    `out`'s suffix names the format (figures.check_picture_path, checked before the work); it is
    none of the images (paths.check_output).

    `true_classes`: each image's correct class (its id, TopClass.wnid; None where unknown), shown
    under the image and, as in the paper, its bar drawn red when it is among the five; by
    default each prediction's own `true_class` (its folder's class, `folder_class`)."""
    check_picture_path(out)
    check_output(out, "out", [("an image", [pred.image for pred in predictions])])
    if true_classes is None and any(p.true_class is not None for p in predictions):
        true_classes = [None if p.true_class is None else p.true_class.wnid for p in predictions]
    if true_classes is not None and len(true_classes) != len(predictions):
        raise UsageError(f"true_classes has {len(true_classes)} entries for {len(predictions)} predictions",
                         field="true_classes", value=len(true_classes))
    panels = []
    for i, pred in enumerate(predictions):
        top = pred.top[:5]
        tile = labeled_tile(load_image(pred.image, exif=True), Path(pred.image).name, size=thumb)
        truth = None if true_classes is None else true_classes[i]
        ranks = [j for j, t in enumerate(top) if t.wnid == truth]
        if truth is not None:
            named = pred.true_class.name if pred.true_class is not None and pred.true_class.wnid == truth else truth
            shown = top[ranks[0]].name if ranks else f"{named} (not in the top {len(top)})"
            tile = labeled_tile(tile, f"true: {shown}")                   # a second line under the image
        bars = hbar_chart([t.name for t in top], [t.prob for t in top], width=2 * thumb,
                          bar_height=(thumb - 24) // 5, highlight=ranks[0] if ranks else None,
                          value_format="{:.2%}")             # as the predict table: 99.99% is not 100.0%
        panels.append(hstack([tile, bars]))
    return save_picture(grid(panels, cols), out)
