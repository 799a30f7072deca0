"""Run by test_train.py under torchrun (2 processes, gloo): trains with --parallel data
(1) straight through one epoch and (2) stopped after one step and resumed to the end of the
epoch, then writes a report per rank: the weights' sums, the epoch's summed counts, and what
the rank reported (rank 0 alone may speak). Two short runs go wrong on rank 1 alone: a NaN
loss, and a Ctrl-C."""

import json
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

from alexnet_cli.config import resolve_model_config, resolve_train_config
from alexnet_cli.checkpoint import load_checkpoint
from alexnet_cli.errors import Interrupted, TrainingDiverged
from alexnet_cli.train import RunOptions, Trainer

data, out = Path(sys.argv[1]), Path(sys.argv[2])


class Recorder:
    def __init__(self):
        self.said = []

    @contextmanager
    def task(self, description, total, unit="it", done=0):
        self.said.append(description)
        yield self

    def advance(self, n=1, **info):
        pass

    def log(self, message, mentions=()):
        self.said.append(message)

    def named(self, message, mentions=()):
        return message


def run(folder: str, max_steps=None, resume=False):
    """Train into out/folder; returns the trainer's epoch counts (summed over ranks), its
    weights, and what it reported."""
    recorder = Recorder()
    trainer = Trainer(data, out / folder, resolve_model_config("paper"),
                      resolve_train_config("paper", batch_size=8, epochs=1),
                      RunOptions(device="cpu", parallel="data", max_steps=max_steps, resume=resume, workers=1),
                      "paper", recorder)
    counts = []
    stats, reset = trainer.state.stats, trainer.state.stats.reset
    stats.reset = lambda: (counts.append(stats.meter.counts.clone()), reset())
    summary = trainer.fit()
    flat = torch.cat([v.flatten().double() for v in trainer.replica.state_dict().values()])
    del trainer   # DDP's references to the process group, before it is destroyed below
    return summary, counts, torch.stack([flat.sum(), flat.square().sum()]), recorder.said


def four_steps(folder: str, on_rank_1) -> Trainer:
    """A run of 4 steps logged every 2 whose rank 1 alone sees each step's statistics through
    `on_rank_1(pos, logits, labels, loss, update)` (the rank's own update is `update`)."""
    trainer = Trainer(data, out / folder, resolve_model_config("paper"),
                      resolve_train_config("paper", batch_size=8, epochs=1),
                      RunOptions(device="cpu", parallel="data", max_steps=4, log_every=2, workers=1), "paper",
                      Recorder())
    if dist.get_rank() == 1:
        update, pos = trainer.state.stats.update, trainer.state.pos
        trainer.state.stats.update = lambda logits, labels, loss: on_rank_1(pos, logits, labels, loss, update)
    return trainer


def diverge_on_rank_1():
    """A NaN loss on rank 1 alone, at step 2: every rank must stop at the same check."""
    def poisoned(pos, logits, labels, loss, update):
        update(logits, labels, loss if pos.step < 1 else loss * float("nan"))
    trainer = four_steps("nan", poisoned)
    try:
        trainer.fit()
        return "finished"
    except TrainingDiverged:
        return f"diverged before step {trainer.state.pos.step}"
    finally:
        del trainer


def ctrl_c_on_rank_1():
    """Ctrl-C on rank 1 alone, during step 1: every rank stops together at the next log step
    (2 of 4), after a save there; returns where each stopped and what last.pt holds."""
    def interrupted(pos, logits, labels, loss, update):
        if pos.step == 0:
            signal.raise_signal(signal.SIGINT)         # handled by the trainer: a request, recorded
        update(logits, labels, loss)
    trainer = four_steps("stopped", interrupted)
    try:
        trainer.fit()
        return {"stopped": "finished"}
    except Interrupted as stop:
        dist.barrier()                                 # rank 0's save is on disk for both
        saved = load_checkpoint(trainer.folder.last, map_location="cpu")["trainer"]
        return {"stopped": f"at step {trainer.state.pos.step}", "signum": stop.signum,
                "message": str(stop), "saved_step": saved["step"]}
    finally:
        del trainer


summary, counts, sums, said = run("straight")
stopped = ctrl_c_on_rank_1()
diverged = diverge_on_rank_1()
run("resumed", max_steps=1)
_, resumed_counts, resumed_sums, _ = run("resumed", resume=True)
gathered = [torch.zeros(2, dtype=torch.float64) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, sums)
rank = dist.get_rank()
(out / f"ddp_report_{rank}.json").write_text(json.dumps({
    "world_size": dist.get_world_size(), "summary": summary, "rank_sums": [s.tolist() for s in gathered],
    "counts": [c.tolist() for c in counts], "resumed_counts": [c.tolist() for c in resumed_counts],
    "sums": sums.tolist(), "resumed_sums": resumed_sums.tolist(), "said": said, "diverged": diverged,
    "stopped": stopped}))
dist.destroy_process_group()
