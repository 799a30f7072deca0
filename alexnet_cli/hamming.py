"""Binary codes packed in bytes and searched by Hamming distance (the search behind `alexnet
neighbors --codes`, over the codes `alexnet codes` makes: alexnet_cli/codes.py), and the exact
re-ranking of a search's candidates by the stored fc7 features.

- `pack_codes` / `unpack_codes`: bool (N, bits) <-> uint8 (N, bits/8), np.packbits' layout.
- `hamming_nearest`: the k nearest codes of each query, ties in row order. On the CPU, numpy's
  popcount instruction over cache-sized chunks, one thread per group of queries (numpy releases
  the GIL); on a GPU, a SWAR popcount over 64-bit words in chunks within a memory budget.
- `rerank`: the k of each query's candidates nearest by exact Euclidean distance.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from alexnet_cli.errors import UsageError
from alexnet_cli.features import read_rows


def pack_codes(bits: np.ndarray | torch.Tensor) -> np.ndarray:
    """bool (N, B) -> uint8 (N, B/8), np.packbits (first bit = the highest bit of byte 0)."""
    if isinstance(bits, torch.Tensor):
        bits = bits.cpu().numpy()
    return np.packbits(np.asarray(bits, dtype=bool), axis=1)


def unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    """uint8 (N, B/8) -> bool (N, B)."""
    return np.unpackbits(packed, axis=1, count=bits).astype(bool)


def _words(packed: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, B/8) with B a multiple of 64 -> int64 (N, B/64) on `device`."""
    if isinstance(packed, torch.Tensor):
        packed = packed.cpu().numpy()
    packed = np.ascontiguousarray(packed)
    if packed.shape[1] % 8:
        raise UsageError(f"codes of {8 * packed.shape[1]} bits: the number of bits must be a multiple of 64")
    return torch.from_numpy(packed.view(np.int64)).to(device)


_M1, _M2, _M4, _H01 = 0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F, 0x0101010101010101


def _popcount(x: torch.Tensor) -> torch.Tensor:
    """Bits set in each int64 (SWAR; torch has no popcount). The masks clear what the
    arithmetic right shift brings in, and the top byte of the product is at most 64."""
    x = x - ((x >> 1) & _M1)
    x = (x & _M2) + ((x >> 2) & _M2)
    x = (x + (x >> 4)) & _M4
    return (x * _H01) >> 56


