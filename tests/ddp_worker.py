"""Run by test_train.py under torchrun (2 processes, gloo): trains a few steps with
--parallel data, then checks that every rank holds the same weights and writes a report."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from alexnet_cli.config import resolve_model_config, resolve_train_config
from alexnet_cli.progress import NullReporter
from alexnet_cli.train import RunOptions, Trainer

data, out = Path(sys.argv[1]), Path(sys.argv[2])
trainer = Trainer(data, out, resolve_model_config("paper"), resolve_train_config("paper", batch_size=8, epochs=1),
                  RunOptions(device="cpu", parallel="data", max_steps=2, workers=1), "paper", NullReporter())
summary = trainer.fit()
flat = torch.cat([v.flatten().double() for v in trainer.model_state().values()])
del trainer   # DDP's references to the process group, before it is destroyed below
sums = [torch.zeros(2, dtype=torch.float64) for _ in range(dist.get_world_size())]
dist.all_gather(sums, torch.stack([flat.sum(), flat.square().sum()]))
if dist.get_rank() == 0:
    (out / "ddp_report.json").write_text(json.dumps({
        "world_size": dist.get_world_size(), "summary": summary,
        "rank_sums": [s.tolist() for s in sums]}))
dist.destroy_process_group()
