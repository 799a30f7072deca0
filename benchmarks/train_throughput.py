"""Training and 10-crop evaluation throughput, end to end, against the ceiling and a peer.

    python benchmarks/train_throughput.py                         # tiny, on the CPU
    python benchmarks/train_throughput.py --device cuda --n 8192 --steps 60

In one run, on the device given (images/s, bf16 autocast on CUDA):
  (a) ceiling: the paper's network on a uint8 batch already resident on the device, through
      the trainer's own augmentation and training step (Trainer.augment, Trainer.train_step),
      eager and torch.compile'd (on CUDA also in reduce-overhead mode: CUDA graphs); also with the other LRN implementations (same values): triton
      where triton and CUDA are, and, compiled, the fused autograd function instead of the
      reference ops that `--lrn-kernel auto` lets torch.compile trace;
  (b) end to end: `alexnet train`'s real code path (Trainer.fit: ShardLoader -> augment ->
      step, logging, checkpoints) from raw shards and from jpeg shards, generated on the
      spot (--n images, cycled over epochs);
  (c) the same ceiling without LRN and with dense conv2/4/5 (what LRN and groups cost);
  (d) the peer: torchvision ImageFolder + PIL transforms + DataLoader + torchvision's
      AlexNet, as in the PyTorch ImageNet example (fp32, like the example);
  and 10-crop evaluation (crops/s): resident data vs from raw shards (evaluate_model).
Prints a table with the hardware, the ratio of each row to the compiled ceiling, and to the
peer. Rates are medians over timed intervals after warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import generate, hardware  # noqa: E402  (benchmarks/data.py)

from alexnet_cli.config import resolve_model_config, resolve_train_config  # noqa: E402
from alexnet_cli.evaluate import evaluate_model  # noqa: E402
from alexnet_cli.loader import ShardLoader  # noqa: E402
from alexnet_cli.lrn_triton import triton_available  # noqa: E402
from alexnet_cli.model import LRN_IMPLEMENTATIONS, LocalResponseNorm, local_response_norm  # noqa: E402
from alexnet_cli.pca import compute_pca, write_pca  # noqa: E402
from alexnet_cli.prep import PrepOptions, prepare  # noqa: E402
from alexnet_cli.progress import NullReporter  # noqa: E402
from alexnet_cli.runlog import read_metrics  # noqa: E402
from alexnet_cli.train import RunOptions, Trainer  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_rate(fn, batch: int, warmup: int, steps: int, device: torch.device, repeats: int = 3) -> float:
    """Median images/s of `repeats` timed runs of `steps` calls, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    rates = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        sync(device)
        rates.append(steps * batch / (time.perf_counter() - t0))
    return statistics.median(rates)


def make_trainer(data: Path, out: Path, args, **run_kw) -> Trainer:
    model_kw = run_kw.pop("model", {})
    model_cfg = resolve_model_config("paper", **model_kw)
    train_cfg = resolve_train_config("paper", batch_size=args.batch, epochs=10**6)
    run_kw.setdefault("lrn_kernel", args.lrn_kernel)
    run = RunOptions(device=args.device, log_every=args.log_every, workers=args.workers, **run_kw)
    return Trainer(data, out, model_cfg, train_cfg, run, "paper", NullReporter())


def densify(trainer: Trainer) -> None:
    """conv2, conv4, conv5 as dense convolutions of the same widths (no column split)."""
    m = trainer.replica.net
    for name in ("conv2", "conv4", "conv5"):
        old = getattr(m, name)
        setattr(m, name, nn.Conv2d(old.in_channels, old.out_channels, old.kernel_size, padding=old.padding))
    m.to(trainer.device)
    if trainer.cuda:
        m.to(memory_format=torch.channels_last)
    trainer.optimizer = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    trainer.replica.module = torch.compile(m) if trainer.run.compile else m


def swap_lrn(trainer: Trainer, impl: str) -> None:
    """LRN implemented by autograd on the reference ops ("reference") or by torch's
    F.local_response_norm ("torch": per-column, alpha/n; the usual eager baseline)."""
    for m in trainer.replica.net.modules():
        if isinstance(m, LocalResponseNorm):
            if impl == "reference":
                m.forward = lambda x, m=m: local_response_norm(x, m.size, m.alpha, m.beta, m.k, m.groups)
            else:
                m.forward = lambda x, m=m: torch.cat([F.local_response_norm(h, m.size, m.alpha * m.size, m.beta, m.k)
                                                      for h in x.chunk(m.groups, 1)], 1)


