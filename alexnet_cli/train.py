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
import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NoReturn

import torch
import torch.distributed as dist
import torch.nn.functional as F

from alexnet_cli import __version__
from alexnet_cli.atomic import remove_abandoned
from alexnet_cli.augment import TrainAugment
from alexnet_cli.checkpoint import all_finite, load_checkpoint
from alexnet_cli.config import ModelConfig, TrainConfig, check_choice, check_seed, recipe_of, settings_changed, to_dict
from alexnet_cli.distributed import launched_by_torchrun, shutdown
from alexnet_cli.errors import AlexnetError, DataError, Interrupted, TrainingDiverged, UsageError, shell_word
from alexnet_cli.evaluate import evaluate_model
from alexnet_cli.jpeg import DECODES
from alexnet_cli.loader import Batch, ShardLoader
from alexnet_cli.config import top5_is_trivial
from alexnet_cli.model import LRN_IMPLEMENTATIONS, AlexNet, set_lrn_implementation
from alexnet_cli.optim import PaperSGD, load_velocity_state, param_groups, velocity_state
from alexnet_cli.pca import check_pca_data, pca_file, read_pca
from alexnet_cli.progress import NullReporter, Reporter, plural
from alexnet_cli.replicas import make_replica, place
from alexnet_cli.locks import CommandLock, missing_ancestor
from alexnet_cli.runlog import MetricsLog, RunFolder, check_run_dir, save_error
from alexnet_cli.schedule import Schedule
from alexnet_cli.shards import read_manifest, read_mean_image
from alexnet_cli.stopping import StopRequests, signal_name
from alexnet_cli.train_state import EpochStats, TrainingState, as_given, check_resumable, inputs_key

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
    lrn_kernel: str = "auto"          # how LRN computes (model.LRN_IMPLEMENTATIONS): same values, other speed
    workers: int | None = None        # loader workers (None: the loader's default)
    decode: str = "auto"              # jpeg shards: cpu, gpu or auto (loader.resolve_decode)
    val_split: str = "val"
    pca_file: str | Path | None = None   # the PCA of the colour noise (None: DATA/pca.json), e.g. for a read-only DATA
    stuck_steps: int = 2000           # warn when the loss stays at chance this many steps
    tensorboard: bool = False
    # whether the TrainConfig's `epochs` was chosen (resume may take a plateau run on to it), not
    # left at the recipe's length (the CLI without --epochs), which must then be the run's
    epochs_given: bool = True

    def __post_init__(self) -> None:
        check_choice("lrn_kernel", self.lrn_kernel, LRN_IMPLEMENTATIONS)
        check_choice("decode", self.decode, DECODES)
        check_choice("compile_mode", self.compile_mode, COMPILE_MODES)
        if self.compile_mode != "default" and not self.compile:
            raise UsageError(f"compile_mode {self.compile_mode} needs `compile`", field="compile_mode",
                             value=self.compile_mode, mentions=("compile",))
        for name in ("log_every", "stuck_steps", "max_steps", "save_every", "workers"):
            value = getattr(self, name)        # the last three: None means unset
            if value is not None and value < 1:
                raise UsageError(f"{name} must be at least 1, got {value}", field=name, value=value)
        check_seed(self.seed)


def resolve_parallel(run: RunOptions) -> str:
    """The documented rule for `--parallel auto`: data under torchrun (WORLD_SIZE > 1); model
    when two --devices are given; otherwise single."""
    check_choice("parallel", run.parallel, PARALLEL_MODES)
    if run.devices and (len(run.devices) != 2 or not all(run.devices)):   # a typo must not mean "single"
        raise UsageError(f"devices takes two devices, one per column (e.g. cuda:0,cuda:1); got "
                         f"{','.join(run.devices)!r}", field="devices", value=run.devices)
    if launched_by_torchrun():
        if run.parallel not in ("auto", "data"):   # every process would be "rank 0" and write the run
            raise UsageError(f"parallel {run.parallel} runs in one process; under torchrun use `parallel` data",
                             field="parallel", value=run.parallel, mentions=("parallel",))
        return "data"
    if run.parallel != "auto":
        return run.parallel
    return "model" if len(run.devices) == 2 else "single"


