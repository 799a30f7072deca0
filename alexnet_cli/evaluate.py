"""`alexnet eval`: top-1 / top-5 error of one model or an ensemble (paper sections 5.1 and 7).

At test time the network sees either the centre 224x224 crop of (image - mean image) or
the paper's ten crops (four corners, centre, and their mirrors); its softmax outputs are
averaged over the crops and, for an ensemble ("5 CNNs", section 7), over the models too.

Two levels:
- `evaluate_models(members, loader, ...)`: models already in memory over a ShardLoader;
  the trainer's per-epoch validation calls `evaluate_model` (one member). Counting stays on
  the device; one host sync at the end. When the loader is one rank of several, the counts
  are all-reduced so that the whole split is covered exactly once.
- `evaluate(checkpoints, data_dir, ...)`: the command: loads checkpoints, checks that their
  classes are the data's, builds the loader, returns an `EvalResult`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from alexnet_cli.atomic import save_output
from alexnet_cli.augment import channel_mean, test_crops
from alexnet_cli.checkpoint import LoadedModel, load_model
from alexnet_cli.config import check_crops
from alexnet_cli.devices import resolve_device
from alexnet_cli.errors import AlexnetError, CheckpointError, DataError, NotFiniteError, UsageError
from alexnet_cli.loader import ShardLoader, trained_decode
from alexnet_cli.metrics import TOP_K, TopKCounts, TopKMeter
from alexnet_cli.paths import check_output, path_list
from alexnet_cli.progress import NullReporter, Reporter
from alexnet_cli.runlog import json_text
from alexnet_cli.shards import read_manifest, read_split_index

@dataclass
class Member:
    """One model of an ensemble with the preprocessing it was trained with."""

    model: nn.Module
    mean_image: torch.Tensor    # float32 (256, 256, 3), 0-255 units
    mean_crop: str = "crop"      # "crop": crop of (image - mean); "center": the code's centre mean; "channel"
    decode: str = "auto"         # the --decode its run trained with (loader.trained_decode)

    @cached_property
    def mean_rgb(self) -> torch.Tensor:
        """(3,) float32 on the mean image's device: its average colour, which mean_crop "channel"
        subtracts; computed on first use, then kept for every batch and crop (a Member is made
        anew for another mean image)."""
        return channel_mean(self.mean_image)


@dataclass
class Predictions:
    """Each image's top-k classes and averaged softmax probabilities, in the split's order."""

    indices: np.ndarray   # (N,) int64, position of the image in the split
    labels: np.ndarray    # (N,) int64, true class
    top: np.ndarray       # (N, k) int64, class indices, most probable first
    probs: np.ndarray     # (N, k) float32


@dataclass
class EvalResult:
    top1_error: float             # fractions in [0, 1]; the table prints percent
    top5_error: float
    n: int
    crops: int
    counts: TopKCounts            # per-class images and hits
    predictions: Predictions | None = None
    classes: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    split: str = "val"
    members: list[TopKCounts] = field(default_factory=list)   # an ensemble's: each model on its own

    def to_json(self) -> dict[str, Any]:
        alone = self.members or ([self.counts] if len(self.checkpoints) == 1 else [])   # one model: itself
        return {"top1_error": self.top1_error, "top5_error": self.top5_error, "n": self.n,
                "crops": self.crops, "k": self.counts.k, "split": self.split,
                "checkpoints": self.checkpoints, "models": len(self.checkpoints),
                "members": [{"checkpoint": path, "top1_error": c.top1_error, "top5_error": c.top5_error}
                            for path, c in zip(self.checkpoints, alone)]}


@torch.no_grad()
def average_softmax(members: Sequence[Member], images: torch.Tensor, *, crops: int = 1,
                    bf16: bool = True, each: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Softmax averaged over `crops` test crops and over the members: uint8 (B, 256, 256, 3)
    -> float32 (B, C). Each member sees crops of its own mean-subtracted image. `each`: gets
    every member's own softmax (averaged over the crops), in order."""
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and images.is_cuda)
    total = None
    for m in members:
        rgb = m.mean_rgb if m.mean_crop == "channel" else None                 # (3,), computed once per member
        own = None
        for x in test_crops(images, m.mean_image, crops, mean_crop=m.mean_crop, mean_rgb=rgb):  # (B, 3, 224, 224)
            with autocast:
                logits = m.model(x)                                    # (B, C)
            p = logits.float().softmax(dim=1)
            own = p if own is None else own.add_(p)
        if each is not None:
            each.append(own / crops)
        total = own if total is None else total.add_(own)
    return total / (crops * len(members))