def hamming(queries: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Hamming distances int64 (Q, C) between int64 words (Q, W) and (C, W) on one device;
    one word at a time, so the temporaries are (Q, C)."""
    if queries.device.type == "cpu":              # numpy's popcount instruction: several times the SWAR's speed
        q, c = queries.numpy().view(np.uint64), codes.numpy().view(np.uint64)
        out = np.zeros((len(q), len(c)), np.uint8 if q.shape[1] <= 3 else np.uint16)
        for w in range(q.shape[1]):
            out += np.bitwise_count(q[:, w, None] ^ c[None, :, w])
        return torch.from_numpy(out.astype(np.int64))
    out = torch.zeros((len(queries), len(codes)), dtype=torch.int64, device=queries.device)
    for w in range(queries.shape[1]):
        out += _popcount(queries[:, w, None] ^ codes[None, :, w])
    return out


def hamming_nearest(queries: np.ndarray, codes: np.ndarray, k: int, *, exclude: Sequence[int] | None = None,
                    device: torch.device | str = "cpu", memory_mb: float = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The k rows of `codes` (uint8 (N, B/8)) nearest to each of `queries` (uint8 (Q, B/8)) by
    Hamming distance: distances (Q, k) int64 and rows (Q, k) int64, nearest first, equal
    distances in row order. `exclude[i]`: a row query i must not get (itself, when the queries
    are rows of the collection). On the CPU in cache-sized chunks (_nearest_cpu); on a GPU in
    chunks within `memory_mb`."""
    n = len(codes)
    k = min(k, n - (exclude is not None))
    if k <= 0 or not len(queries):
        return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.int64)
    if torch.device(device).type == "cpu":           # numpy releases the GIL: one group of queries per core
        groups = np.array_split(np.arange(len(queries)), max(1, min(torch.get_num_threads(), len(queries))))
        if len(groups) == 1:
            return _nearest_cpu(queries, codes, k, exclude)
        ex = None if exclude is None else np.asarray(exclude, np.int64)
        with ThreadPoolExecutor(len(groups)) as pool:
            parts = list(pool.map(lambda g: _nearest_cpu(queries[g], codes, k, None if ex is None else ex[g]),
                                  groups))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    q = _words(queries, device)                                            # (Q, W)
    ex = None if exclude is None else torch.as_tensor(np.asarray(exclude, np.int64), device=device)[:, None]
    best = torch.full((len(q), 0), 0, dtype=torch.int64, device=device)    # keys: distance << 32 | row
    rows = max(k, int(memory_mb * 2**20) // max(1, len(q) * 8 * 4 + 8 * q.shape[1]))
    for start in range(0, n, rows):
        c = _words(codes[start:start + rows], device)                      # (C, W)
        key = (hamming(q, c) << 32) | torch.arange(start, start + len(c), device=device)   # (Q, C) unique keys
        if ex is not None:
            key = torch.where(key & 0xFFFFFFFF == ex, torch.iinfo(torch.int64).max, key)
        key = torch.cat([best, key], dim=1)
        best = key.topk(min(k, key.shape[1]), dim=1, largest=False, sorted=True).values
    best = best.cpu()
    return (best >> 32).numpy(), (best & 0xFFFFFFFF).numpy()


CPU_CHUNK = 2048       # codes per step on the CPU: the (Q, CPU_CHUNK) buffers stay in the caches


def _nearest_cpu(queries: np.ndarray, codes: np.ndarray, k: int,
                 exclude: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """hamming_nearest on the CPU: XOR and numpy's popcount into preallocated buffers, one
    64-bit word at a time; a row is kept only if it beats its query's k-th best so far
    (strictly: equal distances keep the earlier row), and the kept rows are cut back to k per
    query when they pile up. The distances of a chunk are never sorted."""
    qw = np.ascontiguousarray(queries).view(np.uint64)                     # (Q, W)
    cw = np.ascontiguousarray(codes).view(np.uint64)                       # (N, W)
    nq, nw = qw.shape
    ex = None if exclude is None else np.asarray(exclude, np.int64)
    xor = np.empty((nq, CPU_CHUNK), np.uint64)
    ones = np.empty((nq, CPU_CHUNK), np.uint8)
    dist = np.empty((nq, CPU_CHUNK), np.uint16)
    limit = np.full(nq, np.iinfo(np.uint16).max, np.uint16)                # keep a row if its distance < limit
    kept_q, kept_d, kept_r, pending = [], [], [], 0
    n = len(cw)

    def cut() -> None:
        nonlocal kept_q, kept_d, kept_r, pending
        q, d, r = (np.concatenate(a) for a in (kept_q, kept_d, kept_r))
        order = np.lexsort((r, d, q))                                      # by query, distance, row
        q, d, r = q[order], d[order], r[order]
        first = np.searchsorted(q, np.arange(nq))                          # each query's first position
        rank = np.arange(len(q)) - first[q]
        keep = rank < k
        q, d, r = q[keep], d[keep], r[keep]
        full = np.bincount(q, minlength=nq) == k
        last = np.searchsorted(q, np.arange(nq), side="right") - 1
        limit[full] = d[last[full]]
        kept_q, kept_d, kept_r, pending = [q], [d], [r], len(q)

    for start in range(0, n, CPU_CHUNK):
        c = cw[start:start + CPU_CHUNK].T                                  # (W, C) view
        m = c.shape[1]
        acc = dist[:, :m]
        acc.fill(0)
        for w in range(nw):
            np.bitwise_xor(qw[:, w, None], c[w][None], out=xor[:, :m])
            np.bitwise_count(xor[:, :m], out=ones[:, :m])
            np.add(acc, ones[:, :m], out=acc)
        if ex is not None:
            inside = (ex >= start) & (ex < start + m)
            acc[np.flatnonzero(inside), ex[inside] - start] = np.iinfo(np.uint16).max
        qi, col = np.nonzero(acc < limit[:, None])
        if len(qi):
            kept_q.append(qi)
            kept_d.append(acc[qi, col].astype(np.int64))
            kept_r.append(col.astype(np.int64) + start)
            pending += len(qi)
            if pending > 4 * nq * k or start + m >= n:
                cut()
    cut()
    return kept_d[0].reshape(nq, k), kept_r[0].reshape(nq, k)


def rerank(queries: torch.Tensor, features: str | Path, candidates: np.ndarray, k: int,
           memory_mb: float = 64) -> tuple[np.ndarray, np.ndarray]:
    """The k of each query's candidate rows (Q, R) nearest by exact Euclidean distance of the
    stored features: distances (Q, k) float32 and rows (Q, k), nearest first, equal distances
    in the candidates' order. Queries in blocks whose rows fit `memory_mb` as float32."""
    k = min(k, candidates.shape[1])
    block = max(1, int(memory_mb * 2**20) // max(1, candidates.shape[1] * queries.shape[1] * 4 * 2))
    dist, index = [], []
    for i in range(0, len(candidates), block):
        cand = candidates[i:i + block]                                     # (b, R)
        rows = torch.from_numpy(read_rows(features, cand.ravel())).to(queries.device)   # (b R, D) float32
        rows = rows.view(*cand.shape, -1)
        d = (rows - queries[i:i + block, None].float()).square().sum(dim=2)               # (b, R)
        order = d.argsort(dim=1, stable=True)[:, :k]
        dist.append(d.gather(1, order).sqrt().cpu().numpy())
        index.append(np.take_along_axis(cand, order.cpu().numpy(), 1))
    return np.concatenate(dist), np.concatenate(index)
