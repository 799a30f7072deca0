"""`alexnet codes` and `neighbors --codes`: packing, the Hamming search against brute-force
NumPy, exact re-ranking, learned codes against random projections on generated clusters,
resuming a killed training, and the commands end to end on the tiny data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from alexnet_cli.atomic import claim
from alexnet_cli.cli.app import app
from alexnet_cli.codes import codes_path, encoder_state, make_codes, read_codes, read_codes_info, state_path
from alexnet_cli.hamming import hamming_nearest, pack_codes, rerank, unpack_codes
from alexnet_cli.errors import DataError, UsageError
from alexnet_cli.features import cache_path, create_features_file, load_encoder
from alexnet_cli.neighbors import nearest, read_split_images
from test_docs import check_documented_json

runner = CliRunner()


@pytest.fixture
def one_thread():
    """Tiny networks train several times faster on one thread than on contended cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _features_file(path, rows: np.ndarray, labels: np.ndarray | None = None) -> None:
    n, dim = rows.shape
    labels = np.arange(n) % 3 if labels is None else labels
    classes = [str(c) for c in range(int(labels.max()) + 1)]
    create_features_file(path, paths=[f"img{i}.png" for i in range(n)], labels=labels, classes=classes,
                         class_names=classes, split="train", key="k", data="d", dim=dim)
    with h5py.File(path, "r+") as f:
        f["features"][:] = rows
        f.attrs["done"] = n