@torch.no_grad()
def evaluate_models(members: Sequence[Member], loader: ShardLoader, *, crops: int = 1, bf16: bool = True,
                    keep_predictions: bool = False, k: int = TOP_K, num_classes: int | None = None,
                    progress: Reporter = NullReporter()) -> EvalResult:
    """Top-1 / top-k error of the averaged softmax of `members` over every batch of `loader`.

    The loader should be unshuffled with drop_last=False. If it is one rank of a
    torch.distributed group (loader.world_size > 1), every rank must call this; counts
    (and predictions, if kept) are combined so each rank returns the whole split's result.
    `num_classes` defaults to the models' fc8 width (needed up front so that a rank with no
    batch still joins the all-reduce).
    """
    check_crops(crops)
    if not members:
        raise AlexnetError("no model to evaluate")
    device = torch.device(getattr(loader, "device", "cpu"))
    if num_classes is None and hasattr(members[0].model, "fc8"):
        num_classes = members[0].model.fc8.out_features
    meter = None if num_classes is None else TopKMeter(num_classes, device, k)
    alone: list[TopKMeter] = []                # an ensemble's members each on its own (the paper's 1 CNN vs 5)
    bad = torch.zeros((), dtype=torch.int32, device=device)        # a NaN or infinite output seen
    kept: list[tuple[torch.Tensor, ...]] = []
    was_training = [m.model.training for m in members]
    members = [Member(m.model.eval(), m.mean_image.to(device, torch.float32), m.mean_crop) for m in members]
    try:
        with progress.task(f"eval {crops}-crop", total=loader.num_images, unit="img") as task:
            for batch in loader.epoch(0):
                each: list[torch.Tensor] | None = [] if len(members) > 1 else None
                probs = average_softmax(members, batch.images, crops=crops, bf16=bf16, each=each)  # (B, C)
                bad |= (~torch.isfinite(probs).all()).to(torch.int32)
                if meter is None:
                    meter = TopKMeter(probs.shape[1], device, k)
                meter.update(probs, batch.labels)
                if each is not None:
                    alone = alone or [TopKMeter(meter.num_classes, device, k) for _ in members]
                    for own, p in zip(alone, each):
                        own.update(p, batch.labels)
                if keep_predictions:
                    top = probs.topk(meter.k, dim=1)
                    kept.append((batch.indices, batch.labels, top.indices, top.values))
                task.advance(len(batch.labels))
    finally:
        for m, training in zip(members, was_training):
            m.model.train(training)
    if meter is None:
        raise DataError("the split holds no images to evaluate")
    if len(members) > 1 and not alone:         # a rank with no batch joins the members' all-reduces too
        alone = [TopKMeter(meter.num_classes, device, k) for _ in members]
    if getattr(loader, "world_size", 1) > 1:
        for m in (meter, *alone):
            m.all_reduce()
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    if bad.item():                                                     # host sync
        raise NotFiniteError("the network's outputs are NaN or infinite on this split (its weights are finite "
                             "but too large: the training diverged?); no error rates for it")
    counts = meter.result()
    if counts.total == 0:
        raise DataError("the split holds no images to evaluate")
    predictions = _gather_predictions(kept, meter.k, getattr(loader, "world_size", 1)) if keep_predictions else None
    return EvalResult(top1_error=counts.top1_error, top5_error=counts.top5_error, n=counts.total,
                      crops=crops, counts=counts, predictions=predictions, members=[m.result() for m in alone])


def evaluate_model(model: nn.Module, loader: ShardLoader, mean_image: torch.Tensor, *, crops: int = 1,
                   mean_crop: str = "crop", bf16: bool = True, keep_predictions: bool = False,
                   num_classes: int | None = None, progress: Reporter = NullReporter()) -> EvalResult:
    """One model in memory (the trainer's per-epoch validation): see `evaluate_models`."""
    return evaluate_models([Member(model, mean_image, mean_crop)], loader, crops=crops, bf16=bf16,
                           keep_predictions=keep_predictions, num_classes=num_classes, progress=progress)


def _gather_predictions(kept: list[tuple[torch.Tensor, ...]], k: int, world_size: int) -> Predictions:
    if kept:
        parts = [torch.cat(col).cpu().numpy() for col in zip(*kept)]
    else:
        parts = [np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, k), np.int64),
                 np.zeros((0, k), np.float32)]
    if world_size > 1 and dist.is_available() and dist.is_initialized():
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, parts)
        parts = [np.concatenate(col) for col in zip(*gathered)]
    indices, labels, top, probs = parts
    order = np.argsort(indices, kind="stable")
    return Predictions(indices[order].astype(np.int64), labels[order].astype(np.int64),
                       top[order].astype(np.int64), probs[order].astype(np.float32))


def check_classes(loaded: LoadedModel, classes: list[str], data_dir: Path) -> None:
    """The checkpoint must predict the data's classes in the data's order, or the error is
    meaningless. A checkpoint without a class list (a bare state_dict, weights saved with their
    config alone) only has to match in number."""
    mine = loaded.classes
    bare = not loaded.lists_classes
    if len(mine) != len(classes):
        raise CheckpointError(f"{loaded.path}: predicts {len(mine)} classes but {data_dir} has {len(classes)}; "
                              "evaluate a checkpoint on the data it was trained for")
    if bare or mine == classes:
        return
    if sorted(mine) == sorted(classes):
        i = next(i for i, (a, b) in enumerate(zip(mine, classes)) if a != b)
        raise CheckpointError(f"{loaded.path}: has the data's classes in another order (class {i} is {mine[i]} "
                              f"in the checkpoint, {classes[i]} in {data_dir})")
    missing = [c for c in classes if c not in set(mine)]
    raise CheckpointError(f"{loaded.path}: its classes are not those of {data_dir} ({len(missing)} of the "
                          f"data's classes unknown to it, e.g. {', '.join(missing[:3])})")


