"""Training (paper sections 5 and 6): SGD with momentum and weight decay on random crops,
flips and PCA colour noise; validation after every epoch; the learning-rate schedule.

Three ways to run it (`parallel`):
- "single": one device, the column split as grouped convolutions;
- "model":  the paper's two-GPU scheme, column A and column B on two devices (model_parallel.py);
- "data":   torch.distributed DDP under torchrun, each rank a slice of every batch.

A run folder holds config.json, metrics.jsonl and checkpoints/{last,best}.pt. `last.pt` holds
everything needed to continue exactly: weights, velocities, schedule, the position in the
epoch and the partial epoch statistics. No random-number state needs saving: the loader's
order is drawn from (seed, epoch), and the augmentation and the dropout masks of each step from
(seed, rank, epoch, batch). So a run killed at any moment and resumed ends with the same
weights as one never interrupted (bitwise on the CPU), in every parallel mode.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from alexnet_cli import __version__
from alexnet_cli.augment import TrainAugment
from alexnet_cli.checkpoint import load_checkpoint, save_checkpoint
from alexnet_cli.config import LEGACY_MODEL_FIELDS, ModelConfig, TrainConfig, check_choice, to_dict
from alexnet_cli.distributed import DistInfo, init_distributed, launched_by_torchrun, shutdown
from alexnet_cli.errors import AlexnetError, CheckpointError, DataError, TrainingDiverged, UsageError
from alexnet_cli.devices import resolve_device
from alexnet_cli.evaluate import evaluate_model
from alexnet_cli.loader import ShardLoader
from alexnet_cli.shards import DECODES
from alexnet_cli.metrics import TopKMeter
from alexnet_cli.model import LRN_KERNELS, AlexNet, set_lrn_kernel
from alexnet_cli.optim import PaperSGD, load_velocity_state, param_groups, velocity_state
from alexnet_cli.model_parallel import ColumnParallelAlexNet
from alexnet_cli.pca import read_pca
from alexnet_cli.progress import NullReporter, Reporter
from alexnet_cli.runlog import MetricsLog, RunLock, write_json_atomic
from alexnet_cli.schedule import Schedule
from alexnet_cli.shards import data_key, read_manifest, read_mean_image

PARALLEL_MODES = ("auto", "single", "model", "data")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class RunOptions:
    """How to run (not what to learn): devices, logging, checkpoints, speed switches."""

    device: str | None = None         # None: cuda when available, else cpu
    parallel: str = "auto"            # auto: data under torchrun, model with two --devices, else single
    devices: tuple[str, ...] = ()     # model mode: the devices of column A and column B
    seed: int = 0
    resume: bool = False
    max_steps: int | None = None      # stop after this many optimizer steps in total
    save_every: int | None = None     # also write last.pt every N steps (always at epoch ends)
    log_every: int = 50               # steps between log lines (each costs one host sync)
    bf16: bool = True                 # bf16 autocast on CUDA (ignored on the CPU)
    channels_last: bool = True        # NHWC activations on CUDA: faster convolutions
    compile: bool = False             # torch.compile the network
    compile_mode: str = "default"     # torch.compile's mode; reduce-overhead adds CUDA graphs
    lrn_kernel: str = "auto"          # how LRN computes (model.LRN_KERNELS): same values, other speed
    workers: int | None = None        # loader workers (None: the loader's default)
    decode: str = "auto"              # jpeg shards: cpu, gpu or auto (loader.resolve_decode)
    val_split: str = "val"
    stuck_steps: int = 2000           # warn when the loss stays at chance this many steps
    tensorboard: bool = False

    def __post_init__(self) -> None:
        check_choice("--lrn-kernel", self.lrn_kernel, LRN_KERNELS)
        check_choice("--decode", self.decode, DECODES)
        check_choice("--compile-mode", self.compile_mode, COMPILE_MODES)
        if self.compile_mode != "default" and not self.compile:
            raise UsageError(f"--compile-mode {self.compile_mode} needs --compile")
        for name in ("log_every", "stuck_steps"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("max_steps", "save_every", "workers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        check_seed(self.seed)


SEED_MAX = 2**63 - 1   # torch's and NumPy's generators take any seed in [0, 2**63)


def check_seed(seed: int) -> None:
    """A seed every generator of the run accepts (NumPy's refuses negative ones, torch's ones
    beyond 64 bits): checked before anything is written."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise UsageError(f"--seed must be a whole number from 0 to {SEED_MAX}, got {seed!r}")


