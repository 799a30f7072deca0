"""`alexnet demo`: the whole pipeline of the paper on a small generated data set, in a few
CPU minutes: data (section 3) -> prep -> PCA (5.1) -> training (5, 6) -> 1- and 10-crop
evaluation (5.1, 7) -> conv1 kernels (7.1, figure 3) -> nearest neighbours in fc7 space and
top-k predictions (7.1, figure 4).

Every step calls the same library function as its subcommand, on the real network
(AlexNet, 224x224 crops, the trainer's code path); only the data and the schedule are small.

The data: `alexnet_cli.synth.make_tree`, procedurally drawn classes that differ in hue and
shape (red discs, green stripes, blue triangles, yellow checks, ...), at varied image sizes,
with the oddities of real ImageNet copies (CMYK, greyscale, a PNG named .JPEG: converted;
a truncated and an empty file: skipped and listed).

The knobs that differ from the paper (`DemoConfig`), and why:
- 4 classes, 60 training and 15 validation images per class: the network must learn
  something real in about a hundred optimizer steps on two CPU cores.
- batch 16 (paper 128): more, smaller steps in the same time; an AlexNet step on two CPU
  cores runs at roughly 12-15 images/s.
- learning rate 0.0025 = 2 x 0.01 x 16/128 (paper 0.01 at batch 128): twice the paper's rate
  per image scaled with the batch (the linear scaling rule; any batch size gets 2 x 0.01 x B/128
  unless `lr` is given). With the paper's dropout (outputs not rescaled while training) the
  linearly scaled 0.00125 learns too slowly for 90 steps (validation top-1 error 27% after 6
  epochs, measured), 0.0025 reaches 0%; the paper's 0.01 at batch 16 makes the loss jump to
  several times chance on this set.
- `bias_fill` 0.1 (paper 1, Caffe's reference model 0.1): with the paper's bias of 1 the
  loss often sits at chance for a long while on small data (docs/paper-vs-code.md, init), too long here.
- 6 epochs, the paper's plateau schedule (divide by 10 when validation error stops improving).
Everything else is the paper's: dropout 0.5, momentum 0.9, weight decay 0.0005, PCA colour
noise, random crops and flips, LRN, overlapping pooling, two columns.

Reproducible: the data, the initial weights, the data order and the augmentation all derive
from `seed`; the same seed on the same device gives the same numbers.

The output folder (`out`) holds the generated tree (`images/`), the prepared data (`data/`),
the run (`run/`, checkpoints in `run/checkpoints/`), the figures and a marker file
(`.alexnet-demo.json`) naming the settings. Run again with the same settings, it reuses
what is finished: the tree, prep (a no-op rerun), pca.json, and training resumes from
`last.pt` (nothing to do when it finished); evaluation and the figures are redone (seconds).
With other settings, the demo's own files in it are deleted first. A non-empty folder
without the marker is never touched: that is an error.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from alexnet_cli.atomic import partial_path, publish
from alexnet_cli.config import DEMO_OUT as DEFAULT_OUT, DemoConfig
from alexnet_cli.errors import AlexnetError
from alexnet_cli.evaluate import EvalResult, evaluate
from alexnet_cli.kernels import KernelReport, kernel_report
from alexnet_cli.neighbors import QueryResult, draw_neighbors, find_neighbors
from alexnet_cli.pca import PCA_FILE, PcaStats, compute_pca, read_pca, write_pca
from alexnet_cli.predict import Prediction, draw_predictions, predict
from alexnet_cli.prep import PrepOptions, PrepResult, prepare
from alexnet_cli.progress import NullReporter, Reporter
from alexnet_cli.runlog import RunFolder, json_text, read_metrics
from alexnet_cli.shards import read_split_index
from alexnet_cli.synth import make_tree
from alexnet_cli.train import RunOptions, train

MARKER = ".alexnet-demo.json"
MARKER_VERSION = 1
# What the demo writes into `out`: the only entries it ever deletes (and only under its marker).
IMAGES, DATA, RUN = "images", "data", "run"
KERNELS_PNG, NEIGHBORS_PNG, PREDICTIONS_PNG = "kernels.png", "neighbors.png", "predictions.png"
OWNED = (IMAGES, IMAGES + ".partial", DATA, RUN, KERNELS_PNG, NEIGHBORS_PNG, PREDICTIONS_PNG)


@dataclass
class DemoResult:
    """What every step produced; filled in step by step (see `run_demo`'s `on_step`)."""

    out: Path
    config: DemoConfig
    reused: bool = False                              # the folder held an earlier demo with these settings
    timings: dict[str, float] = field(default_factory=dict)   # step -> seconds
    tree: Path | None = None
    data: Path | None = None
    run: Path | None = None
    checkpoint: Path | None = None
    prep: PrepResult | None = None
    pca: PcaStats | None = None
    train: dict[str, Any] = field(default_factory=dict)      # train()'s summary
    trained: bool = True                              # False: the run had finished before, nothing was trained
    epochs: list[dict[str, Any]] = field(default_factory=list)  # the run's per-epoch records
    evals: dict[int, EvalResult] = field(default_factory=dict)   # crops -> result
    kernels: KernelReport | None = None
    neighbors: list[QueryResult] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)
    figures: dict[str, Path] = field(default_factory=dict)

    @property
    def chance_top1_error(self) -> float:
        return 1.0 - 1.0 / self.config.classes

    @property
    def chance_top5_error(self) -> float:
        return max(0.0, 1.0 - 5.0 / self.config.classes)

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out), "reused": self.reused,
            "config": {**dataclasses.asdict(self.config), "lr": self.config.learning_rate},   # the rate trained with
            "device": self.train.get("device"),
            "chance": {"top1_error": self.chance_top1_error, "top5_error": self.chance_top5_error},
            "prep": None if self.prep is None else {
                "images": self.prep.images, "skipped": [dict(s) for s in self.prep.manifest.skipped],
                "splits": {k: v.count for k, v in self.prep.manifest.splits.items()},
                "up_to_date": self.prep.up_to_date},
            "pca": None if self.pca is None else {"eigenvalues": [float(v) for v in self.pca.eigenvalues]},
            "train": {"epochs": self.epochs, "best_top1_error": self.train.get("best_top1_error"),
                      "steps": self.train.get("step")},
            "eval": {str(c): r.to_json() for c, r in self.evals.items()},
            "val_top1_error": {str(c): r.top1_error for c, r in self.evals.items()},
            "val_top5_error": {str(c): r.top5_error for c, r in self.evals.items()},
            "kernels": None if self.kernels is None else {c.name: c.mean for c in self.kernels.columns},
            "neighbors": [r.to_json() for r in self.neighbors],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "paths": {"tree": _str(self.tree), "data": _str(self.data), "run": _str(self.run),
                      "checkpoint": _str(self.checkpoint), **{k: str(v) for k, v in self.figures.items()}},
        }


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


