"""Where one training step's GPU time goes: torch.profiler over a few eager steps of the
trainer's own augment + train_step on a resident batch, grouped by operator.

    python benchmarks/profile_step.py --device cuda [--steps 10] [--trace trace.json] [--json]

`--json` prints the table's rows (the operators with the most time, times in microseconds over
all profiled steps) as one JSON document on stdout; the table then goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import make_trainer, prepare_data  # noqa: E402


def _rows(averages, cuda: bool, limit: int) -> list[dict]:
    """The table's rows as dicts, in its order: the `limit` operators with the most total time."""
    total = "device_time_total" if cuda else "cpu_time_total"
    events = sorted(averages, key=lambda e: getattr(e, total), reverse=True)[:limit]
    rows = []
    for e in events:
        row = {"name": e.key, "calls": e.count, "cpu_time_total": e.cpu_time_total,
               "self_cpu_time_total": e.self_cpu_time_total}
        if cuda:
            row.update(device_time_total=e.device_time_total, self_device_time_total=e.self_device_time_total)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5, help="steps before the profiled ones")
    ap.add_argument("--n", type=int, default=64, help="generated training images")
    ap.add_argument("--lrn-kernel", default="auto", help="alexnet train --lrn-kernel")
    ap.add_argument("--compile", action="store_true", help="profile the torch.compile'd step")
    ap.add_argument("--trace", type=Path, help="also write a Chrome trace here")
    ap.add_argument("--json", action="store_true",
                    help="print the rows as one JSON document on stdout (the table goes to stderr)")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    ns = argparse.Namespace(device=args.device, n=args.n, classes=min(10, max(2, args.n // 4)),
                            batch=args.batch or (128 if cuda else 4),
                            log_every=10, workers=4, eval_batch=64, lrn_kernel=args.lrn_kernel,
                            skip="b-jpeg")                      # the raw shards only: no jpeg row here
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        _, data = prepare_data(tmp, ns)
        trainer = make_trainer(data["raw"], tmp / "run", ns, compile=args.compile)
        dev = trainer.device
        images = torch.randint(0, 256, (ns.batch, 256, 256, 3), dtype=torch.uint8, device=dev)
        labels = torch.randint(0, trainer.model_cfg.num_classes, (ns.batch,), device=dev)
        gen = torch.Generator(device=dev).manual_seed(0)

        def step():
            x = trainer.augment(images, gen)
            if trainer.cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            trainer.train_step(x, labels)

        for _ in range(args.warmup):
            step()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            for _ in range(args.steps):
                step()
            if cuda:
                torch.cuda.synchronize()
    key = "cuda_time_total" if cuda else "cpu_time_total"
    averages = prof.key_averages()
    print(averages.table(sort_by=key, row_limit=args.rows, max_name_column_width=60),
          file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps({"device": args.device, "steps": args.steps, "batch": ns.batch, "compile": args.compile,
                          "sort_by": "device_time_total" if cuda else "cpu_time_total", "unit": "us",
                          "rows": _rows(averages, cuda, args.rows)}))
    if args.trace:
        prof.export_chrome_trace(str(args.trace))


if __name__ == "__main__":
    main()