def resolve_parallel(run: RunOptions) -> str:
    """The documented rule for `--parallel auto`: data under torchrun (WORLD_SIZE > 1); model
    when two --devices are given; otherwise single."""
    if run.parallel not in PARALLEL_MODES:
        raise UsageError(f"--parallel must be one of {', '.join(PARALLEL_MODES)}; got {run.parallel!r}")
    if run.devices and (len(run.devices) != 2 or not all(run.devices)):   # a typo must not mean "single"
        raise UsageError(f"--devices takes two devices, one per column (e.g. cuda:0,cuda:1); got "
                         f"{','.join(run.devices)!r}")
    if launched_by_torchrun():
        if run.parallel not in ("auto", "data"):   # every process would be "rank 0" and write the run
            raise UsageError(f"--parallel {run.parallel} runs in one process; under torchrun use --parallel data")
        return "data"
    if run.parallel != "auto":
        return run.parallel
    return "model" if len(run.devices) == 2 else "single"


def step_seed(seed: int, rank: int, epoch: int, batch: int) -> int:
    """A distinct, reproducible seed for the augmentation of one step of one rank."""
    return ((seed * 1_000_003 + rank) * 1_000_033 + epoch) * 1_000_037 + batch & (2**63 - 1)


@dataclass
class Position:
    """Where a run stands: the next batch to train is `batch` of `epoch`; `step` were done."""
    epoch: int = 0
    batch: int = 0
    step: int = 0