# ---------------------------------------------------------------------------- the output folder

def check_out(out: str | Path) -> None:
    """Refuse an `out` the demo may not use: a file, or a non-empty folder without the demo's
    marker. Changes nothing: the CLI asks before it prints anything."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AlexnetError(f"out {out} exists and is not a folder: choose another folder", field="out", value=out)
    if not (out / MARKER).is_file() and out.exists() and any(out.iterdir()):
        raise AlexnetError(f"out {out} is not empty and holds no earlier demo ({MARKER} missing): choose another "
                           "folder; the demo never deletes a folder it did not create", field="out", value=out)


def claim_out(out: Path, config: DemoConfig) -> bool:
    """Make `out` the demo's folder; True if it holds an earlier demo with the same settings
    (reuse it). An earlier demo with other settings is cleared (only the demo's own entries);
    a non-empty folder without the marker is an error (check_out)."""
    marker = out / MARKER
    check_out(out)
    if marker.is_file():
        try:
            saved = json.loads(marker.read_text(encoding="utf-8")).get("config")
        except (OSError, ValueError, AttributeError):
            saved = None
        if saved == config.key():
            return True
        for name in OWNED:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json_text({"alexnet_demo": MARKER_VERSION, "config": config.key()}, indent=2) + "\n",
                      encoding="utf-8")
    return False


# ---------------------------------------------------------------------------- the steps

def make_data(out: Path, config: DemoConfig) -> Path:
    """The generated ImageNet-like tree, written as images.partial and published when complete."""
    tree = out / IMAGES
    if tree.is_dir():
        return tree
    partial = partial_path(tree)
    if partial.exists():                # a killed demo's: generated again from the start
        shutil.rmtree(partial)
    make_tree(partial, classes=config.classes, train_per_class=config.train_per_class,
              val_per_class=config.val_per_class, seed=config.seed, odd_files=True)
    publish(partial, tree)
    return tree


def pca_step(data: Path, progress: Reporter) -> PcaStats:
    """pca.json: reused when an earlier demo wrote it, computed otherwise."""
    if (data / PCA_FILE).is_file():
        return read_pca(data)
    stats = compute_pca(data, progress=progress)
    write_pca(data, stats)
    return stats


def train_step(data: Path, run: Path, config: DemoConfig, progress: Reporter) -> dict[str, Any]:
    """The trainer with the demo's knobs; resumes (or does nothing) when `run` holds its run."""
    model_cfg, train_cfg = config.configs()
    resume = RunFolder(run).last.exists()      # a first run is no resume: no "nothing to resume" note
    options = RunOptions(device=config.device, seed=config.seed, resume=resume, log_every=5)
    return train(data, run, model_cfg, train_cfg, options, recipe="paper", progress=progress)


def epoch_records(run: Path) -> list[dict[str, Any]]:
    """The run's per-epoch records (train and validation error) from metrics.jsonl."""
    return [r for r in read_metrics(run) if r.get("kind") == "epoch"]


def query_images(tree: Path, data: Path, count: int) -> list[Path]:
    """Up to `count` validation images, the first of each class in the split's order, then the next."""
    paths, labels = read_split_index(data, "val")
    seen: dict[int, int] = {}
    rank = []                                     # rank[i]: how many images of its class come before i
    for y in labels.tolist():
        rank.append(seen.get(y, 0))
        seen[y] = rank[-1] + 1
    order = sorted(range(len(paths)), key=lambda i: (rank[i], int(labels[i])))
    return [tree / paths[i] for i in order[:count]]


# ---------------------------------------------------------------------------- the whole demo

def run_demo(out: str | Path = DEFAULT_OUT, config: DemoConfig = DemoConfig(), *,
             progress: Reporter = NullReporter(),
             on_step: Callable[[str, DemoResult], None] | None = None) -> DemoResult:
    """Run every step of the pipeline into `out` (see the module doc); `on_step(name, result)`
    is called after each step, so that a caller can show results as they come."""
    config.check()
    out = Path(out)
    result = DemoResult(out, config, reused=claim_out(out, config))
    tree_dir, data_dir, run_dir = out / IMAGES, out / DATA, out / RUN
    checkpoint = RunFolder(run_dir).last

    def step(name: str, fn: Callable[[], None]) -> None:
        progress.log(f"demo: {name}")
        t0 = time.perf_counter()
        fn()
        result.timings[name] = time.perf_counter() - t0
        if on_step is not None:
            on_step(name, result)

    def data() -> None:
        result.tree = make_data(out, config)

    def prep() -> None:
        result.prep = prepare(tree_dir, data_dir, PrepOptions(format="raw"), progress=progress)
        result.data = data_dir

    def pca() -> None:
        result.pca = pca_step(data_dir, progress)

    def fit() -> None:
        done_before = len(epoch_records(run_dir)) if checkpoint.exists() else -1
        result.train = train_step(data_dir, run_dir, config, progress)
        result.run, result.checkpoint, result.epochs = run_dir, checkpoint, epoch_records(run_dir)
        result.trained = len(result.epochs) != done_before          # a finished run, resumed: no new epoch

    def evaluation(crops: int) -> Callable[[], None]:
        def run() -> None:
            result.evals[crops] = evaluate([checkpoint], data_dir, crops=crops, batch_size=config.batch_size,
                                           device=config.device, progress=progress)
        return run

    def kernels() -> None:
        result.kernels = kernel_report(checkpoint, out / KERNELS_PNG)
        result.figures["kernels"] = out / KERNELS_PNG

    queries: list[Path] = []

    def neighbors() -> None:
        queries[:] = query_images(tree_dir, data_dir, config.queries)
        result.neighbors = find_neighbors(checkpoint, data_dir, queries, k=config.k, split="train",
                                          device=config.device, batch_size=config.batch_size, progress=progress)
        result.figures["neighbors"] = draw_neighbors(result.neighbors, data_dir, out / NEIGHBORS_PNG)

    def predictions() -> None:
        result.predictions = predict(checkpoint, queries, k=min(5, config.classes), device=config.device)
        # each query's true class comes from its folder, val/<wnid>/ (predict.folder_class)
        result.figures["predictions"] = draw_predictions(result.predictions, out / PREDICTIONS_PNG)

    for name, fn in (("data", data), ("prep", prep), ("pca", pca), ("train", fit),
                     ("eval_1crop", evaluation(1)), ("eval_10crop", evaluation(10)), ("kernels", kernels),
                     ("neighbors", neighbors), ("predict", predictions)):
        step(name, fn)
    return result