def ceiling(data: Path, tmp: Path, args, *, compile: bool, lrn: bool = True, dense: bool = False,
            lrn_impl: str | None = None, lrn_kernel: str | None = None, compile_mode: str = "default") -> float:
    """(a)/(c): the trainer's augment + step on one resident uint8 batch."""
    trainer = make_trainer(data, tmp / f"ceil-{compile}-{lrn}-{dense}-{lrn_impl}-{lrn_kernel}-{compile_mode}", args,
                           compile=compile, model={} if lrn else {"lrn": False},
                           lrn_kernel=lrn_kernel or args.lrn_kernel, compile_mode=compile_mode)
    if lrn_impl:
        swap_lrn(trainer, lrn_impl)
    if dense:
        densify(trainer)
    dev = trainer.device
    images = torch.randint(0, 256, (args.batch, 256, 256, 3), dtype=torch.uint8, device=dev)
    labels = torch.randint(0, trainer.model_cfg.num_classes, (args.batch,), device=dev)
    gen = torch.Generator(device=dev).manual_seed(0)

    def step():
        x = trainer.augment(images, gen)                                    # (B, 3, 224, 224)
        if trainer.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        trainer.train_step(x, labels)

    return timed_rate(step, args.batch, args.warmup, args.steps, dev, args.repeats)