def _clusters(n=1000, dim=64, clusters=10, latent=16, seed=0):
    """Points around `clusters` centres in a `latent`-d space, lifted to `dim` non-negative
    dimensions (like fc7 after its ReLU) with isotropic noise: label = cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, latent)) * 2
    labels = rng.integers(0, clusters, n)
    z = centres[labels] + rng.standard_normal((n, latent))
    lift = rng.standard_normal((latent, dim)) / np.sqrt(latent)
    x = np.maximum(z @ lift, 0) + 0.3 * np.abs(rng.standard_normal((n, dim)))
    return x.astype(np.float16), labels


# ---------------------------------------------------------------------------- packing and search

def test_packing_round_trips_and_hamming_matches_numpy():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, (300, 128)).astype(bool)
    bits[17] = bits[3]                                                  # a duplicate: a tie at distance 0
    packed = pack_codes(bits)
    assert packed.shape == (300, 16) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_codes(packed, 128), bits)
    np.testing.assert_array_equal(pack_codes(torch.from_numpy(bits)), packed)

    queries = [3, 40, 299]
    want = (bits[queries][:, None] != bits[None]).sum(-1)               # (3, 300) brute force
    order = np.argsort(want, axis=1, kind="stable")[:, :25]
    dist, idx = hamming_nearest(packed[queries], packed, 25, memory_mb=0.01)   # chunks of a few dozen rows
    np.testing.assert_array_equal(idx, order)                           # equal distances in row order
    np.testing.assert_array_equal(dist, np.take_along_axis(want, order, 1))
    assert idx[0, :2].tolist() == [3, 17] and dist[0, :2].tolist() == [0, 0]   # its own code first, at 0

    dist, idx = hamming_nearest(packed[queries], packed, 25, exclude=queries)
    assert not (idx == np.array(queries)[:, None]).any() and idx[0, 0] == 17


def test_swar_popcount_on_torch_equals_numpy():
    from alexnet_cli.hamming import _popcount
    x = torch.tensor([0, -1, 1, 2**62, -2**63, 0x0F0F0F0F0F0F0F0F, 12345678901234], dtype=torch.int64)
    want = [bin(int(v) & (2**64 - 1)).count("1") for v in x]
    assert _popcount(x).tolist() == want


def test_rerank_of_every_row_is_the_exact_search(tmp_path):
    rng = np.random.default_rng(1)
    rows = np.abs(rng.standard_normal((200, 32))).astype(np.float16)
    path = tmp_path / "f.h5"
    _features_file(path, rows)
    queries = torch.from_numpy(np.abs(rng.standard_normal((5, 32))).astype(np.float32))
    codes = pack_codes(rng.integers(0, 2, (200, 64)).astype(bool))      # any codes: N covers the split
    _, cand = hamming_nearest(codes[:5], codes, 200)
    dist, idx = rerank(queries, path, cand, 10)
    want_d, want_i = nearest(queries, path, 10)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(dist, want_d, rtol=1e-5)


# ---------------------------------------------------------------------------- learning

def test_learned_codes_beat_random_projections_on_clusters(tmp_path, one_thread):
    rows, labels = _clusters()
    path = tmp_path / "f.h5"
    _features_file(path, rows, labels)
    result = make_codes(path, bits=64, epochs=40, hidden=256, batch_size=32, queries=100, rerank_depth=100)
    q = result.quality
    assert q["queries"] == 100 and q["ks"] == [6, 100]
    ae, rp = q["autoencoder"], q["random_projections"]
    # measured (docs/codes.md): recall@6 0.417 vs 0.350, recall@100 0.877 vs 0.811, label
    # precision@100 0.851 vs 0.812; precision@6 0.985 vs 0.987 (one answer in 600; the exact
    # search's own is 0.992, so no ranking faithful to it can be far above)
    assert ae["recall@6"] > rp["recall@6"] + 0.02
    assert ae["recall@100"] > rp["recall@100"] + 0.03
    assert ae["precision@100"] > rp["precision@100"] + 0.015
    assert ae["precision@6"] >= rp["precision@6"] - 0.005
    assert ae["recall@6_rerank"] > 0.9 and ae["precision@6"] > 0.9
    codes, net = read_codes(result.codes)
    assert codes.shape == (1000, 8) and codes.dtype == np.uint8
    np.testing.assert_array_equal(net.code(torch.from_numpy(rows[:50].astype(np.float32))), codes[:50])


def test_pair_correlation_is_pearson_over_the_pairs():
    from alexnet_cli.codes import _pair_correlation
    gen = torch.Generator().manual_seed(0)
    p, x = torch.rand(7, 16, generator=gen), torch.randn(7, 5, generator=gen)
    i, j = np.triu_indices(7, 1)
    pn, xn = p.numpy().astype(np.float64), x.numpy().astype(np.float64)
    ham = (pn[i] * (1 - pn[j]) + (1 - pn[i]) * pn[j]).sum(1)           # expected Hamming distance of each pair
    dist = np.sqrt(((xn[i] - xn[j]) ** 2).sum(1))
    assert float(_pair_correlation(p, x)) == pytest.approx(np.corrcoef(ham, dist)[0, 1], abs=1e-5)
    bits = (p > 0.5).float()                                            # binary p: the Hamming distance itself
    hb = (bits.numpy()[i] != bits.numpy()[j]).sum(1)
    assert float(_pair_correlation(bits, x)) == pytest.approx(np.corrcoef(hb, dist)[0, 1], abs=1e-5)


class StopAfter:
    """A progress reporter that stops the run (like Ctrl-C) at its `after`-th log line that
    starts with `prefix`, and keeps the log lines."""

    def __init__(self, prefix: str = "", after: int | None = None):
        self.prefix, self.after, self.seen, self.lines = prefix, after, 0, []

    @contextmanager
    def task(self, description, total, unit="it", done=0):
        yield self

    def advance(self, n=1, **info):
        pass

    def log(self, message, mentions=()):
        self.lines.append(message)
        if self.after is not None and message.startswith(self.prefix):
            self.seen += 1
            if self.seen == self.after:
                raise KeyboardInterrupt


def test_a_killed_codes_run_resumes_to_the_same_codes(tmp_path, one_thread):
    rows, labels = _clusters(n=400, dim=32)
    whole, part = tmp_path / "a" / "f.h5", tmp_path / "b" / "f.h5"
    for p in (whole, part):
        p.parent.mkdir()
        _features_file(p, rows, labels)
    settings = dict(bits=64, epochs=3, hidden=32, batch_size=64, queries=40, rerank_depth=50)
    make_codes(whole, **settings)
    with pytest.raises(KeyboardInterrupt):
        make_codes(part, progress=StopAfter("codes: epoch", after=2), **settings)
    assert state_path(part, 64).exists() and not codes_path(part, 64).exists()
    log = StopAfter()
    result = make_codes(part, progress=log, **settings)
    assert any("resuming after epoch 2 of 3" in line for line in log.lines)
    a, b = read_codes(codes_path(whole, 64)), read_codes(result.codes)
    np.testing.assert_array_equal(a[0], b[0])                           # the same codes, bit for bit
    for (name, x), y in zip(encoder_state(a[1]).items(), encoder_state(b[1]).values()):   # what the files keep
        assert torch.equal(x, y), name
    assert read_codes_info(result.codes).quality == read_codes_info(codes_path(whole, 64)).quality

    # a finished file is kept, and the training state is gone; more epochs train afresh (the same
    # weights as continuing would give: the run is deterministic for its seed)
    assert not state_path(part, 64).exists()
    again = StopAfter()
    assert make_codes(part, progress=again, **settings).reused and not again.lines
    deeper = StopAfter()                                                # another --rerank: measured again, not trained
    result = make_codes(part, progress=deeper, **{**settings, "rerank_depth": 60})
    assert not result.reused and result.quality["rerank"] == 60 and not any(line.startswith("codes: epoch") for line in deeper.lines)
    np.testing.assert_array_equal(read_codes(result.codes)[0], a[0])
    more = StopAfter()
    assert not make_codes(part, progress=more, **{**settings, "epochs": 4}).reused
    assert any("codes: epoch 1/4" in line for line in more.lines) and not state_path(part, 64).exists()
    other = StopAfter()                                                 # another training rule: trained afresh
    assert not make_codes(part, progress=other, **{**settings, "neighbours": 0.5}).reused
    assert any("codes: epoch 1/3" in line for line in other.lines)      # from the first epoch (no state is left)
    assert read_codes_info(codes_path(part, 64)).settings["neighbours"] == 0.5


def test_library_refuses_bad_settings_and_files(tmp_path):
    rows, labels = _clusters(n=50, dim=16)
    path = tmp_path / "f.h5"
    _features_file(path, rows, labels)
    with pytest.raises(UsageError, match="^bits"):
        make_codes(path, bits=100)
    with pytest.raises(UsageError, match="^epochs"):
        make_codes(path, epochs=0)
    with pytest.raises(UsageError, match="neighbourhood weight"):
        make_codes(path, bits=64, neighbours=-1)
    with h5py.File(path, "r+") as f:
        f.attrs["done"] = 10
    with pytest.raises(DataError, match="incomplete"):
        make_codes(path, bits=64)
    junk = tmp_path / "junk.codes64.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="not a readable HDF5"):
        read_codes_info(junk)


# ---------------------------------------------------------------------------- the commands

@pytest.fixture(scope="module")
def data(tiny_data, tmp_path_factory):
    """A writable copy of the tiny data (the features and codes go beside the shards)."""
    return shutil.copytree(tiny_data, tmp_path_factory.mktemp("codes") / "data")


@pytest.fixture(scope="module")
def checkpoint(data, tmp_path_factory, make_checkpoint):
    return make_checkpoint(tmp_path_factory.mktemp("codes_ckpt") / "model.pt", data)


def test_cli_codes_then_neighbors_by_codes(data, checkpoint, tmp_path):
    base = ["codes", str(checkpoint), str(data), "--split", "val", "--device", "cpu"]
    made = runner.invoke(app, base + ["--bits", "64", "--epochs", "2", "--json"])
    assert made.exit_code == 0, made.output
    out = json.loads(made.stdout)
    check_documented_json("codes", out)
    assert out["bits"] == 64 and out["count"] == 16 and out["bytes_per_image"] == 8 and not out["reused"]
    assert set(out["quality"]) >= {"autoencoder", "random_projections", "exact", "queries"}
    text = runner.invoke(app, base + ["--bits", "64", "--epochs", "2"])
    assert text.exit_code == 0 and "kept" in text.stdout and "random" in text.stdout

    png = tmp_path / "val5.png"
    Image.fromarray(read_split_images(data, "val", [5])[0]).save(png)
    ask = ["neighbors", str(checkpoint), str(data), "--split", "val", "--query", str(png), "--k", "4",
           "--device", "cpu", "--codes", "--bits", "64", "--json"]
    hamming = runner.invoke(app, ask)
    assert hamming.exit_code == 0, hamming.output
    [answer] = json.loads(hamming.stdout)
    assert answer["distance_kind"] == "hamming" and len(answer["neighbors"]) == 4
    first = answer["neighbors"][0]
    assert first["distance"] == 0 and first["distance"] == int(first["distance"])
    assert 5 in [n["index"] for n in answer["neighbors"] if n["distance"] == 0]    # its own code, at 0
    default = runner.invoke(app, [a for a in ask if a not in ("--bits", "64")])     # the largest made: 64
    assert default.exit_code == 0 and json.loads(default.stdout) == [answer], default.output
    wanted = runner.invoke(app, [*ask[:-2], "256", "--json"])                       # 256 asked: none made
    assert wanted.exit_code == 1 and "no 256-bit codes" in wanted.stderr, wanted.output
    assert wanted.stderr.rstrip().endswith("or use the codes there are (--bits 64)"), wanted.stderr

    exact = runner.invoke(app, ask[:-4] + ["--json"])
    reranked = runner.invoke(app, ask + ["--rerank", "16"])             # N covers the split: the exact answer
    assert exact.exit_code == 0 and reranked.exit_code == 0, reranked.output
    e, r = json.loads(exact.stdout)[0], json.loads(reranked.stdout)[0]
    assert r["distance_kind"] == e["distance_kind"] == "euclidean"
    assert [n["index"] for n in r["neighbors"]] == [n["index"] for n in e["neighbors"]]
    np.testing.assert_allclose([n["distance"] for n in r["neighbors"]], [n["distance"] for n in e["neighbors"]],
                               rtol=1e-4, atol=1e-6)


def test_cli_codes_bad_input(data, checkpoint, tmp_path):
    base = ["codes", str(checkpoint), str(data), "--split", "val", "--device", "cpu"]
    for args in (["--bits", "100"], ["--epochs", "0"], ["--seed", "-1"]):
        bad = runner.invoke(app, base + args)
        assert bad.exit_code == 2 and bad.stderr.startswith("Error:") and len(bad.stderr.strip().splitlines()) == 1
    nosplit = runner.invoke(app, base[:-4] + ["--split", "test"])
    assert nosplit.exit_code == 1 and "no split 'test'" in nosplit.stderr

    png = tmp_path / "q.png"
    Image.new("RGB", (256, 256), (10, 200, 30)).save(png)
    ask = ["neighbors", str(checkpoint), str(data), "--split", "val", "--query", str(png), "--device", "cpu"]
    assert runner.invoke(app, ask + ["--rerank", "10"]).exit_code == 2              # --rerank needs --codes
    assert runner.invoke(app, ask + ["--codes", "--rerank", "2", "--k", "6"]).exit_code == 2   # fewer than --k
    assert runner.invoke(app, ask + ["--codes", "--bits", "100"]).exit_code == 2
    assert runner.invoke(app, ask + ["--memory-mb", "inf"]).exit_code == 2
    missing = runner.invoke(app, ask + ["--codes", "--bits", "128"])
    assert missing.exit_code == 1 and "alexnet codes" in missing.stderr and "128" in missing.stderr
    assert missing.stderr.startswith("Error:") and len(missing.stderr.strip().splitlines()) == 1   # before any work
    # codes of other features (another network's) are refused, not searched
    made = runner.invoke(app, ["codes", str(checkpoint), str(data), "--split", "val", "--device", "cpu",
                               "--bits", "64", "--epochs", "1", "--json"])
    assert made.exit_code == 0, made.output
    path = json.loads(made.stdout)["codes"]
    with h5py.File(path, "r+") as f:
        f.attrs["features_key"] = "0123456789abcdef"
    foreign = runner.invoke(app, ask + ["--codes", "--bits", "64"])
    assert foreign.exit_code == 1 and "other features" in foreign.stderr


@pytest.mark.gpu
def test_gpu_hamming_search_and_training_match_the_cpu(tmp_path):
    rng = np.random.default_rng(4)
    codes = pack_codes(rng.integers(0, 2, (5000, 256)).astype(bool))
    codes[4321] = codes[7]
    cpu = hamming_nearest(codes[:20], codes, 50)
    gpu = hamming_nearest(codes[:20], codes, 50, device="cuda", memory_mb=1)      # several chunks
    np.testing.assert_array_equal(cpu[0], gpu[0])
    np.testing.assert_array_equal(cpu[1], gpu[1])
    excl = hamming_nearest(codes[:20], codes, 5, exclude=np.arange(20), device="cuda")
    assert excl[1][7, 0] == 4321 and not (excl[1] == np.arange(20)[:, None]).any()

    rows, labels = _clusters(n=600, dim=32)
    path = tmp_path / "f.h5"
    _features_file(path, rows, labels)
    result = make_codes(path, bits=64, epochs=3, hidden=32, batch_size=64, queries=60, device="cuda")
    assert result.quality["autoencoder"]["recall@6_rerank"] > 0.5


def test_cli_codes_quality_fits_80_columns(tmp_path, monkeypatch):
    """With k = 6 and 100 the quality table had nine columns: at 80 columns its headers and rows
    wrapped ("random" / "projections"). Every measure is still printed, in its row."""
    from alexnet_cli.codes import CodesResult

    metrics = [f"{m}@{k}{r}" for r in ("", "_rerank") for m in ("recall", "precision") for k in (6, 100)]
    rows = {name: {m: round(0.1 * i + 0.001 * j, 3) for j, m in enumerate(metrics, 1)}
            for i, name in enumerate(("autoencoder", "random_projections"), 1)}
    quality = {"queries": 500, "rerank": 500, "ks": [6, 100], "exact": {"precision@6": 0.901, "precision@100": 0.902},
               **rows}
    result = CodesResult(codes=tmp_path / "c.h5", state=tmp_path / "s.pt", bits=64, count=50_000, epochs=10,
                         loss=0.5, quality=quality, reused=False)
    monkeypatch.setattr("alexnet_cli.codes.codes_for_split", lambda *a, **k: result)
    (tmp_path / "model.pt").write_bytes(b"")
    shown = runner.invoke(app, ["codes", str(tmp_path / "model.pt"), str(tmp_path)], env={"COLUMNS": "80"})
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    headers = [[c.strip() for c in line.split("┃")[1:-1]] for line in lines if line.startswith("┃")]
    measures = ["recall@6", "recall@100", "precision@6", "precision@100"]
    assert headers == [["ranked by Hamming", *measures], ["re-ranked exactly", *measures]]       # none wrapped
    for name, label in (("autoencoder", "autoencoder"), ("random_projections", "random projections")):
        found = [line for line in lines if line.startswith(f"│ {label} ")]
        assert len(found) == 2                              # ranked by Hamming distance, then re-ranked
        for line, suffix in zip(found, ("", "_rerank")):
            values = [f"{rows[name][m + suffix]:.3f}" for m in metrics[:4]]
            assert line.split("│")[2:-1] and [c.strip() for c in line.split("│")[2:-1]] == values
    exact = [[c.strip() for c in line.split("│")[2:-1]] for line in lines if line.startswith("│ exact search ")]
    assert exact and all(row == ["1.000", "1.000", "0.901", "0.902"] for row in exact)
    assert "500 held-out queries" in shown.stdout and "the 500 nearest" in shown.stdout


def test_the_training_state_is_removed_once_the_codes_are_complete(tmp_path, one_thread):
    """The state (weights and Adam's, three times the auto-encoder) was left beside every codes
    file; the codes file kept the decoder, which no search reads. A kill still resumes."""
    rows, labels = _clusters(n=200, dim=32)
    path = tmp_path / "f.h5"
    _features_file(path, rows, labels)
    settings = dict(bits=64, epochs=2, hidden=32, batch_size=64, queries=20, rerank_depth=30)
    with pytest.raises(KeyboardInterrupt):
        make_codes(path, progress=StopAfter("codes: epoch", after=1), **settings)
    kept = state_path(path, 64).read_bytes()                            # what a kill leaves: resumed from
    log = StopAfter()
    result = make_codes(path, progress=log, **settings)
    assert any("resuming after epoch 1 of 2" in line for line in log.lines)
    assert result.codes.exists() and not state_path(path, 64).exists()
    with h5py.File(result.codes, "r") as f:                             # the encoder and its centring only
        assert sorted(f["encoder"]) == ["encoder.0.bias", "encoder.0.weight", "encoder.2.bias", "encoder.2.weight",
                                        "mean", "scale"]
    assert "state" not in result.to_json()
    again = StopAfter()                                                 # finished: nothing to do, nothing made
    assert make_codes(path, progress=again, **settings).reused and not again.lines
    assert not state_path(path, 64).exists()
    state_path(path, 64).write_bytes(kept)                              # a kill after the codes, before the removal
    assert make_codes(path, progress=StopAfter(), **settings).reused and not state_path(path, 64).exists()

    codes, net = read_codes(result.codes)                               # a file that still holds the decoder reads
    with h5py.File(result.codes, "r+") as f:
        for name, tensor in net.state_dict().items():
            if name.startswith("decoder."):
                f["encoder"].create_dataset(name, data=tensor.numpy())
    older, older_net = read_codes(result.codes)
    np.testing.assert_array_equal(older, codes)
    x = torch.from_numpy(rows[:30].astype(np.float32))
    np.testing.assert_array_equal(older_net.code(x), net.code(x))
    with h5py.File(result.codes, "r+") as f:                            # one without its encoder does not
        del f["encoder"]["encoder.2.weight"]
    with pytest.raises(DataError, match="does not fit"):
        read_codes(result.codes)


def test_codes_accepts_every_seed_of_the_other_commands(tmp_path, one_thread):
    """codes took 0..2^32-1, train 0..2^63-1: one range now; a seed past 2^32 trains (its epoch
    noise seed is folded into torch's 64 bits), a negative one is refused by every command alike."""
    rows, labels = _clusters(n=100, dim=16)
    path = tmp_path / "f.h5"
    _features_file(path, rows, labels)
    result = make_codes(path, bits=64, epochs=1, hidden=16, batch_size=64, queries=10, seed=2**63 - 1)
    assert read_codes_info(result.codes).settings["seed"] == 2**63 - 1
    for seed in (-1, 2**63):
        with pytest.raises(UsageError, match=r"seed must be a whole number from 0 to 9223372036854775807"):
            make_codes(path, bits=64, epochs=1, hidden=16, seed=seed)


def _fake_result(tmp_path, monkeypatch, count: int, quality: dict):
    from alexnet_cli.codes import CodesResult

    result = CodesResult(codes=tmp_path / "c.h5", state=tmp_path / "s.pt", bits=64, count=count, epochs=10,
                         loss=0.5, quality=quality, reused=False)
    monkeypatch.setattr("alexnet_cli.codes.codes_for_split", lambda *a, **k: result)
    (tmp_path / "model.pt").write_bytes(b"")
    shown = runner.invoke(app, ["codes", str(tmp_path / "model.pt"), str(tmp_path)], env={"COLUMNS": "80"})
    assert shown.exit_code == 0, shown.output
    return shown.stdout


def test_cli_codes_says_why_there_is_no_quality_table_and_what_it_reranked(tmp_path, monkeypatch):
    few = _fake_result(tmp_path, monkeypatch, 8, {"loss": 0.5})          # under 10 images: no held-out queries
    assert "no quality table: 8 images are too few to hold out queries from (one per 10 images)" in few
    assert "┃" not in few
    row = {m: 0.5 for m in ("recall@6", "recall@100", "precision@6", "precision@100")}
    row.update({m + "_rerank": 0.5 for m in list(row)})
    quality = {"queries": 1, "rerank": 500, "ks": [6, 100], "exact": {"precision@6": 1.0, "precision@100": 1.0},
               "autoencoder": row, "random_projections": row}
    small = _fake_result(tmp_path, monkeypatch, 48, quality)
    assert "1 held-out query: " in small
    assert "re-ranked: all 47 other codes by Hamming distance" in small and "500 nearest" not in small
    large = _fake_result(tmp_path, monkeypatch, 5000, {**quality, "queries": 500, "rerank": 50})
    assert "500 held-out queries" in large and "re-ranked: the 100 nearest" in large      # at least the largest k


def test_cli_bits_refused_in_one_wording_by_codes_and_neighbors(data, checkpoint, tmp_path):
    png = tmp_path / "q.png"
    Image.new("RGB", (256, 256), (10, 200, 30)).save(png)
    asks = (["codes", str(checkpoint), str(data), "--bits", "100"],
            ["neighbors", str(checkpoint), str(data), "--query", str(png), "--codes", "--bits", "100"])
    for ask in asks:
        bad = runner.invoke(app, ask)
        assert bad.exit_code == 2 and bad.stderr == "Error: --bits must be one of 64, 128, 256, got 100\n", bad.stderr


def test_cli_codes_says_when_it_reuses_the_cached_features(tiny_data, tmp_path, make_checkpoint):
    data = shutil.copytree(tiny_data, tmp_path / "data")
    model = make_checkpoint(tmp_path / "model.pt", data)
    base = ["codes", str(model), str(data), "--split", "val", "--device", "cpu", "--epochs", "1"]
    first = runner.invoke(app, base + ["--bits", "64"])
    assert first.exit_code == 0, first.output
    assert "fc7 features of 'val' cached in" in first.stderr and "reused" not in first.stderr
    assert "1 held-out query:" in first.stdout                         # 16 images: one held out
    assert not list(data.glob("*.pt")) and not list(data.rglob("*.codes64.pt"))       # no training state left
    second = runner.invoke(app, base + ["--bits", "128"])
    assert second.exit_code == 0, second.output
    assert "fc7 features of 'val' reused from" in second.stderr and "cached in" not in second.stderr


# ---------------------------------------------------------------------------- leftovers of killed runs

def _dead_pid() -> str:
    """The id of a process that has ended (as a killed `codes` has)."""
    return subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()


def _plant_temporaries(features, bits: int):
    """What killed runs leave beside `features` (a save of the codes and of the training state cut
    short: `.NAME.PID.tmp`, unlocked) and what must stay: a live writer's temporary of the state
    (held, as atomic.claim holds it) and a dead writer's of a file `codes` does not write. Returns
    (abandoned, kept, the live writer's descriptor)."""
    dead = _dead_pid()
    abandoned = [p.with_name(f".{p.name}.{dead}.tmp") for p in (codes_path(features, bits), state_path(features, bits))]
    for tmp in abandoned:
        tmp.write_bytes(b"half a save")
    live = state_path(features, bits).with_name(f".{state_path(features, bits).name}.{os.getppid()}.tmp")
    fd = claim(live)                                       # a live process's name (this one's own: its saves')
    other = features.with_name(f".notes.h5.{dead}.tmp")     # the user's, or another command's: not ours to remove
    other.write_bytes(b"mine")
    return abandoned, [live, other], fd


def test_codes_removes_the_temporaries_that_killed_runs_left(tmp_path, one_thread):
    """A `codes` killed while saving left ~100 MB (`.FEAT.codes<bits>.pt.PID.tmp`) that no later
    run removed; now the next `codes` of those codes removes its own dead ones, keeps a live
    writer's and any other file's, and leaves no lock file behind (the lock is transient)."""
    rows, labels = _clusters(n=200, dim=32)
    path = tmp_path / "f.h5"
    _features_file(path, rows, labels)
    abandoned, kept, fd = _plant_temporaries(path, 64)
    try:
        make_codes(path, bits=64, epochs=1, hidden=32, batch_size=64, queries=20, rerank_depth=30)
        assert not any(p.exists() for p in abandoned)
        assert all(p.exists() for p in kept)
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["f.h5", "f.codes64.h5", *(p.name for p in kept)])


def test_cli_codes_removes_the_temporaries_that_killed_runs_left(tiny_data, make_checkpoint, tmp_path):
    """The same through `alexnet codes`, whose features are the split's cache beside the shards:
    cleaned before the features are computed, and neither `codes` nor `features` (the cache,
    `alexnet features --out`) leaves a lock file."""
    data = shutil.copytree(tiny_data, tmp_path / "data")
    model = make_checkpoint(tmp_path / "model.pt", data)
    features = runner.invoke(app, ["features", str(model), str(data), "--split", "val", "--device", "cpu",
                                   "--out", str(tmp_path / "val.h5")])
    assert features.exit_code == 0, features.output
    assert not list(tmp_path.glob(".*")), list(tmp_path.glob(".*"))
    before = set(data.iterdir())
    cache = cache_path(data, "val", load_encoder(model, data, "cpu").key)
    abandoned, kept, fd = _plant_temporaries(cache, 64)
    try:
        made = runner.invoke(app, ["codes", str(model), str(data), "--split", "val", "--bits", "64", "--epochs", "1",
                                   "--device", "cpu"])
        assert made.exit_code == 0, made.output
        assert not any(p.exists() for p in abandoned)
        assert all(p.exists() for p in kept)
    finally:
        os.close(fd)
    assert set(data.iterdir()) - before == {cache, codes_path(cache, 64), *kept}      # no .lock, no state
