"""Short binary codes of the fc7 features for fast retrieval: the paper's own suggestion (section
7.1: "it could be made efficient by training an auto-encoder to compress these vectors to short
binary codes", citing Krizhevsky & Hinton, ESANN 2011).

The auto-encoder (docs/codes.md says why each choice):

    encoder  x (D) -> Linear(D, H) -> ReLU -> Linear(H, bits) = logits z
    code     training: sigmoid(z + noise), noise ~ N(0, NOISE_STD^2) on every unit and step;
             after training: the bit z > 0 (= sigmoid(z) > 1/2)
    decoder  code (bits) -> Linear(bits, H) -> ReLU -> Linear(H, D) = reconstruction of x

x is the feature centred and divided by one scalar (its root mean square deviation). The loss
is the mean squared reconstruction error plus NEIGHBOURS x (1 - r), r the correlation over the
batch's pairs between the codes' expected Hamming distance and the features' Euclidean distance
(so that Hamming distance orders neighbours as the exact search does), minimised with Adam.
The noise is Krizhevsky & Hinton's (and Salakhutdinov & Hinton's semantic hashing) way to
make a logistic code layer binary: the decoder can only read through the noise what the
encoder says with a large |z|, so z is driven away from 0 and sigmoid(z) to 0 or 1, and
thresholding at 1/2 afterwards loses little. No RBM pre-training (theirs): with ReLU and Adam the two-layer encoder trains
directly, which keeps this small and fast.

Files, beside the features file FEAT.h5 (so keyed like it: weights + network config + data):

    FEAT.codes<bits>.pt   the training state after each finished epoch (save_checkpoint:
                          atomic); a killed `codes` resumes after the last finished epoch.
                          Removed once the codes file is complete (weights and Adam's state:
                          about 100 MB at 4096 features)
    FEAT.codes<bits>.h5   the codes: uint8 (N, bits/8), np.packbits of each row's bits (row i
                          = row i of FEAT.h5), written atomically when complete, with the
                          encoder (weights, centring: all that a search needs; the decoder
                          only trains it) and the measured quality
    .FEAT.codes<bits>.h5.lock   held while `codes` makes them (locks.CommandLock.beside), from
                          before it computes the features: a second `codes` fails at once;
                          removed when it lets go (a transient lock)

A `codes` killed while it saves leaves the temporary of that save (`.NAME.PID.tmp`, about
100 MB for the training state): the next `codes` of the same file and bits removes those of dead
writers once it holds the lock (`_codes_lock`), and no one else's files beside the features.

Training is deterministic for a seed: epoch e shuffles with (seed, e) and draws its noise
from a generator seeded with (seed, e), so resuming at an epoch gives the same weights as an
uninterrupted run.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np
import torch
from torch import nn

from alexnet_cli.atomic import remove_abandoned, write_atomic
from alexnet_cli.checkpoint import save_checkpoint
from alexnet_cli.config import CODE_BITS as BITS, CODE_EPOCHS as EPOCHS, CODE_RERANK as RERANK, SEED_MAX, check_seed
from alexnet_cli.errors import DataError, UsageError
from alexnet_cli.features import FeaturesInfo, non_finite_row, read_checked, read_features_info, read_rows
from alexnet_cli.hamming import hamming_nearest, pack_codes, rerank
from alexnet_cli.progress import NullReporter, Reporter, plural
from alexnet_cli.locks import CommandLock
from alexnet_cli.stopping import StopsAtOnce, stop_if_signalled

FORMAT = "alexnet-cli/codes"
VERSION = 1
HIDDEN = 1024                 # the hidden layers' width (4096 -> 1024 -> bits -> 1024 -> 4096)
NOISE_STD = 1.0               # std of the noise on the code logits in training (docs/codes.md: why 1)
NEIGHBOURS = 1.0              # weight of the neighbourhood term of the loss (docs/codes.md: why it is there)
LR = 3e-3
BATCH = 256
BLOCK_ROWS = 32768            # rows read at once in training and encoding (256 MiB of float16 at 4096)
QUERIES = 500                 # held-out rows that measure the codes' quality
KS = (6, 100)                 # recall@k and label precision@k: figure 4's six, and a hundred


# ---------------------------------------------------------------------------- the auto-encoder

class CodeNet(nn.Module):
    """The auto-encoder of the module doc; `mean` and `scale` centre and scale its input."""

    def __init__(self, dim: int, bits: int, hidden: int = HIDDEN):
        super().__init__()
        self.dim, self.bits, self.hidden = dim, bits, hidden
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, bits))
        self.decoder = nn.Sequential(nn.Linear(bits, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(()))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw features (B, D) -> code logits (B, bits)."""
        return self.encoder((x.float() - self.mean) / self.scale)

    def loss(self, x: torch.Tensor, generator: torch.Generator, neighbours: float = NEIGHBOURS) -> torch.Tensor:
        """Mean squared reconstruction error of the centred, scaled x through a noisy code, plus
        `neighbours` x (1 - the correlation, over the batch's pairs, of the codes' expected
        Hamming distance with the Euclidean distance of the features)."""
        z = self.logits(x)                                                 # (B, bits)
        noise = torch.randn(z.shape, generator=generator, device=z.device) * NOISE_STD
        target = (x.float() - self.mean) / self.scale                      # (B, D)
        loss = (self.decoder(torch.sigmoid(z + noise)) - target).square().mean()
        if neighbours and len(x) > 2:
            loss = loss + neighbours * (1 - _pair_correlation(torch.sigmoid(z), target))
        return loss

    @torch.no_grad()
    def code(self, x: torch.Tensor) -> np.ndarray:
        """Raw features (B, D) -> packed codes uint8 (B, bits/8)."""
        return pack_codes(self.logits(x) > 0)