class Trainer:
    """Holds one run's state; `fit()` trains it to the end (or to --max-steps)."""

    def __init__(self, data_dir: Path, out_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig,
                 run: RunOptions, recipe: str, progress: Reporter):
        self.data_dir, self.out_dir = Path(data_dir), Path(out_dir)
        self.train_cfg, self.run, self.recipe, self.progress = train_cfg, run, recipe, progress
        self.mode = resolve_parallel(run)
        self._setup_devices()
        if not self.dist.is_main:                          # rank 0 alone reports (and writes the run)
            self.progress = NullReporter()
        self.manifest = read_manifest(self.data_dir)
        self.model_cfg = _fit_classes(model_cfg, len(self.manifest.classes))
        _check_run_dir(self.out_dir)               # every rank, before DDP's first collective below
        self._setup_data()
        self._setup_model()
        self.schedule = Schedule(train_cfg, list(self.named_params))
        self.pos = Position()
        self.saved_step: int | None = None                # the step of the last checkpoint written or read
        self.last_x: torch.Tensor | None = None           # the last training batch: the outputs' NaN check
        self.best_top1 = math.inf
        self.stats = _EpochStats(self.model_cfg.num_classes, self.device)
        self.log = MetricsLog(self.out_dir, enabled=self.dist.is_main, tensorboard=run.tensorboard)

    # ----------------------------------------------------------------- setup
    def _setup_devices(self) -> None:
        run = self.run
        if self.mode == "model":
            if len(run.devices) != 2:
                raise UsageError("--parallel model needs two devices: --devices cuda:0,cuda:1 (or cpu,cpu)")
            self.devices = tuple(resolve_device(d) for d in run.devices)
            self.device = self.devices[0]
        else:
            self.device = resolve_device(run.device)
        if self.mode == "data" and not launched_by_torchrun():
            raise UsageError("--parallel data runs under torchrun with several processes, e.g. "
                             "torchrun --nproc_per_node 8 -m alexnet_cli train DATA --out RUN --parallel data")
        self.dist = init_distributed(self.device.type) if self.mode == "data" else DistInfo()
        if self.mode == "data" and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if self.mode == "data" and self.train_cfg.batch_size % self.dist.world_size:
            raise UsageError(f"--batch-size {self.train_cfg.batch_size} is the global batch; it must divide "
                             f"by the {self.dist.world_size} processes")
        self.cuda = self.device.type == "cuda"

    def _setup_data(self) -> None:
        d, cfg, run = self.dist, self.train_cfg, self.run
        self.train_loader = ShardLoader(self.data_dir, "train", cfg.batch_size // d.world_size, shuffle=True,
                                        seed=run.seed, drop_last=True, rank=d.rank, world_size=d.world_size,
                                        device=self.device, workers=run.workers, decode=run.decode)
        if len(self.train_loader) == 0:
            raise AlexnetError(f"the training split has fewer images than one batch of {cfg.batch_size}")
        self.val_loader = None
        if run.val_split in self.manifest.splits and self.manifest.splits[run.val_split].count > 0:
            self.val_loader = ShardLoader(self.data_dir, run.val_split, max(cfg.batch_size // d.world_size, 1),
                                          shuffle=False, drop_last=False, rank=d.rank, world_size=d.world_size,
                                          device=self.device, workers=run.workers, decode=run.decode)
        self.mean_image = torch.from_numpy(read_mean_image(self.data_dir)).float()   # (256, 256, 3)
        eig = {}
        self.augment_pca = None
        if cfg.pca_aug:
            pca = read_pca(self.data_dir)
            eig = dict(eigenvalues=torch.tensor(pca.eigenvalues, dtype=torch.float32),
                       eigenvectors=torch.tensor(pca.eigenvectors, dtype=torch.float32))
            self.augment_pca = (eig["eigenvalues"], eig["eigenvectors"])
        self.augment = TrainAugment(self.mean_image.to(self.device), pca_std=cfg.pca_std, pca_scale=cfg.pca_scale,
                                    chunk=cfg.aug_chunk, mean_crop=cfg.mean_crop,
                                    channels_last=self.cuda and run.channels_last,
                                    **{k: v.to(self.device) for k, v in eig.items()})

    def _setup_model(self) -> None:
        torch.manual_seed(self.run.seed)                     # the same initial weights on every rank
        model = AlexNet(config=self.model_cfg)
        self.single = model                                  # the module whose state_dict is saved
        if self.mode == "model":
            self.net = ColumnParallelAlexNet(model, self.devices)
            self.named_params = self.net.named_param_lists()
        else:
            model.to(self.device)
            if self.cuda and self.run.channels_last:
                model.to(memory_format=torch.channels_last)
            self.named_params = {n: [p] for n, p in model.named_parameters()}
            self.net = model
            if self.mode == "data":
                ids = [self.device.index] if self.cuda else None
                self.net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        set_lrn_kernel(self.net, self.run.lrn_kernel)
        self.forward = torch.compile(self.net, mode=self.run.compile_mode) if self.run.compile else self.net
        self.optimizer = PaperSGD(param_groups(self.named_params, self.train_cfg), lr=self.train_cfg.lr,
                                  momentum=self.train_cfg.momentum, weight_decay=self.train_cfg.weight_decay)

    # ------------------------------------------------------------ state I/O
    def model_state(self) -> dict[str, torch.Tensor]:
        """The single-device state_dict, whatever the parallel mode (docs/public-surface.md)."""
        if self.mode == "model":
            return self.net.single_state_dict()
        return {k: v.detach().cpu() for k, v in self.single.state_dict().items()}

    def config_dict(self) -> dict[str, Any]:
        run = dataclasses.asdict(self.run)
        run["parallel"] = self.mode
        run["decode"] = self.train_loader.decode     # as resolved: cpu, gpu, or none (raw shards)
        return {"recipe": self.recipe, "model": to_dict(self.model_cfg), "train": to_dict(self.train_cfg),
                "run": run, "data": str(self.data_dir), **self.inputs_key(),
                "world_size": self.dist.world_size,
                "alexnet_cli": __version__, "torch": str(torch.__version__)}

    def inputs_key(self) -> dict[str, str | None]:
        """Keys naming everything read from DATA that changes the weights: the training shards,
        the validation shards (they steer the plateau schedule), the mean image and the PCA
        (None when unused). --resume compares them with the checkpoint's."""
        val = self.run.val_split if self.val_loader is not None else None
        pca = None
        if self.augment_pca is not None:
            pca = hashlib.sha256(b"".join(t.numpy().tobytes() for t in self.augment_pca)).hexdigest()[:16]
        return {"data_key": data_key(self.manifest, "train"),
                "val_key": None if val is None else data_key(self.manifest, val),
                "mean_key": hashlib.sha256(self.mean_image.numpy().tobytes()).hexdigest()[:16],
                "pca_key": pca}

    def payload(self) -> dict[str, Any]:
        return {
            "model": self.model_state(),
            "classes": list(self.manifest.classes), "class_names": list(self.manifest.class_names),
            "mean_image": self.mean_image.clone(), "config": self.config_dict(),
            "optimizer": {"velocity": velocity_state(self.optimizer)},
            "trainer": {"epoch": self.pos.epoch, "batch": self.pos.batch, "step": self.pos.step,
                        "schedule": self.schedule.state_dict(), "best_top1": self.best_top1,
                        "stats": self.stats.state_dict(), "metrics_offset": self.log.offset()},
        }

    def save(self, best: bool = False) -> None:
        """Write last.pt (and best.pt); every rank calls it, rank 0 writes."""
        counts = self.stats.meter.counts
        if self.dist.world_size > 1:   # the epoch's counts so far, summed: a resume then continues them
            counts = counts.clone()
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        failed = None
        if self.dist.is_main:
            try:
                self._write_checkpoints(counts, best)
            except Exception as exc:                       # a full disk, a lost mount, ...
                failed = exc
        if self.dist.world_size > 1:   # the others stop too, rather than wait for rank 0 in the next step
            flag = torch.tensor(int(failed is not None), device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() and failed is None:                                 # host sync, at saves only
                raise AlexnetError("rank 0 could not write the checkpoint; every rank stops")
        if failed is not None:
            raise _save_error(failed, self.out_dir / "checkpoints", self.pos.step, self.saved_step)
        self.saved_step = self.pos.step

    def _write_checkpoints(self, counts: torch.Tensor, best: bool) -> None:
        payload = self.payload()
        payload["trainer"]["stats"]["counts"] = counts.cpu()
        if best:   # best first: a kill between the two leaves last.pt behind, and resuming redoes both
            # best.pt is for eval and the other tools: no velocities (half the size of last.pt)
            save_checkpoint(self.out_dir / "checkpoints" / "best.pt",
                            {k: v for k, v in payload.items() if k != "optimizer"})
        save_checkpoint(self.out_dir / "checkpoints" / "last.pt", payload)

    def restore(self) -> None:
        """Continue from RUN/checkpoints/last.pt exactly where it stopped."""
        path = self.out_dir / "checkpoints" / "last.pt"
        ckpt = load_checkpoint(path, map_location="cpu")
        if not isinstance(ckpt.get("optimizer"), dict) or not isinstance(ckpt.get("trainer"), dict):
            raise CheckpointError(f"{path} holds weights but no training state (a best.pt, or a checkpoint for eval "
                                  "and predict), so it cannot be resumed: start a new --out")
        saved = ckpt.get("config") or {}
        for part, cfg in (("model", self.model_cfg), ("train", self.train_cfg)):
            before, defaults = saved.get(part, {}), to_dict(type(cfg)())   # a field newer than the run: its value
            if part == "model":                                              # then, else its default
                defaults.update(LEGACY_MODEL_FIELDS)
            diff = sorted(k for k, v in to_dict(cfg).items() if before.get(k, defaults[k]) != v)
            if diff:
                raise AlexnetError(f"{path} was trained with other {part} settings ({', '.join(diff)}); "
                                   "resume with the same arguments, or start a new --out")
        now = self.inputs_key()
        for key, what in (("data_key", "the training shards"), ("val_key", f"the '{self.run.val_split}' shards"),
                          ("mean_key", "the mean image"), ("pca_key", "the PCA (pca.json)")):
            if key in saved and saved[key] != now[key]:         # a key older runs lack is not checked
                raise AlexnetError(f"{path} was trained on other data ({what} in {self.data_dir} changed since "
                                   "the run began); resume with the same DATA, or start a new --out")
        run = saved.get("run", {})
        for what, before, now in (("--seed", run.get("seed"), self.run.seed),
                                  ("--decode", run.get("decode"), self.train_loader.decode),   # nvJPEG's pixels differ
                                  ("number of processes", saved.get("world_size"), self.dist.world_size)):
            if before is not None and before != now:
                raise AlexnetError(f"{path} was trained with {what} {before}, not {now}; resume with the same "
                                   "arguments, or start a new --out")
        if self.mode == "model":
            self.net.load_single_state_dict(ckpt["model"])
        else:
            self.single.load_state_dict(ckpt["model"])
        load_velocity_state(self.optimizer, ckpt["optimizer"]["velocity"])
        t = ckpt["trainer"]
        self.pos = Position(int(t["epoch"]), int(t["batch"]), int(t["step"]))
        self.saved_step = self.pos.step
        self.schedule.load_state_dict(t["schedule"])
        self.best_top1 = float(t["best_top1"])
        self.stats.load_state_dict(t["stats"])
        if not self.dist.is_main:                           # the saved counts are all ranks' sums
            self.stats.meter.counts.zero_()
        self.log.truncate(int(t["metrics_offset"]))

    # -------------------------------------------------------------- training
    def fit(self) -> dict[str, Any]:
        self._prepare_run_dir()
        cfg = self.train_cfg
        try:
            while self.pos.epoch < cfg.epochs and not self._step_limit_reached():
                epoch = self.pos.epoch
                rates = self.schedule.rates(epoch)
                for group in self.optimizer.param_groups:
                    group["lr"] = rates.lr[group["name"]]
                self.train_epoch(epoch, color_noise=rates.color_noise)
                if self.pos.epoch == epoch:                 # stopped inside the epoch by --max-steps
                    self._check_finite(before_save=True)
                    self.save()
                    break
                self.end_epoch(epoch)
        finally:
            self.log.close()
        best = None if math.isinf(self.best_top1) else self.best_top1
        return {"epochs": self.pos.epoch, "step": self.pos.step, "finished": self.pos.epoch >= cfg.epochs,
                "best_top1_error": best,
                "best_split": self.run.val_split if self.val_loader is not None else "train",
                "run_dir": str(self.out_dir), "parallel": self.mode, "device": str(self.device),
                "rank": self.dist.rank}

    def _prepare_run_dir(self) -> None:
        last = self.out_dir / "checkpoints" / "last.pt"
        if self.dist.is_main:                               # left by a kill in the middle of a save
            for tmp in [*self.out_dir.glob(".*.tmp"), *(self.out_dir / "checkpoints").glob(".*.tmp")]:
                tmp.unlink(missing_ok=True)
        if self.run.resume and last.exists():
            self.restore()
        elif last.exists():
            raise AlexnetError(f"{self.out_dir} already holds a run; pass --resume to continue it or choose "
                               "another --out")
        else:
            if (self.out_dir / "config.json").exists():    # killed before its first checkpoint
                self.progress.log(f"Note: the run in {self.out_dir} stopped before its first checkpoint: starting it "
                                  "again from step 0")
            elif self.run.resume:   # a requeued job's first start, or a mistyped --out: say which it was
                self.progress.log(f"Note: {last} does not exist, so there is nothing to resume: starting a new run")
            if self.dist.is_main:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                write_json_atomic(self.out_dir / "config.json", self.config_dict())   # first: the folder is a run's
                self.log.truncate(0)
            return
        if self.dist.is_main:                              # resumed: this invocation's settings
            write_json_atomic(self.out_dir / "config.json", self.config_dict())

    def _step_limit_reached(self) -> bool:
        return self.run.max_steps is not None and self.pos.step >= self.run.max_steps

    def train_epoch(self, epoch: int, *, color_noise: bool) -> None:
        """Train from the current position to the end of `epoch` (or to --max-steps)."""
        self.net.train()
        loader, run = self.train_loader, self.run
        with self.progress.task(f"epoch {epoch + 1}/{self.train_cfg.epochs}", total=len(loader),
                                unit="batch") as task:
            task.advance(self.pos.batch)
            for batch in loader.epoch(epoch, start_batch=self.pos.batch):
                seed = step_seed(run.seed, self.dist.rank, epoch, self.pos.batch)
                gen = torch.Generator(device=self.device).manual_seed(seed)
                x = self.augment(batch.images, gen, color_noise=color_noise)   # (B, 3, 224, 224) float32, as the net's layout
                torch.manual_seed(seed ^ 0x5DEECE66D)    # this step's dropout masks, on every device
                logits, loss = self.train_step(x, batch.labels)
                self.last_x = x
                self.stats.update(logits, batch.labels, loss)
                self.pos.batch += 1
                self.pos.step += 1
                info = self._maybe_log(epoch) if self.pos.step % run.log_every == 0 else {}
                task.advance(1, **info)
                if run.save_every and self.pos.step % run.save_every == 0:
                    self._check_finite(before_save=True)
                    self.save()
                if self._step_limit_reached():
                    break
        if self.pos.batch >= len(loader):
            self.pos.epoch, self.pos.batch = epoch + 1, 0

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda and self.run.bf16):
            logits = self.forward(x)                                         # (B, C)
        loss = F.cross_entropy(logits.float(), y.to(logits.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return logits.detach(), loss.detach()

    def weights_lr(self) -> float:
        """The rate logged as "lr": fc6's weights (most of the network; the code's schedule
        gives conv1 and the biases rates of their own)."""
        return next(g["lr"] for g in self.optimizer.param_groups if g["name"] == "fc6.weight")

    def _check_finite(self, before_save: bool = False) -> None:
        """Stop on a NaN or infinite loss, on every rank at once (a rank that stopped alone
        would leave the others waiting in the next all-reduce). Before a save, the weights and
        the network's outputs on the last batch too: one step with a huge rate leaves finite
        weights whose outputs overflow, and no checkpoint is ever written that holds either."""
        flags = [self.stats.bad]
        if before_save:
            flags += [~torch.stack([torch.isfinite(p).all().to(self.device)
                                    for ps in self.named_params.values() for p in ps]).all(),
                      self._outputs_bad()]
        bad = torch.stack(flags).to(torch.int32)                                # (1,) or (3,)
        if self.dist.world_size > 1:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        bad = bad.tolist()                                                  # host sync
        if not any(bad):
            return
        self.log.write({"kind": "diverged", "step": self.pos.step})         # for `alexnet report`
        what = ("the loss became NaN or infinite" if bad[0] else "the weights became NaN or infinite" if bad[1]
                else "the network's outputs became NaN or infinite (its weights grew too large)")
        kept = (f"the last good checkpoint (step {self.saved_step}) is kept in {self.out_dir / 'checkpoints'}"
                if self.saved_step is not None else "no checkpoint was written")
        raise TrainingDiverged(f"{what} by step {self.pos.step}; stopped without saving them: {kept}. "
                               "Try a lower --lr.")

    @torch.no_grad()
    def _outputs_bad(self) -> torch.Tensor:
        """Whether the network gives a NaN or infinite output on (a few images of) the last
        training batch, in eval mode; a bool tensor on the device (no sync)."""
        if self.last_x is None:
            return torch.zeros((), dtype=torch.bool, device=self.device)
        net = self.single if self.mode != "model" else self.net
        net.eval()
        try:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda and self.run.bf16):
                logits = net(self.last_x[:2])                                   # (2, C)
        finally:
            net.train()
        return ~torch.isfinite(logits.float()).all().to(self.device)

    def _maybe_log(self, epoch: int) -> dict[str, Any]:
        """Every log_every steps: one host sync for the mean loss; NaN guard; stuck warning."""
        self._check_finite()
        loss, rate = self.stats.interval(self.run.log_every, self.train_cfg.batch_size)  # host sync
        chance = math.log(self.model_cfg.num_classes)
        if self.stats.note_chance(loss, chance, self.run.log_every) >= self.run.stuck_steps:
            self.stats.warned = True
            self.progress.log(
                f"Warning: the loss has stayed at chance (ln {self.model_cfg.num_classes} = {chance:.2f}) for "
                f"{self.run.stuck_steps} steps. With the paper's bias init of 1 this is common: "
                "try --bias-init 0.1 or a lower --lr; see the README's troubleshooting.")
            self.log.write({"kind": "warning", "step": self.pos.step, "message": "loss stuck at chance"})
        lr = self.weights_lr()
        self.log.write({"kind": "train", "step": self.pos.step, "epoch": epoch + 1, "loss": loss, "lr": lr,
                        "images_per_s": rate})
        return {"loss": loss, "img/s": round(rate)}

    def end_epoch(self, epoch: int) -> None:
        if self.dist.world_size > 1:
            self.stats.meter.all_reduce()                   # every rank watches the same numbers
        train = self.stats.epoch_result()
        record: dict[str, Any] = {"kind": "epoch", "epoch": epoch + 1, "step": self.pos.step,
                                  "train_top1_error": train.top1_error, "train_top5_error": train.topk_error,
                                  "lr": self.weights_lr(), "time_s": self.stats.epoch_time()}
        self._check_finite(before_save=True)
        monitored = train.top1_error
        if self.val_loader is not None:
            val = evaluate_model(self.single if self.mode != "model" else self.net, self.val_loader,
                                 self.mean_image.to(self.device), crops=1, mean_crop=self.train_cfg.mean_crop,
                                 bf16=self.run.bf16)
            record.update(val_top1_error=val.top1_error, val_top5_error=val.top5_error, val_n=val.n)
            monitored = val.top1_error
        record["lr_dropped"] = self.schedule.observe(epoch, monitored)
        improved = monitored < self.best_top1
        self.best_top1 = min(self.best_top1, monitored)
        self.log.write(record)
        self.progress.log(_epoch_line(record))
        self.stats.reset()
        self.save(best=improved)


def _check_run_dir(out: Path) -> None:
    """`--out` must be new, empty (hidden files aside), or a run's folder: its config.json is a
    run's (a run writes it before anything else; other files may have been added since, e.g.
    eval's outputs). A folder of other files is refused, never overwritten."""
    if not out.is_dir():
        parent = out
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise UsageError(f"--out {out}: {parent} is a file, not a folder")
        return
    config = out / "config.json"
    try:
        saved = json.loads(config.read_text(encoding="utf-8")) if config.exists() else None
    except (OSError, ValueError):
        saved = "unreadable"
    if isinstance(saved, dict) and {"recipe", "model", "train", "run"} <= saved.keys():
        return
    # hidden files (.DS_Store, .gitkeep, our .tmp files) and a fresh volume's lost+found are no one's
    others = sorted(p.name for p in out.iterdir() if p.name != "lost+found" and not p.name.startswith("."))
    if others or saved is not None:
        what = f"it holds {', '.join(others[:3])}{', ...' if len(others) > 3 else ''}" if others else \
            "its config.json is not a run's"
        raise AlexnetError(f"{out} is not a training run's folder ({what}): choose another --out")


FULL_DISK_BYTES = 64 << 20   # less free than this after a failed save: the disk is called full


def _save_error(exc: Exception, folder: Path, step: int, saved_step: int | None) -> Exception:
    """A failed checkpoint write in the user's terms: which file, why (a full disk said so),
    and that nothing is lost but the steps since the last checkpoint. An error without an
    OSError behind it (torch.save's own RuntimeError) is called a full disk when the disk is."""
    if isinstance(exc, OSError):
        full, reason, name = exc.errno in (errno.ENOSPC, errno.EDQUOT), exc.strerror or str(exc), exc.filename
    elif isinstance(exc, RuntimeError):
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            return exc
        if free >= FULL_DISK_BYTES:
            return exc
        full, reason, name = True, f"{free / 2**20:.1f} MiB free", folder
    else:
        return exc
    if full:
        reason, then = f"the disk is full ({reason})", "free some space, then continue with --resume"
    else:
        then = "continue with --resume once it can be written"
    kept = (f"the checkpoint of step {saved_step} is kept" if saved_step is not None
            else "no checkpoint was written yet")
    return AlexnetError(f"could not write the checkpoint {name or ''} at step {step}: {reason}; {kept}: {then}")


def _epoch_line(r: dict[str, Any]) -> str:
    val = (f"  val top-1 {r['val_top1_error']:.2%} top-5 {r['val_top5_error']:.2%}"
           if "val_top1_error" in r else "")
    drop = "  (learning rate divided by 10)" if r["lr_dropped"] else ""
    return (f"epoch {r['epoch']}: train top-1 {r['train_top1_error']:.2%} top-5 {r['train_top5_error']:.2%}"
            f"{val}  lr {r['lr']:g}  {r['time_s']:.1f}s{drop}")


class _EpochStats:
    """Training statistics kept on the device (no per-step sync): top-1/top-5 hits of the epoch,
    the loss summed over the current log interval, a non-finite flag."""

    def __init__(self, num_classes: int, device: torch.device):
        self.meter = TopKMeter(num_classes, device)
        self.device = device
        self.loss_sum = torch.zeros((), device=device)
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.chance_steps, self.warned = 0, False
        self.t_interval = self.t_epoch = time.perf_counter()

    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor) -> None:
        self.meter.update(logits.float(), labels.to(logits.device))
        self.loss_sum += loss.to(self.device)
        self.bad |= ~torch.isfinite(loss.to(self.device))

    def interval(self, steps: int, batch_size: int) -> tuple[float, float]:
        """Mean loss over the last `steps` steps and images/s; starts the next interval."""
        loss = self.loss_sum.item() / steps                                   # host sync
        now = time.perf_counter()
        rate = steps * batch_size / max(now - self.t_interval, 1e-9)
        self.loss_sum.zero_()
        self.t_interval = now
        return loss, rate

    def note_chance(self, loss: float, chance: float, steps: int) -> int:
        """Steps in a row with the loss at chance level; 0 once warned or when learning."""
        self.chance_steps = self.chance_steps + steps if abs(loss - chance) < 0.05 * chance else 0
        return 0 if self.warned else self.chance_steps

    def epoch_result(self):
        return self.meter.result()

    def epoch_time(self) -> float:
        return time.perf_counter() - self.t_epoch

    def reset(self) -> None:
        self.meter.counts.zero_()
        self.t_epoch = self.t_interval = time.perf_counter()

    def state_dict(self) -> dict[str, Any]:
        return {"counts": self.meter.counts.cpu(), "loss_sum": self.loss_sum.cpu(),
                "chance_steps": self.chance_steps, "warned": self.warned}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.meter.counts.copy_(d["counts"])
        self.loss_sum.copy_(d["loss_sum"])
        self.chance_steps, self.warned = int(d["chance_steps"]), bool(d["warned"])


def _fit_classes(cfg: ModelConfig, n_data: int) -> ModelConfig:
    """Size fc8 to the data's classes (the default 1000 follows the data set)."""
    if n_data < 2:                      # the data's fault, not a --num-classes the user gave
        raise DataError(f"the data has {n_data} class{'es' if n_data != 1 else ''}; a classifier needs at least 2 "
                        "(one sub-folder of images per class)")
    if cfg.num_classes == n_data:
        return cfg
    if cfg.num_classes != ModelConfig.num_classes:
        raise AlexnetError(f"--num-classes {cfg.num_classes} does not match the data's {n_data} classes")
    return dataclasses.replace(cfg, num_classes=n_data)


def train(data_dir: str | Path, out_dir: str | Path, model_cfg: ModelConfig, train_cfg: TrainConfig,
          run: RunOptions = RunOptions(), *, recipe: str = "paper",
          progress: Reporter = NullReporter()) -> dict[str, Any]:
    """Train AlexNet on a prepared data folder into `out_dir`; returns a summary of the run.
    Under torchrun, the process group it joins is destroyed again before it returns (also on
    errors): left to the interpreter's exit, gloo's threads can abort the process (SIGABRT)
    after a run that succeeded, and torchrun would report a failure."""
    owns_group = launched_by_torchrun() and not dist.is_initialized()
    out_dir = Path(out_dir)
    # rank 0 alone writes the run, so it alone locks it (RANK: torchrun's, read before the group exists)
    lock = RunLock(out_dir) if not launched_by_torchrun() or os.environ.get("RANK", "0") == "0" else None
    created = not out_dir.exists()
    trainer = None
    finished = False
    try:
        _check_run_dir(out_dir)        # a clear error for an --out under a file, before the lock's mkdir
        if lock is not None:
            lock.acquire()             # before anything is read or written: a second run fails at once
        trainer = Trainer(Path(data_dir), out_dir, model_cfg, train_cfg, run, recipe, progress)
        result = trainer.fit()
        finished = True
        return result
    finally:
        if lock is not None:           # a run that failed before writing anything leaves no folder behind
            lock.release(remove_folder_if_empty=created and not finished)
        if owns_group:
            del trainer        # DistributedDataParallel's references to the group go first
            shutdown()
