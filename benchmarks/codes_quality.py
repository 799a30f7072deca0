"""The quality table of docs/codes.md: learned codes (`alexnet codes`, alexnet_cli.codes.make_codes)
against random projections at the same number of bits, on generated clustered features.

Each row is make_codes on a features file of generated rows, with the held-out queries, the
baseline and the measures that `alexnet codes` prints (recall@k of the exact Euclidean
neighbours, label precision@k, each without and with re-ranking). Two generators:

    clusters      the set of tests/test_codes.py: 10 clusters in a 16-d latent space with
                  isotropic Gaussian noise around each centre, lifted to 64 non-negative
                  dimensions (like fc7 after its ReLU) plus noise
    subclusters   the same, but each cluster is 8 sub-clusters (a class made of several
                  kinds of picture, as we expect of a real network's fc7): structure
                  within a label

    python benchmarks/codes_quality.py                          # both, 64 and 256 bits (minutes)
    python benchmarks/codes_quality.py --neighbours 0           # the loss without its neighbourhood term
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch

from alexnet_cli.codes import make_codes
from alexnet_cli.features import create_features_file


def clusters(n: int = 1000, dim: int = 64, classes: int = 10, latent: int = 16, sub: int = 1,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float16 (n, dim) non-negative rows and their labels. sub = 1: tests/test_codes.py's
    _clusters, row for row; sub > 1: each class's points gather around `sub` sub-centres
    (spread 1 around the class centre, points spread 0.5 around their sub-centre)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, latent)) * 2
    labels = rng.integers(0, classes, n)
    if sub == 1:
        z = centres[labels] + rng.standard_normal((n, latent))
    else:
        subs = centres[:, None] + rng.standard_normal((classes, sub, latent))
        z = subs[labels, rng.integers(0, sub, n)] + 0.5 * rng.standard_normal((n, latent))
    lift = rng.standard_normal((latent, dim)) / np.sqrt(latent)
    x = np.maximum(z @ lift, 0) + 0.3 * np.abs(rng.standard_normal((n, dim)))
    return x.astype(np.float16), labels


def write_features(path: Path, rows: np.ndarray, labels: np.ndarray) -> None:
    n, dim = rows.shape
    names = [str(c) for c in range(int(labels.max()) + 1)]
    create_features_file(path, paths=[f"img{i}.png" for i in range(n)], labels=labels, classes=names,
                         class_names=names, split="train", key="generated", data="generated", dim=dim)
    with h5py.File(path, "r+") as f:
        f["features"][:] = rows
        f.attrs["done"] = n


MEASURES = ("recall@6", "recall@100", "precision@6", "precision@100", "recall@6_rerank", "recall@100_rerank",
            "precision@100_rerank")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="clusters,subclusters")
    parser.add_argument("--bits", default="64,256")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--neighbours", type=float, default=1.0, help="weight of the loss's neighbourhood term")
    parser.add_argument("--rerank", type=int, default=200, help="re-ranking depth")
    parser.add_argument("--queries", type=int, default=100, help="held-out queries per run")
    parser.add_argument("--seeds", default="0",
                        help="comma-separated seeds: each draws its own data, queries, baseline and training; "
                             "with several, each measure is the mean (and the table adds the range)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    args = parser.parse_args()
    seeds = [int(x) for x in args.seeds.split(",")]
    torch.set_num_threads(1)                  # tiny networks: one thread is fastest and deterministic
    print(f"epochs {args.epochs}, hidden {args.hidden}, neighbourhood weight {args.neighbours}, batches of 32, "
          f"1,000 points, {args.queries} held-out queries, seeds {args.seeds}, re-ranked: the {args.rerank} "
          "nearest by Hamming distance")
    print(f"{'data':<12} {'codes':<19} {'bits':>4} " + " ".join(f"{m.replace('_rerank', ' rr'):>12}" for m in MEASURES))
    rows_out = []
    with tempfile.TemporaryDirectory(prefix="alexnet-codes-") as tmp:
        for data in args.data.split(","):
            for bits in map(int, args.bits.split(",")):
                runs: dict[str, list[dict]] = {"autoencoder": [], "random_projections": [], "exact": []}
                for seed in seeds:
                    rows, labels = clusters(sub=8 if data == "subclusters" else 1, seed=seed)
                    path = Path(tmp) / f"{data}{bits}-{seed}" / "f.h5"
                    path.parent.mkdir()
                    write_features(path, rows, labels)
                    q = make_codes(path, bits=bits, epochs=args.epochs, hidden=args.hidden, batch_size=32, seed=seed,
                                   queries=args.queries, rerank_depth=args.rerank, neighbours=args.neighbours).quality
                    for name in runs:
                        m = q[name] if name != "exact" else {**q["exact"], **{f"recall@{k}": 1.0 for k in q["ks"]}}
                        runs[name].append({k: m.get(k, m.get(k.replace("_rerank", ""))) for k in MEASURES})
                for name, measured in runs.items():
                    mean = {k: float(np.mean([m[k] for m in measured])) for k in MEASURES}
                    spread = {k: [min(m[k] for m in measured), max(m[k] for m in measured)] for k in MEASURES}
                    rows_out.append({"data": data, "codes": name, "bits": bits, "seeds": seeds, **mean,
                                     "range": spread})
                    print(f"{data:<12} {name.replace('_', ' '):<19} {bits:>4} "
                          + " ".join(f"{mean[k]:>12.3f}" for k in MEASURES), flush=True)
                    if len(seeds) > 1:
                        print(f"{'':<12} {'  range':<19} {'':>4} "
                              + " ".join(f"{f'{lo:.3f}-{hi:.3f}':>12}" for lo, hi in spread.values()), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "rows": rows_out},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