def _pair_correlation(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Pearson correlation over the pairs i != j of a batch between the expected Hamming
    distance of bits drawn with probabilities p (B, bits) and the Euclidean distance of x (B, D).
    Scale-free: the codes need only order the pairs as the features do, at any scale."""
    ham = p @ (1 - p).T + (1 - p) @ p.T                                    # (B, B): sum_j P(bit j differs)
    dist = torch.cdist(x, x)                                               # (B, B)
    off = ~torch.eye(len(p), dtype=torch.bool, device=p.device)
    a, b = ham[off], dist[off]
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / (a.norm() * b.norm() + 1e-12)


def random_projections(dim: int, bits: int, seed: int) -> torch.Tensor:
    """The baseline's (dim, bits) Gaussian projection: code = sign((x - mean) @ P)."""
    return torch.randn(dim, bits, generator=torch.Generator().manual_seed(seed + 7919))


# ---------------------------------------------------------------------------- files

def codes_path(features: str | Path, bits: int) -> Path:
    features = Path(features)
    return features.with_name(f"{features.stem}.codes{bits}.h5")


def state_path(features: str | Path, bits: int) -> Path:
    features = Path(features)
    return features.with_name(f"{features.stem}.codes{bits}.pt")


@dataclass
class CodesInfo:
    """What a codes file holds, from its attributes."""

    path: Path
    bits: int
    count: int
    features_key: str        # the network's key (features.model_key): which network's features
    data_key: str            # which shards
    split: str
    epochs: int
    settings: dict[str, Any]
    quality: dict[str, Any] = field(default_factory=dict)

    def fits(self, features: FeaturesInfo) -> str:
        """Why these are not the codes of `features` ("" if they are)."""
        if (self.features_key, self.data_key, self.split, self.count) != (features.key, features.data_key,
                                                                           features.split, features.count):
            return (f"{self.path}: the codes of other features (network {self.features_key}, split '{self.split}', "
                    f"{self.count} images; the features are network {features.key}, split '{features.split}', "
                    f"{features.count} images): run `alexnet codes` again")
        return ""


def read_codes_info(path: str | Path) -> CodesInfo:
    def read(f: h5py.File) -> CodesInfo:
        a = f.attrs
        info = CodesInfo(Path(path), int(a["bits"]), int(a["count"]), str(a["features_key"]), str(a["data_key"]),
                         str(a["split"]), int(a["epochs"]), json.loads(a["settings"]), json.loads(a["quality"]))
        if f["codes"].shape != (info.count, info.bits // 8) or f["codes"].dtype != np.uint8:
            raise DataError(f"{path}: codes of shape {f['codes'].shape}, attributes say ({info.count}, "
                            f"{info.bits // 8}) bytes")
        return info
    return read_checked(path, kind="codes", fmt=FORMAT, dataset="codes", version=VERSION, command="alexnet codes",
                        read=read)


def read_codes(path: str | Path) -> tuple[np.ndarray, CodeNet]:
    """The packed codes (N, bits/8) and the encoder that made them (on the CPU; its decoder,
    which files keep no more, is untrained: only `code` may be used)."""
    info = read_codes_info(path)
    with h5py.File(path, "r", locking=False) as f:
        codes = f["codes"][:]
        state = {name: torch.from_numpy(np.asarray(f["encoder"][name][()])) for name in f["encoder"]}
    s = info.settings
    net = CodeNet(int(s["dim"]), info.bits, int(s["hidden"]))
    try:                       # files before session 7 hold the decoder too: loaded, unused
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [name for name in missing if not name.startswith("decoder.")]
        if missing or unexpected:
            raise RuntimeError(f"missing {missing}, unexpected {unexpected}")
    except RuntimeError as exc:
        raise DataError(f"{path}: its encoder does not fit its settings ({str(exc).splitlines()[0]})") from None
    return codes, net.eval()


def encoder_state(net: CodeNet) -> dict[str, torch.Tensor]:
    """What a codes file keeps of the auto-encoder: the encoder and its input's centring."""
    return {name: t for name, t in net.state_dict().items() if not name.startswith("decoder.")}


def _write_codes(path: Path, codes: np.ndarray, net: CodeNet, *, features: FeaturesInfo, epochs: int,
                 settings: dict[str, Any], quality: dict[str, Any]) -> None:
    """The codes file, built in memory and written atomically: the codes (41 MB for 1.28 M x 256
    bits) and the encoder that makes a query's code (17 MB at 4096 x 1024; not the decoder)."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("codes", data=codes, chunks=(max(1, min(len(codes), 65536)), codes.shape[1]) if len(codes)
                         else None, track_times=False)
        g = f.create_group("encoder")
        for name, tensor in encoder_state(net).items():
            g.create_dataset(name, data=tensor.detach().cpu().numpy(), track_times=False)
        f.attrs.update({"format": FORMAT, "version": VERSION, "bits": net.bits, "count": len(codes),
                        "features_key": features.key, "data_key": features.data_key, "split": features.split,
                        "epochs": epochs, "settings": json.dumps(settings, sort_keys=True),
                        "quality": json.dumps(quality, allow_nan=False), "features": features.path.name})
    write_atomic(path, buf.getvalue())


# ---------------------------------------------------------------------------- training

def _blocks(features: str | Path, order: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(start, float16 rows) of the features file, BLOCK_ROWS at a time, blocks in `order`."""
    with h5py.File(features, "r", locking=False) as f:
        ds = f["features"]
        for b in order:
            start = int(b) * BLOCK_ROWS
            yield start, ds[start:start + BLOCK_ROWS]


def held_out(count: int, seed: int, queries: int = QUERIES) -> np.ndarray:
    """The rows kept out of training to measure the codes (sorted): min(queries, count / 10)."""
    n = min(queries, count // 10)
    return np.sort(np.random.default_rng(seed).choice(count, n, replace=False)) if n else np.zeros(0, np.int64)


def _centre(features: str | Path, info: FeaturesInfo, train: np.ndarray, progress: Reporter) -> tuple[torch.Tensor, float]:
    """The mean feature and the root mean square deviation from it, over the training rows;
    the first pass over every row, so it refuses a row that is not finite (the training rows'
    sums of squares tell, the few held-out rows are looked at)."""
    s = np.zeros(info.dim, np.float64)
    ss = 0.0
    with progress.task("codes: centring", total=info.count, unit="img") as task:
        for start, rows in _blocks(features, np.arange(math.ceil(info.count / BLOCK_ROWS))):
            keep = train[start:start + len(rows)]
            x = rows[keep].astype(np.float64)                            # (b, D)
            squares = np.einsum("ij,ij->i", x, x)     # (b,): not finite iff the row is not (float16 squares stay small)
            bad = np.zeros(len(rows), bool)
            bad[keep] = ~np.isfinite(squares)
            bad[~keep] = ~np.isfinite(rows[~keep]).all(axis=1)
            if bad.any():
                raise non_finite_row(features, start + int(bad.argmax()))
            s += x.sum(axis=0)
            ss += float(squares.sum())
            task.advance(len(rows))
    n = int(train.sum())
    mean = s / n
    var = max(ss / (n * info.dim) - float(np.square(mean).mean()), 1e-12)
    return torch.from_numpy(mean.astype(np.float32)), math.sqrt(var)


def _mix(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch`'s noise: within torch's 64 bits for any seed (SEED_MAX), the
    same number as before the mask for every seed below 2^32 (codes made then are unchanged)."""
    return (seed * 1_000_003 + epoch) & SEED_MAX


def _epoch(net: CodeNet, opt: torch.optim.Optimizer, features: str | Path, info: FeaturesInfo, train: np.ndarray,
           seed: int, epoch: int, batch_size: int, neighbours: float, device: torch.device, task) -> float:
    """One pass over the training rows in an order fixed by (seed, epoch); the mean loss."""
    rng = np.random.default_rng([seed, epoch])
    gen = torch.Generator(device=device).manual_seed(_mix(seed, epoch))
    total, count = 0.0, 0
    net.train()
    for start, rows in _blocks(features, rng.permutation(math.ceil(info.count / BLOCK_ROWS))):
        order = rng.permutation(np.flatnonzero(train[start:start + len(rows)]))
        x = torch.from_numpy(rows[order]).to(device)                                  # (b, D) float16
        for i in range(0, len(x), batch_size):
            batch = x[i:i + batch_size]
            loss = net.loss(batch, gen, neighbours)
            value = loss.item()                                    # the step's host sync, before the update
            if not math.isfinite(value):
                raise _not_finite_loss(info.path, batch, start + order[i:i + batch_size])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += value * len(batch)
            count += len(batch)
        task.advance(len(rows))
    return total / max(1, count)


def _not_finite_loss(features: str | Path, batch: torch.Tensor, rows: np.ndarray) -> DataError:
    """Why a step's loss is not finite: a row of the batch (`rows`: their rows in the file)
    that is not (a training resumed from a state, which skipped the centring pass that checks
    them), else a training that diverged."""
    bad = (~torch.isfinite(batch).all(dim=1)).cpu().numpy()
    if bad.any():
        return non_finite_row(features, int(rows[bad].min()))
    return DataError(f"{features}: the auto-encoder's loss is not finite: its training diverged")


def _encode_all(net: CodeNet, features: str | Path, info: FeaturesInfo, proj: torch.Tensor, device: torch.device,
                progress: Reporter) -> tuple[np.ndarray, np.ndarray]:
    """The learned codes and the random-projection codes of every row, packed."""
    learned, random = [], []
    net.eval()
    proj = proj.to(device)
    with torch.no_grad(), progress.task("codes: encoding", total=info.count, unit="img") as task:
        for start, rows in _blocks(features, np.arange(math.ceil(info.count / BLOCK_ROWS))):
            for i in range(0, len(rows), 8192):
                x = torch.from_numpy(rows[i:i + 8192]).to(device).float()        # (b, D)
                projected = (x - net.mean) @ proj                                # (b, bits)
                # a NaN or an infinity in a row makes its projection NaN or infinite (no column
                # of the Gaussian projection is all zeros): a code the search would return
                # is never made of one
                finite = torch.isfinite(projected).all(dim=1)
                if not bool(finite.all()):                                       # a host sync, as packing's
                    raise non_finite_row(features, start + i + int((~finite).nonzero()[0, 0]))
                learned.append(net.code(x))
                random.append(pack_codes(projected > 0))
            task.advance(len(rows))
    empty = np.zeros((0, net.bits // 8), np.uint8)
    return (np.concatenate(learned) if learned else empty), (np.concatenate(random) if random else empty)


# ---------------------------------------------------------------------------- quality

def rerank_candidates(rerank_depth: int, count: int) -> int:
    """How many codes `measure` re-ranks for each query: `rerank_depth`, at most the count - 1
    others (the query excluded), at least the largest k measured."""
    return max(min(max(KS), count - 1), min(rerank_depth, count - 1))


def measure(features: str | Path, info: FeaturesInfo, queries: np.ndarray, codes: dict[str, np.ndarray], *,
            rerank_depth: int, device: torch.device, progress: Reporter = NullReporter()) -> dict[str, Any]:
    """recall@k of the exact Euclidean neighbours and label precision@k of each kind of codes,
    ranked by Hamming distance alone and re-ranked exactly from the `rerank_depth` nearest,
    for the held-out `queries` (rows of the file, each excluding itself)."""
    from alexnet_cli.neighbors import nearest                     # neighbors imports this module

    kmax = min(max(KS), info.count - 1)
    q_feats = torch.from_numpy(read_rows(features, queries)).to(device)                 # (Q, D)
    _, exact = nearest(q_feats, features, kmax + 1, progress=progress)                  # (Q, kmax + 1)
    exact = np.stack([row[row != q][:kmax] for row, q in zip(exact, queries)])          # itself dropped
    with h5py.File(features, "r", locking=False) as f:
        labels = f["labels"][:]
    qlab = labels[queries][:, None]
    ks = [k for k in KS if k <= kmax] or [kmax]

    def scores(found: np.ndarray) -> dict[str, float]:
        out = {}
        for k in ks:
            hits = [len(np.intersect1d(f[:k], e[:k])) for f, e in zip(found, exact)]
            out[f"recall@{k}"] = float(np.mean(hits)) / k
            out[f"precision@{k}"] = float((labels[found[:, :k]] == qlab).mean())
        return out

    result: dict[str, Any] = {"queries": int(len(queries)), "rerank": int(rerank_depth), "ks": ks,
                              "exact": {f"precision@{k}": float((labels[exact[:, :k]] == qlab).mean()) for k in ks}}
    depth = rerank_candidates(rerank_depth, info.count)
    for name, c in codes.items():
        _, cand = hamming_nearest(c[queries], c, depth, exclude=queries, device=device)
        plain = scores(cand[:, :kmax])
        _, reranked = rerank(q_feats, features, cand, kmax)
        result[name] = {**plain, **{f"{m}_rerank": v for m, v in scores(reranked).items()}}
    return result


# ---------------------------------------------------------------------------- the command

@dataclass
class CodesResult:
    """What make_codes made or kept. `state`: where the training state is kept while training;
    removed once `codes` is complete."""

    codes: Path
    state: Path
    bits: int
    count: int
    epochs: int
    loss: float | None
    quality: dict[str, Any]
    reused: bool

    def to_json(self) -> dict[str, Any]:
        return {"codes": str(self.codes), "bits": self.bits, "count": self.count,
                "epochs": self.epochs, "loss": self.loss, "bytes_per_image": self.bits // 8, "quality": self.quality,
                "reused": self.reused}


def check_bits(bits: int) -> None:
    """The one rule for the length of the codes, in make_codes, codes_for_split, find_neighbors
    and the CLI's --bits: one of BITS (section 7.1's short codes; packed in 64-bit words)."""
    if isinstance(bits, bool) or bits not in BITS:
        raise UsageError(f"bits must be one of {', '.join(map(str, BITS))}, got {bits}", field="bits", value=bits)


def make_codes(features: str | Path, *, bits: int = 256, epochs: int = EPOCHS, seed: int = 0, hidden: int = HIDDEN,
               batch_size: int = BATCH, rerank_depth: int = RERANK, queries: int = QUERIES,
               neighbours: float = NEIGHBOURS, device: str | torch.device = "cpu",
               progress: Reporter = NullReporter()) -> CodesResult:
    """Train the auto-encoder on a complete features file, write the codes of every row beside
    it and measure them against random projections (see the module doc). A codes file made
    with the same settings and epochs is kept; a training state with the same settings
    continues after its last finished epoch (also towards more epochs). The codes are locked
    while it runs: a second `make_codes` of them fails at once."""
    _check_arguments(bits=bits, epochs=epochs, batch_size=batch_size, rerank_depth=rerank_depth, seed=seed,
                     neighbours=neighbours)
    with _codes_lock(features, bits):
        _remove_abandoned(features, bits)
        return _make_codes(Path(features), bits=bits, epochs=epochs, seed=seed, hidden=hidden, batch_size=batch_size,
                           rerank_depth=rerank_depth, queries=queries, neighbours=neighbours,
                           device=torch.device(device), progress=progress)


def _codes_lock(features: str | Path, bits: int) -> CommandLock:
    """The lock of the codes of `features` (the codes file and its training state); taking it
    is an AlexnetError naming the codes and the process when another one holds it."""
    return CommandLock.beside(codes_path(features, bits), "codes")


def _remove_abandoned(features: str | Path, bits: int) -> None:
    """Delete the temporaries that killed `codes` runs left of the codes of `features` and of
    their training state (atomic.remove_abandoned: a live writer's are kept); only those two
    files', as other files of the user's may lie beside the features."""
    for path in (codes_path(features, bits), state_path(features, bits)):
        remove_abandoned(path.parent, path.name)


def _make_codes(features: Path, *, bits: int, epochs: int, seed: int, hidden: int, batch_size: int,
                rerank_depth: int, queries: int, neighbours: float, device: torch.device,
                progress: Reporter) -> CodesResult:
    """make_codes once its arguments are checked and the codes locked."""
    info, held = _features_to_code(features, seed, queries)
    settings = {"features_key": info.key, "data_key": info.data_key, "split": info.split, "count": info.count,
                "dim": info.dim, "bits": bits, "hidden": hidden, "seed": seed, "noise_std": NOISE_STD, "lr": LR,
                "neighbours": float(neighbours), "batch_size": batch_size, "queries": int(len(held)),
                "version": VERSION}                                        # what the weights depend on
    out, state_file = codes_path(features, bits), state_path(features, bits)
    with StopsAtOnce(lambda: _saved_training(out, state_file, epochs)):     # Ctrl-C, SIGTERM: the epochs saved are kept
        kept = _existing_codes(out, state_file, info, held, bits=bits, epochs=epochs, settings=settings,
                               rerank_depth=rerank_depth, device=device, progress=progress)
        if kept is not None:
            return kept
        train = np.ones(info.count, bool)
        train[held] = False
        net, opt, start, loss = _resume_or_start(state_file, info, train, bits=bits, hidden=hidden, seed=seed,
                                                 epochs=epochs, settings=settings, device=device, progress=progress)
        loss = _train_epochs(net, opt, info, train, state_file, start=start, epochs=epochs, loss=loss, seed=seed,
                             batch_size=batch_size, neighbours=neighbours, settings=settings, device=device,
                             progress=progress)
        return _finish(out, state_file, None, net, info, held, epochs, loss, settings, rerank_depth, device, progress)


def _check_arguments(*, bits: int, epochs: int, batch_size: int, rerank_depth: int, seed: int,
                     neighbours: float) -> None:
    """make_codes' arguments, each checked before any work (`UsageError` naming the setting)."""
    check_bits(bits)
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("rerank_depth", rerank_depth)):
        if value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}", field=name, value=value)
    check_seed(seed)
    if not 0 <= neighbours < math.inf:
        raise UsageError(f"the neighbourhood weight must be finite and >= 0, got {neighbours}")


def _features_to_code(features: Path, seed: int, queries: int) -> tuple[FeaturesInfo, np.ndarray]:
    """The features file's description and its held-out query rows, once the file is known to
    be complete and to leave at least two rows to train on."""
    info = read_features_info(features)
    if not info.complete:
        raise DataError(f"{features}: incomplete ({info.done} of {info.count} rows): rerun `alexnet features`")
    held = held_out(info.count, seed, queries)
    if info.count < 2 or info.count - len(held) < 2:
        raise DataError(f"{features}: {info.count} images are too few to train codes on")
    return info, held


def _existing_codes(out: Path, state_file: Path, info: FeaturesInfo, held: np.ndarray, *, bits: int, epochs: int,
                    settings: dict[str, Any], rerank_depth: int, device: torch.device,
                    progress: Reporter) -> CodesResult | None:
    """The codes file made before with the same settings and epochs: kept as it is, or measured
    again at another re-ranking depth. None when there is none to keep (an unreadable one is
    logged and made again)."""
    if not out.exists():
        return None
    try:
        done = read_codes_info(out)
        if done.settings != settings or done.epochs != epochs:
            return None
        state_file.unlink(missing_ok=True)   # left by a kill between writing the codes and this
        if done.quality.get("rerank", rerank_depth) == rerank_depth:
            return CodesResult(out, state_file, bits, info.count, epochs, done.quality.get("loss"), done.quality,
                               True)
        progress.log(f"codes: {out} is trained ({plural(epochs, 'epoch')}): measuring again")
        learned, net = read_codes(out)
        return _finish(out, state_file, learned, net.to(device), info, held, epochs, done.quality.get("loss"),
                       settings, rerank_depth, device, progress)
    except DataError as exc:
        progress.log(f"making the codes again: {exc}")
        return None


def _resume_or_start(state_file: Path, info: FeaturesInfo, train: np.ndarray, *, bits: int, hidden: int, seed: int,
                     epochs: int, settings: dict[str, Any], device: torch.device,
                     progress: Reporter) -> tuple[CodeNet, torch.optim.Optimizer, int, float | None]:
    """The auto-encoder on `device`, its optimizer, the epochs already trained and the last
    one's loss: from the training state when it has these settings and at most `epochs`
    epochs; otherwise initialised from `seed`, centred on the training rows, at epoch 0."""
    saved = _load_state(state_file, settings, progress)
    if saved is not None and saved["epoch"] <= epochs:
        net = CodeNet(info.dim, bits, hidden)
        net.load_state_dict(saved["model"])
        net.to(device)
        opt = torch.optim.Adam(net.parameters(), lr=LR)
        opt.load_state_dict(saved["optimizer"])
        start = int(saved["epoch"])
        if start == epochs:
            progress.log(f"codes: {state_file} is trained ({plural(epochs, 'epoch')}): encoding and measuring again")
        elif start:
            progress.log(f"codes: resuming after epoch {start} of {epochs} ({state_file})")
        return net, opt, start, saved.get("loss")
    if saved is not None:
        progress.log(f"codes: starting afresh: {state_file} has {plural(saved['epoch'], 'epoch')}, more than "
                     f"`epochs` {epochs}", mentions=("epochs",))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = CodeNet(info.dim, bits, hidden)
    mean, scale = _centre(info.path, info, train, progress)
    net.mean.copy_(mean)
    net.scale.fill_(scale)
    net.to(device)
    return net, torch.optim.Adam(net.parameters(), lr=LR), 0, None


def _train_epochs(net: CodeNet, opt: torch.optim.Optimizer, info: FeaturesInfo, train: np.ndarray, state_file: Path,
                  *, start: int, epochs: int, loss: float | None, seed: int, batch_size: int, neighbours: float,
                  settings: dict[str, Any], device: torch.device, progress: Reporter) -> float | None:
    """Epochs start..epochs, the training state saved (atomically) after each, so that a stop
    or a kill keeps every finished epoch; the last epoch's mean loss (`loss` if none is left)."""
    with progress.task("codes: training", total=(epochs - start) * info.count, unit="img") as task:
        for epoch in range(start, epochs):
            stop_if_signalled()                    # a signal Python swallowed stops here
            loss = _epoch(net, opt, info.path, info, train, seed, epoch, batch_size, neighbours, device, task)
            save_checkpoint(state_file, {"codes": {"settings": settings, "epoch": epoch + 1, "loss": loss,
                                                   "model": {k: v.cpu() for k, v in net.state_dict().items()},
                                                   "optimizer": opt.state_dict()}})
            progress.log(f"codes: epoch {epoch + 1}/{epochs}, loss {loss:.4f} (reconstruction + neighbourhood term)")
    return loss


def _finish(out: Path, state_file: Path, learned: np.ndarray | None, net: CodeNet, info: FeaturesInfo,
            held: np.ndarray, epochs: int, loss: float | None, settings: dict[str, Any], rerank_depth: int,
            device: torch.device, progress: Reporter) -> CodesResult:
    """Encode every row (or keep the `learned` codes of an earlier file), measure the codes
    against random projections, write the codes file and remove the training state."""
    proj = random_projections(info.dim, net.bits, int(settings["seed"]))
    encoded, random = _encode_all(net, info.path, info, proj, device, progress)
    learned = encoded if learned is None else learned
    quality = measure(info.path, info, held, {"autoencoder": learned, "random_projections": random},
                      rerank_depth=rerank_depth, device=device, progress=progress) if len(held) else {}
    quality["loss"] = loss
    _write_codes(out, learned, net.cpu(), features=info, epochs=epochs, settings=settings, quality=quality)
    state_file.unlink(missing_ok=True)         # the codes are complete (written atomically): nothing to resume
    return CodesResult(out, state_file, net.bits, info.count, epochs, loss, quality, False)


def _saved_training(out: Path, state_file: Path, epochs: int) -> str:
    """What a stopped `make_codes` kept (stopping.StopsAtOnce): the epochs in its training state."""
    try:
        done = int(torch.load(state_file, map_location="cpu", weights_only=True)["codes"]["epoch"])
    except Exception:                  # noqa: BLE001 - none yet, or not one
        return (f"the codes in {out} are kept as they were" if out.exists() else
                "no epoch of the auto-encoder's training was finished yet")
    return f"the auto-encoder's training after epoch {done} of {epochs} is kept in {state_file}"


def _load_state(path: Path, settings: dict[str, Any], progress: Reporter) -> dict[str, Any] | None:
    """The training state saved after an epoch, if it was trained with `settings`."""
    if not path.exists():
        return None
    try:      # not load_checkpoint, which wants AlexNet's weights; weights_only=True as everywhere
        state = torch.load(path, map_location="cpu", weights_only=True)["codes"]
        if not isinstance(state, dict) or {"settings", "epoch", "model", "optimizer"} - set(state):
            raise KeyError("codes")
    except Exception as exc:     # noqa: BLE001 - any unreadable state is only a lost head start
        progress.log(f"codes: starting afresh: {path} is not a codes training state "
                     f"({' '.join(str(exc).split())[:200] or type(exc).__name__})")
        return None
    if state["settings"] != settings:
        progress.log(f"codes: starting afresh: {path} was trained with other settings or features")
        return None
    return state


def codes_for_split(checkpoint: str | Path, data_dir: str | Path, *, split: str = "train", bits: int = 256,
                    epochs: int = EPOCHS, features: str | Path | None = None, rerank_depth: int = RERANK,
                    seed: int = 0, batch_size: int = 128, workers: int | None = None, decode: str | None = None,
                    device: str | torch.device | None = None, progress: Reporter = NullReporter()) -> CodesResult:
    """What `alexnet codes` does: the split's features (checked, or computed and cached as
    `neighbors` does), then make_codes beside them; the codes are locked before the features are
    made, so that a second `alexnet codes` of them fails at once."""
    from alexnet_cli.devices import resolve_device
    from alexnet_cli.features import cache_path, load_encoder
    from alexnet_cli.neighbors import split_features

    _check_arguments(bits=bits, epochs=epochs, batch_size=BATCH, rerank_depth=rerank_depth, seed=seed,
                     neighbours=NEIGHBOURS)
    made: list[Path] = []                   # the features file, once it is complete
    kept = lambda: f"the features are complete in {made[0]}" if made else "nothing new was saved yet"   # noqa: E731
    lock = None
    try:
        # computing the features (which say what they kept) and codes stop on their own
        with StopsAtOnce(kept):
            encoder = load_encoder(checkpoint, data_dir, device, progress)
            target = cache_path(data_dir, split, encoder.key) if features is None else features
            lock = _codes_lock(target, bits)
            lock.acquire()
            _remove_abandoned(target, bits)
            path = split_features(encoder, Path(data_dir), split, features, batch_size=batch_size, workers=workers,
                                  decode=decode, progress=progress)
            made.append(path)
        return _make_codes(path, bits=bits, epochs=epochs, seed=seed, hidden=HIDDEN, batch_size=BATCH,
                           rerank_depth=rerank_depth, queries=QUERIES, neighbours=NEIGHBOURS,
                           device=resolve_device(device), progress=progress)
    finally:
        if lock is not None:
            lock.release()