def load_members(checkpoints: Sequence[Path], data_dir: Path, classes: list[str],
                 device: torch.device, progress: Reporter = NullReporter()) -> list[Member]:
    """Load each checkpoint on `device`, check its classes; a bare state_dict borrows the data's
    mean image (it carries none)."""
    members = []
    for path in checkpoints:
        loaded = load_model(path, device)
        check_classes(loaded, classes, data_dir)
        loaded.tell_assumptions(progress)
        members.append(Member(loaded.model, loaded.mean_or_data(data_dir).to(device), loaded.mean_crop,
                              trained_decode(loaded.config)))
    return members


def evaluate(checkpoints: str | Path | Sequence[str | Path], data_dir: str | Path, *, split: str = "val",
             crops: int = 1, batch_size: int = 128, device: str | torch.device | None = None, bf16: bool = True,
             keep_predictions: bool = False, workers: int | None = None, decode: str | None = None,
             progress: Reporter = NullReporter()) -> EvalResult:
    """Top-1 / top-5 error of the checkpoints' (ensemble's) averaged softmax on `split` of a
    prepared data folder, with 1 or 10 crops per image. One checkpoint may be given as a path."""
    checkpoints = path_list(checkpoints)
    check_crops(crops)
    if batch_size < 1:
        raise UsageError(f"batch_size must be positive, got {batch_size}", field="batch_size", value=batch_size)
    if not checkpoints:
        raise AlexnetError("give at least one checkpoint")
    dev = resolve_device(device)
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    manifest.asked_split(split)                            # a clear error naming the splits there are
    members = load_members(checkpoints, data_dir, manifest.classes, dev, progress)
    loader = ShardLoader(data_dir, split, batch_size, shuffle=False, drop_last=False, device=dev, workers=workers,
                         decode=decode or members[0].decode)   # unless told, the decoder the run trained with
    result = evaluate_models(members, loader, crops=crops, bf16=bf16, keep_predictions=keep_predictions,
                             progress=progress)
    result.classes, result.class_names = list(manifest.classes), list(manifest.class_names)
    result.checkpoints, result.split = [str(p) for p in checkpoints], split
    return result


def write_per_class(result: EvalResult, path: str | Path) -> Path:
    """CSV, one row per class: index, wnid, name, images, top-1 and top-k error (fractions); `path`
    is none of the checkpoints evaluated, nor a data folder's or a run's file (paths.check_output)."""
    path = Path(path)
    check_output(path, "path", [("a checkpoint", result.checkpoints)])
    top1, topk = result.counts.class_errors()
    k = result.counts.k
    rows = [[i, wnid, name, int(result.counts.n[i]), _fmt(top1[i]), _fmt(topk[i])]
            for i, (wnid, name) in enumerate(zip(result.classes, result.class_names))]
    return _write_csv(path, ["index", "class", "name", "n", "top1_error", f"top{k}_error"], rows)


def write_predictions(result: EvalResult, path: str | Path, data_dir: str | Path) -> Path:
    """Each image's top-k classes and probabilities: JSON Lines for *.jsonl / *.json, else CSV;
    `path` is none of the checkpoints evaluated, nor a file of `data_dir` (paths.check_output)."""
    if result.predictions is None:
        raise AlexnetError("no predictions kept: evaluate with keep_predictions=True")
    check_output(path, "path", [("a checkpoint", result.checkpoints)])
    path, p = Path(path), result.predictions
    paths, _ = read_split_index(data_dir, result.split)
    names = result.classes
    if path.suffix.lower() in (".jsonl", ".json"):
        lines = [json_text({"index": int(p.indices[i]), "path": paths[p.indices[i]], "label": names[p.labels[i]],
                             "top": [{"class": names[c], "index": int(c), "prob": round(float(q), 6)}
                                     for c, q in zip(p.top[i], p.probs[i])]}) + "\n"
                 for i in range(len(p.indices))]
        return _write_file(path, "".join(lines).encode("utf-8"))
    k = p.top.shape[1]
    header = ["index", "path", "label"] + [f"{x}{j}" for j in range(1, k + 1) for x in ("class", "prob")]
    rows = [[int(p.indices[i]), paths[p.indices[i]], names[p.labels[i]]]
            + [v for c, q in zip(p.top[i], p.probs[i]) for v in (names[c], f"{q:.6f}")]
            for i in range(len(p.indices))]
    return _write_csv(path, header, rows)


def _fmt(x: float) -> str:
    return "" if np.isnan(x) else f"{x:.6f}"


def _ensure_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AlexnetError(f"{path}: cannot create its folder ({exc})") from None


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    return _write_file(path, text.getvalue().encode("utf-8"))


def _write_file(path: Path, data: bytes) -> Path:
    """`data` into `path` atomically (atomic.save_output); a folder that cannot be made is said so."""
    _ensure_parent(path)
    return save_output(path, data, "it")