def step_seed(seed: int, rank: int, epoch: int, batch: int) -> int:
    """A distinct, reproducible seed for the augmentation of one step of one rank."""
    return ((seed * 1_000_003 + rank) * 1_000_033 + epoch) * 1_000_037 + batch & (2**63 - 1)


class Trainer:
    """One run: set up by `__init__` (devices, data, network, optimizer, state), trained to the
    end (or to --max-steps) by `fit()`. The replica (replicas.py) hides the parallel mode, the
    training state (train_state.py) what a checkpoint continues, the run folder (runlog.py)
    its files."""

    def __init__(self, data_dir: Path, out_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig,
                 run: RunOptions, recipe: str, progress: Reporter, classes_from_data: bool = True):
        self.data_dir, self.out_dir = Path(data_dir), Path(out_dir)
        self.train_cfg, self.run, self.recipe, self.progress = train_cfg, run, recipe, progress
        self.mode = resolve_parallel(run)
        where = place(self.mode, run.device, run.devices, train_cfg.batch_size)
        self.device, self.dist = where.device, where.dist   # batches, statistics and logits live on `device`
        self.cuda = self.device.type == "cuda"
        if not self.dist.is_main:                          # rank 0 alone reports (and writes the run)
            self.progress = NullReporter()
        self.manifest = read_manifest(self.data_dir)
        self.model_cfg = fit_classes(model_cfg, len(self.manifest.classes), from_data=classes_from_data)
        self.folder = RunFolder(self.out_dir)
        check_run_dir(self.out_dir, resume=run.resume)     # every rank, before DDP's first collective below
        self._setup_data()
        torch.manual_seed(run.seed)                # the same initial weights on every rank
        self.replica = make_replica(self.mode, AlexNet(config=self.model_cfg), where,
                                    channels_last=self.cuda and run.channels_last)
        set_lrn_implementation(self.replica.net, run.lrn_kernel)
        if run.compile:
            self.replica.module = torch.compile(self.replica.module, mode=run.compile_mode)
        named_params = self.replica.named_param_lists()
        self.optimizer = PaperSGD(param_groups(named_params, train_cfg), lr=train_cfg.lr,
                                  momentum=train_cfg.momentum, weight_decay=train_cfg.weight_decay)
        self.state = TrainingState(Schedule(train_cfg, list(named_params)),
                                   EpochStats(self.model_cfg.num_classes, self.device, self.dist))
        self.last_x: torch.Tensor | None = None           # the last training batch: the outputs' NaN check
        when = ("after this step" if self.dist.world_size == 1 else          # every rank says it, in its reader's
                progress.named("at the next log step (`log_every`)", ("log_every",)))    # terms (given `progress`)
        self.stop = StopRequests("training", when)                           # entered by fit
        self.agreed_signum: int | None = None            # under DDP: the signal any rank had (_stop_requested)
        self.log = MetricsLog(self.out_dir, enabled=self.dist.is_main, tensorboard=run.tensorboard)

    def _setup_data(self) -> None:
        d, cfg, run = self.dist, self.train_cfg, self.run
        self.train_loader = ShardLoader(self.data_dir, "train", cfg.batch_size // d.world_size, shuffle=True,
                                        seed=run.seed, drop_last=True, rank=d.rank, world_size=d.world_size,
                                        device=self.device, workers=run.workers, decode=run.decode)
        if len(self.train_loader) == 0:
            images = self.manifest.splits["train"].count if "train" in self.manifest.splits else 0
            raise AlexnetError(f"batch_size {cfg.batch_size} is larger than the training split ({images:,} images), "
                               "which must fill one batch at least: give a smaller one",
                               field="batch_size", value=cfg.batch_size)
        self.val_loader = None
        if run.val_split in self.manifest.splits and self.manifest.splits[run.val_split].count > 0:
            self.val_loader = ShardLoader(self.data_dir, run.val_split, max(cfg.batch_size // d.world_size, 1),
                                          shuffle=False, drop_last=False, rank=d.rank, world_size=d.world_size,
                                          device=self.device, workers=run.workers, decode=run.decode)
        self.mean_image = torch.from_numpy(read_mean_image(self.data_dir)).float()   # (256, 256, 3)
        eig = {}
        self.augment_pca = None
        if cfg.pca_aug:
            pca = read_pca(self.data_dir, run.pca_file)
            check_pca_data(pca, self.manifest, run.pca_file)        # another data set's PCA: refused
            eig = dict(eigenvalues=torch.tensor(pca.eigenvalues, dtype=torch.float32),
                       eigenvectors=torch.tensor(pca.eigenvectors, dtype=torch.float32))
            self.augment_pca = (eig["eigenvalues"], eig["eigenvectors"])
        self.augment = TrainAugment(self.mean_image.to(self.device), pca_std=cfg.pca_std, pca_scale=cfg.pca_scale,
                                    chunk=cfg.aug_chunk, mean_crop=cfg.mean_crop, crop_offsets=cfg.crop_offsets,
                                    channels_last=self.cuda and run.channels_last,
                                    **{k: v.to(self.device) for k, v in eig.items()})

    # ------------------------------------------------------------ state I/O
    def config_dict(self) -> dict[str, Any]:
        """What config.json and every checkpoint's "config" hold: the resolved settings."""
        run = dataclasses.asdict(self.run)
        del run["epochs_given"]                       # how this invocation was asked, not the run's
        run["parallel"] = self.mode
        run["decode"] = self.train_loader.decode     # as resolved: cpu, gpu, or none (raw shards)
        # where the PCA came from (its content is `pca_key`, which resume compares); None: unused
        run["pca_file"] = str(pca_file(self.data_dir, self.run.pca_file)) if self.augment_pca is not None else None
        val = self.run.val_split if self.val_loader is not None else None
        return {"recipe": self.recipe, "model": to_dict(self.model_cfg), "train": to_dict(self.train_cfg),
                "run": run, "data": str(self.data_dir),
                **inputs_key(self.manifest, val, self.mean_image, self.augment_pca),
                "world_size": self.dist.world_size,
                "alexnet_cli": __version__, "torch": str(torch.__version__)}

    def payload(self, trainer_state: dict[str, Any]) -> dict[str, Any]:
        """What last.pt holds (docs/formats.md), around the "trainer" section given."""
        return {
            "model": self.replica.state_dict(),
            "classes": list(self.manifest.classes), "class_names": list(self.manifest.class_names),
            "mean_image": self.mean_image.clone(), "config": self.config_dict(),
            "optimizer": {"velocity": velocity_state(self.optimizer)},
            "trainer": trainer_state,
        }

    def save(self, best: bool = False) -> None:
        """Write last.pt (and best.pt); every rank calls it, rank 0 writes."""
        trainer_state = self.state.state_dict(self.log.offset())   # a collective: the epoch's counts summed
        failed = None
        if self.dist.is_main:
            try:
                self.folder.write_checkpoints(self.payload(trainer_state), best=best)
            except Exception as exc:                       # a full disk, a lost mount, ...
                failed = exc
        if self.dist.world_size > 1:   # the others stop too, rather than wait for rank 0 in the next step
            flag = torch.tensor(int(failed is not None), device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() and failed is None:                                 # host sync, at saves only
                raise AlexnetError("rank 0 could not write the checkpoint; every rank stops")
        if failed is not None:
            raise save_error(failed, self.folder.checkpoints, self.state.pos.step, self.state.saved_step)
        self.state.saved_step = self.state.pos.step

    def restore(self) -> None:
        """Continue from RUN/checkpoints/last.pt exactly where it stopped."""
        ckpt = load_checkpoint(self.folder.last, map_location="cpu")
        check_resumable(self.folder.last, ckpt, self.config_dict(), other_epochs=self.run.epochs_given)
        self.replica.load_state_dict(ckpt["model"])
        load_velocity_state(self.optimizer, ckpt["optimizer"]["velocity"])
        self.log.truncate(self.state.load_state_dict(ckpt["trainer"]))
        stats = self.state.stats
        if stats.loss_steps is None:         # older checkpoints: their intervals ended at multiples of log_every
            stats.loss_steps = self.state.pos.step % self.run.log_every
        # rank 0 alone: the folder may be on its machine only. The other ranks keep the best error
        # they restored; only rank 0 writes best.pt or reports it, so theirs is never used
        if self.dist.is_main and not self.folder.best.exists() and not math.isinf(self.state.best_top1):
            self._replace_lost_best(ckpt)

    def _replace_lost_best(self, ckpt: dict[str, Any]) -> None:
        """best.pt is gone (deleted, lost) though an epoch ended: written again from last.pt
        (`ckpt`) when that holds the same weights (both written at the best epoch's end); else
        the best epoch's weights are lost, and best.pt is written again by the next epoch that
        ends, as the best from there on. A note says which."""
        state, folder = self.state, self.folder
        if state.best_step == state.pos.step:
            try:
                folder.write_best(ckpt)
            except Exception as exc:
                raise save_error(exc, folder.checkpoints, state.pos.step, state.saved_step) from None
            self.progress.log(f"Note: {folder.best} was missing: written again from {folder.last}, which holds the "
                              f"same weights (the best epoch's, step {state.pos.step})")
            return
        best = f"the weights of the best epoch so far (top-1 error {state.best_top1:.2%})"
        lost = (f"{best} are not in {folder.last}" if state.best_step is not None else
                f"{folder.last} (written by an older version) does not say whether it holds {best}")
        if not self._work_left():
            self.progress.log(f"Note: {folder.best} is missing, and {lost}; no epoch is left to train, so there is no "
                              f"best.pt: use {folder.last}")
            return
        state.best_top1, state.best_step = math.inf, None     # the next epoch's end writes best.pt
        self.progress.log(f"Note: {folder.best} is missing, and {lost}: best.pt is written again at the end of the "
                          "next epoch, and holds the best epoch from there on")

    # -------------------------------------------------------------- training
    def fit(self) -> dict[str, Any]:
        self._prepare_run_dir()
        cfg = self.train_cfg
        late_signal = None
        try:
            with self.stop:    # Ctrl-C or SIGTERM: stop after the step, saved (_stop_here)
                if self._work_left() and self._stop_requested(anywhere=True):   # asked before (ablate, between runs)
                    self._stop_here()
                while self._work_left():
                    epoch = self.state.pos.epoch
                    rates = self.state.schedule.rates(epoch)
                    for group in self.optimizer.param_groups:
                        group["lr"] = rates.lr[group["name"]]
                    self.train_epoch(epoch, color_noise=rates.color_noise)
                    if not self._work_left():                   # only the last validation and save are left
                        last = "save" if self.state.pos.epoch == epoch else "validation and save"
                        self.stop.finishing(f"{self.stop.what} has no step left: it ends after its last {last}")
                    if self.state.pos.epoch == epoch:           # stopped inside the epoch by --max-steps
                        self._check_finite(before_save=True)
                        self.save()
                        break
                    self.end_epoch(epoch)
                    if self._work_left() and self._stop_requested(anywhere=True):   # during the validation: saved
                        self._stop_here()
                if self._stop_requested(anywhere=True):         # came with no step left: the run ended as usual
                    late_signal = self.agreed_signum or self.stop.signum
                    self.progress.log(f"Note: the {signal_name(late_signal)} came after the last step, with nothing "
                                      f"left to stop: the run ends as usual, saved at step {self.state.pos.step} "
                                      f"in {self.folder.last}")
        finally:
            self.log.close()
        pos, best = self.state.pos, self.state.best_top1
        return {"epochs": pos.epoch, "step": pos.step, "finished": pos.epoch >= cfg.epochs,
                "best_top1_error": None if math.isinf(best) else best,
                "best_split": self.run.val_split if self.val_loader is not None else "train",
                "run_dir": str(self.out_dir), "parallel": self.mode, "device": str(self.device),
                "rank": self.dist.rank, "stop_signal": late_signal}

    def _work_left(self) -> bool:
        """Whether steps are left to train, or an epoch's validation (the same on every rank)."""
        return self.state.pos.epoch < self.train_cfg.epochs and (not self._step_limit_reached()
                                                                 or self._validation_left())

    def _prepare_run_dir(self) -> None:
        if self.dist.is_main:                               # left by a kill in the middle of a save
            for folder in (self.out_dir, self.folder.checkpoints):
                remove_abandoned(folder)
        resuming = self.folder.resuming(self.run.resume, self.progress.log)
        if resuming:
            self.restore()
        self._banner()
        if resuming:
            self._note_resume()
        if self.dist.is_main:      # a new run's first write (the folder is then a run's); else this invocation's
            self.folder.write_config(self.config_dict())
            if not resuming:
                self.log.truncate(0)

    def _banner(self) -> None:
        """One line before the first step (stderr, main rank): what this run trains, how, where."""
        cfg, loader, manifest = self.train_cfg, self.train_loader, self.manifest
        said = [as_given(k, v) for k, v in _changes(self.recipe, self.model_cfg, cfg).items()]
        changes = f" with {', '.join(t for t, _ in said)}" if said else ""
        decode = f", decoded on the {loader.decode.upper()}" if loader.decode in ("cpu", "gpu") else ""
        val = (f"{manifest.splits[self.run.val_split].count:,} '{self.run.val_split}' images to validate"
               if self.val_loader is not None else "no validation split: the schedule watches the training error")
        self.progress.log(f"train: {self.recipe} recipe{changes}; {plural(cfg.epochs, 'epoch')} of "
                          f"{plural(len(loader), 'step')} of {cfg.batch_size} ({cfg.lr_schedule} schedule from lr "
                          f"{cfg.lr:g}); {self.mode} on {self.device}; {manifest.splits['train'].count:,} training "
                          f"images ({manifest.format} shards{decode}), {val}", mentions=tuple(m for _, m in said))

    def _note_resume(self) -> None:
        """What a resumed start says: where it continues, or that nothing is left to train."""
        pos, last, epochs = self.state.pos, self.folder.last, self.train_cfg.epochs
        if pos.epoch >= epochs:
            more = " (a larger `epochs` trains it on)" if self.train_cfg.lr_schedule == "plateau" else ""
            self.progress.log(f"Note: {last} finished its {plural(epochs, 'epoch')} at step {pos.step}: nothing "
                              f"left to train{more}", mentions=("epochs",) if more else ())
        elif not self._work_left():
            self.progress.log(f"Note: {last} is already at step {pos.step} (`max_steps` {self.run.max_steps}): "
                              "nothing left to train", mentions=("max_steps",))
        else:
            self.progress.log(f"Resuming from step {pos.step} ({self._where()}) of {last}")

    def _step_limit_reached(self) -> bool:
        return self.run.max_steps is not None and self.state.pos.step >= self.run.max_steps

    def train_epoch(self, epoch: int, *, color_noise: bool) -> None:
        """Train from the current position to the end of `epoch` (or to --max-steps)."""
        self.replica.net.train()
        loader, run, pos = self.train_loader, self.run, self.state.pos
        with self.progress.task(f"epoch {epoch + 1}/{self.train_cfg.epochs}", total=len(loader),
                                unit="batch", done=pos.batch) as task:       # a resume's done batches: not in the rate
            for batch in self._reading(loader.epoch(epoch, start_batch=pos.batch)):
                seed = step_seed(run.seed, self.dist.rank, epoch, pos.batch)
                gen = torch.Generator(device=self.device).manual_seed(seed)
                x = self.augment(batch.images, gen, color_noise=color_noise)   # (B, 3, 224, 224) float32, as the net's layout
                torch.manual_seed(seed ^ 0x5DEECE66D)    # this step's dropout masks, on every device
                logits, loss = self.train_step(x, batch.labels)
                self.last_x = x
                self.state.stats.update(logits, batch.labels, loss)
                pos.batch += 1
                pos.step += 1
                last = pos.batch >= len(loader) or self._step_limit_reached()   # a short run's steps get logged too
                info = self._maybe_log(epoch) if pos.step % run.log_every == 0 or last else {}
                task.advance(1, **info)
                if run.save_every and pos.step % run.save_every == 0:
                    self._check_finite(before_save=True)
                    self.save()
                if self._step_limit_reached():      # the run ends here anyway, saved by fit
                    break
                if self._stop_requested():
                    self._stop_here()
        if pos.batch >= len(loader):
            pos.epoch, pos.batch = epoch + 1, 0

    def _reading(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        """The loader's batches; a read that fails (DATA moved or deleted, a shard gone, a mount
        lost) stops the run saved at the last step done (_data_failed). The loop's own errors
        are not seen here: only what the loader raises."""
        try:
            yield from batches
        except (DataError, OSError) as exc:
            self._data_failed(exc)

    def _data_failed(self, exc: Exception, validating: int | None = None) -> NoReturn:
        """Stop on a failed read of DATA, saved as a Ctrl-C saves (the position, unless it was
        just saved), so that no work is lost: the error says what was saved and how to go on.
        `validating`: the epoch whose validation failed; its training is done, and the position
        saved is the one before its validation (every batch trained), which --resume
        validates. Under DDP nothing is saved: the other ranks are inside a collective
        of this step and cannot join a save (torchrun then stops them)."""
        pos, last = self.state.pos, self.folder.last
        if validating is not None:
            pos.epoch, pos.batch = validating, len(self.train_loader)
        what = str(exc) if isinstance(exc, AlexnetError) else f"{self.data_dir} cannot be read ({exc})"
        again = "when the data is whole again, run the same command with `resume` to continue"
        if not self.data_dir.is_dir():
            again = (f"continue from where the data is now with the same command and `resume`: "
                     f"`alexnet train NEWPATH --out {shell_word(self.out_dir)} ... --resume`")
        if self.dist.world_size > 1:
            kept = (f"{last} holds step {self.state.saved_step}" if self.state.saved_step is not None
                    else "no checkpoint was written yet")
            raise DataError(f"{what}: not saved (under `parallel` data every rank stops where it is); {kept}; "
                            f"{again}", mentions=("parallel", "resume")) from None
        if pos.step == 0:
            raise DataError(f"{what}: no step was done, nothing was saved") from None
        if self.state.saved_step != pos.step:
            self._check_finite(before_save=True)
            try:
                self.save()
            except AlexnetError as failed:      # DATA and RUN on one lost mount: say both
                raise DataError(f"{what}; then saving failed too: {failed}", mentions=failed.mentions) from None
        raise DataError(f"{what}: saved {last} at step {pos.step} ({self._where()}); {again}",
                        mentions=("resume",)) from None

    def _validation_left(self) -> bool:
        """Whether the position is an epoch's end before its validation: every batch of it
        trained (a data error during the validation saves there, _data_failed)."""
        return self.state.pos.batch >= len(self.train_loader)

    def _where(self) -> str:
        """The position in words (Position.where), or that the epoch awaits its validation."""
        pos = self.state.pos
        if not self._validation_left():
            return pos.where()
        return f"epoch {pos.epoch + 1} trained, " + ("not yet validated" if self.val_loader is not None else
                                                     "its end not yet recorded")

    def _stop_requested(self, anywhere: bool = False) -> bool:
        """Whether a Ctrl-C or SIGTERM asks to stop here, after a whole step: at once in one
        process; under DDP at the log steps (or `anywhere`), for every rank together (any
        rank's request stops all; one small all-reduce where the ranks sync anyway)."""
        if self.dist.world_size == 1:
            return self.stop.signum is not None
        if not anywhere and self.state.pos.step % self.run.log_every:
            return False
        signum = torch.tensor(self.stop.signum or 0, device=self.device)
        dist.all_reduce(signum, op=dist.ReduceOp.MAX)
        # kept apart from self.stop.signum, which says whether THIS process had one (its next
        # Ctrl-C would otherwise count as a second one and stop it at once, in the save)
        self.agreed_signum = int(signum.item()) or None   # a rank with none names another's (SIGTERM over Ctrl-C)
        return self.agreed_signum is not None

    def _stop_here(self) -> None:
        """Save the position (unless it was just saved) and stop with `Interrupted`."""
        pos = self.state.pos
        signum = self.agreed_signum or self.stop.signum or signal.SIGTERM
        name = signal_name(signum)
        if pos.step == 0:                                  # asked before the first step: nothing to save
            raise Interrupted(f"{name}: stopped before the first step; nothing was saved", signum)
        if self.state.saved_step != pos.step:
            self._check_finite(before_save=True)
            self.save()
        raise Interrupted(f"{name}: stopped at step {pos.step} ({self._where()}) and saved {self.folder.last}", signum)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda and self.run.bf16):
            logits = self.replica.module(x)                                  # (B, C)
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
        flags = [self.state.stats.bad]
        params = [p for ps in self.replica.named_param_lists().values() for p in ps] if before_save else []
        if before_save:   # each tensor's sum: non-finite if any of its values is (see all_finite)
            flags += [~torch.isfinite(torch.stack([p.detach().sum().to(self.device) for p in params])).all(),
                      self._outputs_bad()]
        bad = torch.stack(flags).to(torch.int32)                                # (1,) or (3,)
        if self.dist.world_size > 1:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        bad = bad.tolist()                                                  # host sync
        if before_save and bad[1] and all(all_finite(p.detach()) for p in params):
            bad[1] = 0      # finite weights whose sum overflowed; every rank holds the same weights
        if not any(bad):
            return
        step, saved_step = self.state.pos.step, self.state.saved_step
        self.log.write({"kind": "diverged", "step": step})                  # for `alexnet report`
        what = ("the loss became NaN or infinite" if bad[0] else "the weights became NaN or infinite" if bad[1]
                else "the network's outputs became NaN or infinite (its weights grew too large)")
        kept = (f"the last good checkpoint (step {saved_step}) is kept in {self.folder.checkpoints}"
                if saved_step is not None else "no checkpoint was written")
        raise TrainingDiverged(f"{what} by step {step}; stopped without saving them: {kept}. "
                               "Try a lower `lr`.", mentions=("lr",))

    @torch.no_grad()
    def _outputs_bad(self) -> torch.Tensor:
        """Whether the network gives a NaN or infinite output on (a few images of) the last
        training batch, in eval mode; a bool tensor on the device (no sync)."""
        if self.last_x is None:
            return torch.zeros((), dtype=torch.bool, device=self.device)
        net = self.replica.net
        net.eval()
        try:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda and self.run.bf16):
                logits = net(self.last_x[:2])                                   # (2, C)
        finally:
            net.train()
        return ~torch.isfinite(logits.float()).all().to(self.device)

    def _maybe_log(self, epoch: int) -> dict[str, Any]:
        """Every log_every steps, and after an epoch's or the run's last step: the mean loss of
        the steps since the last record (one host sync); NaN guard; stuck warning."""
        self._check_finite()
        stats, step = self.state.stats, self.state.pos.step
        loss, steps, rate = stats.interval(self.train_cfg.batch_size)  # host sync
        chance = math.log(self.model_cfg.num_classes)
        if stats.note_chance(loss, chance, steps) >= self.run.stuck_steps:
            stats.warned = True
            self.progress.log(
                f"Warning: the loss has stayed at chance (ln {self.model_cfg.num_classes} = {chance:.2f}) for "
                f"{self.run.stuck_steps} steps. With the paper's bias init of 1 this is common: "
                "try `bias_fill` 0.1 or a lower `lr`; see the README's troubleshooting.", mentions=("bias_fill", "lr"))
            self.log.write({"kind": "warning", "step": step, "message": "loss stuck at chance"})
        self.log.write({"kind": "train", "step": step, "epoch": epoch + 1, "loss": loss, "lr": self.weights_lr(),
                        "images_per_s": rate})
        return {"loss": loss, "img/s": round(rate)}

    def end_epoch(self, epoch: int) -> None:
        state = self.state
        train = state.stats.epoch_result()                  # summed over the ranks: all watch the same numbers
        record: dict[str, Any] = {"kind": "epoch", "epoch": epoch + 1, "step": state.pos.step,
                                  "train_top1_error": train.top1_error, "train_top5_error": train.top5_error,
                                  "lr": self.weights_lr(), "time_s": state.stats.epoch_time()}
        self._check_finite(before_save=True)
        monitored = train.top1_error
        if self.val_loader is not None:
            try:
                val = evaluate_model(self.replica.net, self.val_loader, self.mean_image.to(self.device), crops=1,
                                     mean_crop=self.train_cfg.mean_crop, bf16=self.run.bf16)
            except (DataError, OSError) as exc:      # saved before the validation, which --resume does
                self._data_failed(exc, validating=epoch)
            record.update(val_top1_error=val.top1_error, val_top5_error=val.top5_error, val_n=val.n)
            monitored = val.top1_error
        record["lr_dropped"] = state.schedule.observe(epoch, monitored)
        improved = monitored < state.best_top1
        if improved:
            state.best_top1, state.best_step = monitored, state.pos.step
        self.log.write(record)
        self.progress.log(_epoch_line(record, self.model_cfg.num_classes))
        state.stats.reset()
        self.save(best=improved)


def _epoch_line(r: dict[str, Any], num_classes: int) -> str:
    """The epoch's log line; with at most 5 classes no top-5 figure (0 by construction), but a
    word on why (metrics.jsonl keeps every figure)."""
    trivial = top5_is_trivial(num_classes)

    def errors(split: str) -> str:
        top5 = "" if trivial else f" top-5 {r[f'{split}_top5_error']:.2%}"
        return f"{split} top-1 {r[f'{split}_top1_error']:.2%}{top5}"

    val = f"  {errors('val')}" if "val_top1_error" in r else ""
    drop = "  (learning rate divided by 10)" if r["lr_dropped"] else ""
    why = f"  (no top-5 error: only {num_classes} classes)" if trivial else ""
    return f"epoch {r['epoch']}: {errors('train')}{val}  lr {r['lr']:g}  {r['time_s']:.1f}s{drop}{why}"


SAID = ("num_classes", "epochs", "batch_size", "lr", "lr_schedule")   # the banner's own words give these


def _changes(recipe: str, model_cfg: ModelConfig, train_cfg: TrainConfig) -> dict[str, Any]:
    """The model and training settings that differ from `recipe`'s, but for those the banner
    gives anyway (classes, length, batch, rate and schedule)."""
    return settings_changed(recipe, to_dict(model_cfg), to_dict(train_cfg), leave=SAID)


def fit_classes(cfg: ModelConfig, n_data: int, *, from_data: bool = True) -> ModelConfig:
    """The network trained on data of `n_data` classes: fc8 sized to them. With `from_data`, a
    num_classes left at its default 1000 follows the data set (another must match); without,
    num_classes was chosen (the CLI's --num-classes) and must match, 1000 too. `ablate` records it too."""
    if n_data < 2:                      # the data's fault, not a --num-classes the user gave
        raise DataError(f"the data has {n_data} class{'es' if n_data != 1 else ''}; a classifier needs at least 2 "
                        "(one sub-folder of images per class)")
    if cfg.num_classes == n_data:
        return cfg
    if cfg.num_classes != ModelConfig.num_classes or not from_data:
        raise AlexnetError(f"num_classes {cfg.num_classes} does not match the data's {n_data} classes",
                           field="num_classes", value=cfg.num_classes)
    return dataclasses.replace(cfg, num_classes=n_data)


def train(data_dir: str | Path, out_dir: str | Path, model_cfg: ModelConfig, train_cfg: TrainConfig,
          run: RunOptions = RunOptions(), *, recipe: str | None = None,
          progress: Reporter = NullReporter(), classes_from_data: bool = True) -> dict[str, Any]:
    """Train AlexNet on a prepared data folder into `out_dir`; returns a summary of the run.
    `recipe` ("paper" or "code") is recorded with the run, and `report` lists the settings that
    differ from it; None: the recipe the configs were resolved from (config.recipe_of: the one
    clearly nearest them; a UsageError when they are about as far from two, as
    `resolve_model_config("code")` with `resolve_train_config("paper")`: then name it).
    `classes_from_data`: a `model_cfg.num_classes` left at the default 1000 becomes the data's
    number of classes (False: it was chosen, and must match the data, fit_classes).
    Under torchrun, the process group it joins is destroyed again before it returns (also on
    errors): left to the interpreter's exit, gloo's threads can abort the process (SIGABRT)
    after a run that succeeded, and torchrun would report a failure."""
    recipe = recipe_of(model_cfg, train_cfg, recipe)       # before anything is written
    owns_group = launched_by_torchrun() and not dist.is_initialized()
    out_dir = Path(out_dir)
    # rank 0 alone writes the run, so it alone locks it (RANK: torchrun's, read before the group exists)
    lock = CommandLock(out_dir) if not launched_by_torchrun() or os.environ.get("RANK", "0") == "0" else None
    made = missing_ancestor(out_dir)      # what the lock's mkdir makes; removed again if nothing is written
    trainer = None
    finished = False
    try:
        check_run_dir(out_dir, resume=run.resume)   # a clear error for an --out under a file, before the lock's mkdir
        if lock is not None:
            lock.acquire()             # before anything is read or written: a second run fails at once
        trainer = Trainer(Path(data_dir), out_dir, model_cfg, train_cfg, run, recipe, progress, classes_from_data)
        result = trainer.fit()
        finished = True
        return result
    finally:
        if lock is not None:           # a run that failed before writing anything leaves no folder behind
            lock.release(remove_folders_up_to=None if finished else made)
        if owns_group:
            del trainer        # DistributedDataParallel's references to the group go first
            shutdown()