def end_to_end(data: Path, tmp: Path, args, *, compile: bool) -> float:
    """(b): Trainer.fit itself; the median of its own logged images/s after warm-up."""
    out = tmp / f"e2e-{data.name}-{compile}"
    trainer = make_trainer(data, out, args, compile=compile, max_steps=args.warmup + args.steps * 3)
    trainer.fit()
    rates = [r["images_per_s"] for r in read_metrics(out) if r["kind"] == "train"]
    skip = -(-args.warmup // args.log_every)
    return statistics.median(rates[skip:] or rates)


def peer(src: Path, args) -> float:
    """(d): the PyTorch ImageNet example's pipeline with torchvision's AlexNet."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, models, transforms

    device = torch.device(args.device)
    normalize = transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    dataset = datasets.ImageFolder(src / "train", transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]))
    loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers, drop_last=True,
                        pin_memory=device.type == "cuda", persistent_workers=True)
    model = models.alexnet(num_classes=len(dataset.classes)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    batches = iter(())

    def step():
        nonlocal batches
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        loss = F.cross_entropy(model(x.to(device, non_blocking=True)), y.to(device, non_blocking=True))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return timed_rate(step, args.batch, args.warmup, args.steps, device, args.repeats)


def ten_crop(data: Path, tmp: Path, args, *, resident: bool) -> float:
    """10-crop evaluation, crops/s: evaluate_model over raw shards, or its step on resident data."""
    trainer = make_trainer(data, tmp / f"eval-{resident}", args, compile=False)
    model, mean, dev = trainer.replica.net.eval(), trainer.mean_image.to(trainer.device), trainer.device
    if resident:
        from alexnet_cli.evaluate import Member, average_softmax
        images = torch.randint(0, 256, (args.eval_batch, 256, 256, 3), dtype=torch.uint8, device=dev)
        member = [Member(model, mean, "crop")]
        return 10 * timed_rate(lambda: average_softmax(member, images, crops=10), args.eval_batch,
                               args.warmup, args.steps, dev, args.repeats)
    loader = ShardLoader(data, "train", args.eval_batch, shuffle=False, device=dev, workers=args.workers)
    evaluate_model(model, loader, mean, crops=10)                           # warm-up
    sync(dev)
    t0 = time.perf_counter()
    result = evaluate_model(model, loader, mean, crops=10)
    sync(dev)
    return 10 * result.n / (time.perf_counter() - t0)


class _Rows(list):
    """The table's rows; each is also printed as soon as it is measured."""

    def append(self, row: tuple[str, float]) -> None:
        print(f"{row[0]}: {row[1]:,.0f}", flush=True)
        super().append(row)


def prepare_data(tmp: Path, args) -> tuple[Path, dict[str, Path]]:
    """The generated JPEGs, and the shards the rows read: raw always, jpeg unless --skip b-jpeg."""
    src = tmp / "src"
    generate(src, args.n, args.classes, args.workers)
    out = {}
    for fmt in ("raw",) if "b-jpeg" in getattr(args, "skip", "") else ("raw", "jpeg"):
        out[fmt] = tmp / fmt
        prepare(src, out[fmt], PrepOptions(format=fmt, workers=args.workers, shard_size=1024))
        write_pca(out[fmt], compute_pca(out[fmt], sample=4096))
    return src, out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=None, help="generated images (default: 4096 on CUDA, 48 on CPU)")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=None, help="training batch (default 128 on CUDA, 4 on CPU)")
    ap.add_argument("--eval-batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="timed steps per repeat")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of --steps per row; the median is shown")
    ap.add_argument("--log-every", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--lrn-kernel", default="auto", choices=LRN_IMPLEMENTATIONS, help="alexnet train --lrn-kernel for every row")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--no-eager", action="store_true", help="skip the eager rows")
    ap.add_argument("--no-eval", action="store_true", help="skip the 10-crop evaluation rows")
    ap.add_argument("--skip", default="", help="row groups to skip, e.g. 'c' or 'b-jpeg,c'")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    cuda = args.device.startswith("cuda")
    import os
    defaults = dict(n=4096, batch=128, eval_batch=256, steps=30, warmup=15, log_every=10,
                    workers=min(16, os.cpu_count() or 1)) if cuda else \
        dict(n=48, batch=4, eval_batch=4, steps=2, warmup=1, log_every=1, workers=2)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    compile_modes = [c for c, off in ((False, args.no_eager), (True, args.no_compile)) if not off]

    rows = _Rows()
    with tempfile.TemporaryDirectory(prefix="alexnet-bench-") as tmp_name:
        tmp = Path(tmp_name)
        src, data = prepare_data(tmp, args)
        for c in compile_modes:
            tag = "compiled" if c else "eager"
            rows.append((f"(a) ceiling, resident data, {tag}", ceiling(data["raw"], tmp, args, compile=c)))
            if c and cuda:   # CUDA graphs through torch.compile's reduce-overhead mode
                rows.append(("(a) ceiling, compiled, reduce-overhead (CUDA graphs)",
                             ceiling(data["raw"], tmp, args, compile=True, compile_mode="reduce-overhead")))
            if "a-lrn" in args.skip:
                continue
            # the other LRN implementations (same values) in this mode, to choose `auto`'s pick from
            others = ["triton"] if triton_available() else []
            others += ["fused"] if c else []     # compiled `auto` traces the reference ops
            for how in others:
                if how != args.lrn_kernel:
                    rows.append((f"(a) ceiling, --lrn-kernel {how}, {tag}",
                                 ceiling(data["raw"], tmp, args, compile=c, lrn_kernel=how)))
            if not c:
                for impl in ("reference", "torch"):
                    rows.append((f"(a) ceiling, {impl} LRN by autograd, eager",
                                 ceiling(data["raw"], tmp, args, compile=False, lrn_impl=impl)))
        for c in compile_modes:
            tag = "compiled" if c else "eager"
            for fmt in ("raw", "jpeg"):
                if f"b-{fmt}" in args.skip:
                    continue
                rows.append((f"(b) alexnet train from {fmt} shards, {tag}", end_to_end(data[fmt], tmp, args, compile=c)))
        for c in compile_modes if "c" not in args.skip.split(",") else []:
            tag = "compiled" if c else "eager"
            rows.append((f"(c) ceiling without LRN, {tag}", ceiling(data["raw"], tmp, args, compile=c, lrn=False)))
            rows.append((f"(c) ceiling without LRN and groups, {tag}",
                         ceiling(data["raw"], tmp, args, compile=c, lrn=False, dense=True)))
        if not args.no_peer:
            rows.append(("(d) peer: ImageFolder + PIL + torchvision AlexNet (fp32)", peer(src, args)))
        if not args.no_eval:
            rows.append(("10-crop eval, resident data (crops/s)", ten_crop(data["raw"], tmp, args, resident=True)))
            rows.append(("10-crop eval from raw shards (crops/s)", ten_crop(data["raw"], tmp, args, resident=False)))

    ref = dict(rows).get("(a) ceiling, resident data, compiled", rows[0][1])   # else the first row
    peer_rate = dict(rows).get("(d) peer: ImageFolder + PIL + torchvision AlexNet (fp32)")
    table = Table(title=f"alexnet training throughput on {args.device}, batch {args.batch}, "
                        f"--lrn-kernel {args.lrn_kernel}", title_justify="left",
                  caption=hardware(torch.device(args.device)))
    for col in ("what", "images/s", "/ ceiling", "/ peer"):
        table.add_column(col, justify="left" if col == "what" else "right")
    for what, rate in rows:
        table.add_row(what, f"{rate:,.0f}", f"{rate / ref:.2f}",
                      f"{rate / peer_rate:.1f}x" if peer_rate and not what.startswith("10-crop") else "")
    Console().print(table)
    result = {"device": args.device, "hardware": hardware(torch.device(args.device)), "batch": args.batch,
              "lrn_kernel": args.lrn_kernel,
              "n": args.n, "rows": [{"what": w, "rate": r} for w, r in rows]}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
