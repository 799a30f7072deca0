"""Where the paper's network loses speed: LRN and the grouped (two-column) convolutions,
forward + backward, at the shapes of a batch of 128, in bf16 channels_last on CUDA.

    python benchmarks/layers.py --device cuda [--json] [--no-compile]

Each row is printed to stderr as soon as it is measured, the table at the end. `--json` prints
the rows as one JSON document on stdout (the table then goes to stderr). `--no-compile` leaves
out the torch.compile row (compiled once per shape: tens of seconds on a cold machine).

LRN implementations (all the paper's formula, same values):
  reference   model.local_response_norm through autograd (a window sum over the channels)
  fused       lrn_fast.local_response_norm_fused (hand-written backward), the eager default
  torch       F.local_response_norm per column (alpha/n; the usual eager baseline)
  compiled    torch.compile(reference)
  triton      lrn_triton.lrn_triton, the Triton kernels (--lrn-kernel triton; CUDA with triton)
Grouped convolution candidates for conv2, conv4, conv5:
  groups=2    one cuDNN call with groups=2 (the model's layout)
  split       two dense convolutions on the channel halves, outputs concatenated
  dense       one dense convolution of the same widths (not the paper's network: the cost
              of the groups themselves)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from alexnet_cli.lrn_triton import lrn_triton, triton_available
from alexnet_cli.lrn_fast import local_response_norm_fused  # noqa: E402
from alexnet_cli.model import local_response_norm  # noqa: E402

LRN_ARGS = (5, 1e-4, 0.75, 2.0)


def bench(fn, x, iters: int, warmup: int = 5, repeats: int = 3) -> float:
    """Milliseconds per forward + backward of fn(x): the median of `repeats` timings of `iters`."""
    x = x.detach().requires_grad_()
    for _ in range(warmup):
        fn(x).sum().backward()
    sync(x.device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn(x).sum().backward()
        sync(x.device)
        times.append((time.perf_counter() - t0) / iters * 1e3)
    return statistics.median(times)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def torch_lrn(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    size, alpha, beta, k = LRN_ARGS
    return torch.cat([F.local_response_norm(h, size, alpha * size, beta, k) for h in x.chunk(groups, 1)], 1)


def split_conv(conv: torch.nn.Conv2d):
    """A groups=2 convolution as two dense ones on the channel halves (same weights)."""
    def run(x):
        xa, xb = x.chunk(2, 1)
        wa, wb = conv.weight.chunk(2, 0)
        ba, bb = conv.bias.chunk(2, 0)
        return torch.cat([F.conv2d(xa, wa, ba, padding=conv.padding), F.conv2d(xb, wb, bb, padding=conv.padding)], 1)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=5, help="untimed calls before each row's timings")
    ap.add_argument("--repeats", type=int, default=3, help="timings of --iters calls per row; the median is shown")
    ap.add_argument("--no-compile", action="store_true", help="leave out the torch.compile LRN row")
    ap.add_argument("--json", action="store_true",
                    help="print the rows as one JSON document on stdout (the table goes to stderr)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    batch, iters = args.batch or (128 if cuda else 4), args.iters or (20 if cuda else 2)
    dtype = torch.bfloat16 if cuda else torch.float32
    fmt = torch.channels_last if cuda else torch.contiguous_format
    table = Table(title=f"fwd+bwd ms per batch of {batch}, {dtype}, {dev}", title_justify="left",
                  caption=torch.cuda.get_device_name(dev) if cuda else "CPU")
    for col in ("layer", "implementation", "ms"):
        table.add_column(col, justify="right" if col == "ms" else "left")
    rows = []

    def add(layer: str, impl: str, ms: float) -> None:
        rows.append({"layer": layer, "implementation": impl, "ms": ms})
        table.add_row(layer, impl, f"{ms:.3f}")
        print(f"  {layer} {impl}: {ms:.3f} ms", file=sys.stderr, flush=True)

    lrns = {"reference": lambda x: local_response_norm(x, *LRN_ARGS, 2),
            "fused": lambda x: local_response_norm_fused(x, *LRN_ARGS, 2),
            "torch": torch_lrn}
    if cuda and not args.no_compile:
        lrns["compiled"] = torch.compile(lambda x: local_response_norm(x, *LRN_ARGS, 2))
    if triton_available():
        lrns["triton"] = lambda x: lrn_triton(x, *LRN_ARGS, 2)
    for name, shape in (("lrn1", (batch, 96, 55, 55)), ("lrn2", (batch, 256, 27, 27))):
        x = (torch.randn(shape, device=dev) * 50).to(dtype).contiguous(memory_format=fmt)
        for impl, fn in lrns.items():
            add(name, impl, bench(fn, x, iters, args.warmup, args.repeats))

    for name, (cin, cout, k) in {"conv2": (96, 256, 5), "conv4": (384, 384, 3), "conv5": (384, 256, 3)}.items():
        size = 27 if name == "conv2" else 13
        x = torch.randn(batch, cin, size, size, device=dev).to(dtype).contiguous(memory_format=fmt)
        grouped = torch.nn.Conv2d(cin, cout, k, padding=k // 2, groups=2).to(dev, dtype).to(memory_format=fmt)
        dense = torch.nn.Conv2d(cin, cout, k, padding=k // 2).to(dev, dtype).to(memory_format=fmt)
        for impl, fn in (("groups=2", grouped), ("split", split_conv(grouped)), ("dense", dense)):
            add(name, impl, bench(fn, x, iters, args.warmup, args.repeats))
    Console(stderr=args.json).print(table)
    if args.json:
        print(json.dumps({"device": str(dev), "device_name": torch.cuda.get_device_name(dev) if cuda else "CPU",
                          "dtype": str(dtype), "batch": batch, "iters": iters, "unit": "ms fwd+bwd per batch",
                          "rows": rows}))


if __name__ == "__main__":
    main()
