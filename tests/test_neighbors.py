"""`alexnet neighbors`: the streamed exact k-NN against brute-force NumPy, a stored image used
as a query coming back first at distance ~0, the JSON and picture of the command, the
cache beside the shards and the `--features` route."""

from __future__ import annotations

import io
import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from alexnet_cli.cli.app import app
from alexnet_cli.features import cache_path, create_features_file, extract_features, load_encoder
from alexnet_cli.images import load_image
from alexnet_cli.neighbors import (RunningTopK, chunk_rows, encode_queries, find_neighbors, nearest,
                                   read_split_images)
from alexnet_cli.shards import read_split_index
from test_docs import check_documented_json

runner = CliRunner()


def _features_file(path, rows: np.ndarray) -> None:
    n, dim = rows.shape
    create_features_file(path, paths=[f"img{i}.png" for i in range(n)], labels=np.arange(n) % 3,
                         classes=["x", "y", "z"], class_names=["ex", "why", "zed"], split="train", key="k", dim=dim)
    with h5py.File(path, "r+") as f:
        f["features"][:] = rows
        f.attrs["done"] = n


def _brute_force(queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d = np.sqrt(((queries[:, None].astype(np.float64) - rows[None].astype(np.float64)) ** 2).sum(-1))  # (Q, N)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, 1), idx


def test_streamed_search_matches_numpy_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    rows = np.abs(rng.standard_normal((700, 64))).astype(np.float16)   # non-negative, like fc7 after ReLU
    queries = np.abs(rng.standard_normal((9, 64))).astype(np.float32)
    path = tmp_path / "f.h5"
    _features_file(path, rows)
    budget = 0.05                                                       # MiB: chunks of ~90 rows
    assert 20 < chunk_rows(budget, 64, 9) < 700
    dist, idx = nearest(torch.from_numpy(queries), path, 7, memory_mb=budget)
    want_d, want_i = _brute_force(queries, rows, 7)
    assert dist.shape == idx.shape == (9, 7)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(dist, want_d, rtol=1e-5)


def test_exact_duplicates_come_first_at_zero_and_ties_keep_row_order(tmp_path):
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((50, 16)).astype(np.float16) * 100      # large values: cancellation-prone
    rows[30] = rows[4]                                                  # a duplicate of row 4
    path = tmp_path / "f.h5"
    _features_file(path, rows)
    queries = torch.from_numpy(rows[[4, 17]].astype(np.float32))
    dist, idx = nearest(queries, path, 3, memory_mb=0.01)              # several chunks of a few rows
    assert idx[0, :2].tolist() == [4, 30] and idx[1, 0] == 17
    assert dist[0, 0] == 0 and dist[0, 1] == 0 and dist[1, 0] == 0    # exact re-measurement: no rounding residue
    # asking for more neighbours than rows gives them all, nearest first
    dist, idx = nearest(queries[:1], path, 80)
    assert sorted(idx[0].tolist()) == list(range(50)) and (np.diff(dist[0]) >= 0).all()


def test_running_top_k_fed_row_by_row_equals_one_chunk():
    g = torch.Generator().manual_seed(2)
    rows, q = torch.rand(40, 8, generator=g), torch.rand(3, 8, generator=g)
    one, many = RunningTopK(q, 5), RunningTopK(q, 5)
    one.update(0, rows)
    for i in range(40):
        many.update(i, rows[i:i + 1])
    for a, b in zip(one.result(), many.result()):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------- the command

@pytest.fixture(scope="module")
def data(tiny_data, tmp_path_factory):
    """A writable copy of the tiny data (the features cache goes beside the shards)."""
    return shutil.copytree(tiny_data, tmp_path_factory.mktemp("neighbors") / "data")


@pytest.fixture(scope="module")
def checkpoint(data, tmp_path_factory, make_checkpoint):
    """A randomly initialised 4-class network with the data's mean image."""
    return make_checkpoint(tmp_path_factory.mktemp("neighbors_ckpt") / "model.pt", data)


def test_stored_image_as_query_comes_back_first_at_distance_zero(data, checkpoint, tiny_tree, tmp_path):
    """Two ways to query with an image of the split:

    - its ORIGINAL source file: the query goes through load_image (the source JPEG, any size,
      resized to 256) and the stored feature came from the shard's image. They are the same
      pixels here because `prep` stores load_image's output unchanged in raw shards (with
      jpeg shards the stored image is re-encoded, and the distance is small but not ~0);
    - the shard's own 256x256 image saved as PNG: load_image leaves a 256x256 image as it is,
      so the pixels match whatever the shard format.

    The distance is then zero up to float16 rounding (both vectors are stored as float16,
    at most 2^-11 of each element off) and tiny differences of the forward pass between
    batches of different sizes."""
    png = tmp_path / "val5.png"
    Image.fromarray(read_split_images(data, "val", [5])[0]).save(png)
    source = tiny_tree / read_split_index(data, "val")[0][11]          # val image 11's source file
    result = runner.invoke(app, ["neighbors", str(checkpoint), str(data), "--split", "val", "--query", str(png),
                                 "--query", str(source), "--k", "3", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    (a, b) = json.loads(result.stdout)
    check_documented_json("neighbors", [a, b])
    encoder = load_encoder(checkpoint, data, "cpu")
    norm = encode_queries(encoder, [load_image(png)]).norm().item()
    for hit, row in ((a, 5), (b, 11)):
        first, second = hit["neighbors"][:2]
        assert first["index"] == row
        assert first["distance"] < 2 ** -10 * norm                     # float16 rounding of both sides
        assert second["distance"] > 20 * first["distance"] + 1e-3      # and nothing else is that close


def test_cli_neighbors_json_picture_and_cache(data, checkpoint, tmp_path):
    queries = [tmp_path / "q0.png", tmp_path / "q1.png"]
    for q, row in zip(queries, [2, 13]):
        Image.fromarray(read_split_images(data, "val", [row])[0]).resize((300, 200)).save(q)
    out = tmp_path / "fig" / "neighbors.png"
    args = ["neighbors", str(checkpoint), str(data), "--split", "val", "--k", "4", "--device", "cpu",
            "--query", str(queries[0]), "--query", str(queries[1])]
    result = runner.invoke(app, args + ["--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)

    # exactly docs/public-surface.md's shape: [{"query", "neighbors": [{"path", "class", "name", "label", "distance", ...}]}]
    assert [a["query"] for a in answer] == [str(q) for q in queries]
    manifest = json.loads((data / "manifest.json").read_text())
    for a in answer:
        assert len(a["neighbors"]) == 4
        for n in a["neighbors"]:
            assert {"path", "class", "name", "label", "distance"} <= set(n) and n["label"] in manifest["class_names"]
            assert n["path"].startswith("val/")

    # the features were cached beside the shards, keyed by the network, and complete
    encoder = load_encoder(checkpoint, data, "cpu")
    cached = cache_path(data, "val", encoder.key)
    assert cached.is_file() and not cached.with_name(cached.name + ".partial").exists()
    with h5py.File(cached, "r") as f:
        stored = f["features"][:]                                       # (16, 4096) float16
    # the answer is the brute-force nearest neighbours of the queries' features
    q = encode_queries(encoder, [load_image(p) for p in queries]).numpy()
    want_d, want_i = _brute_force(q, stored, 4)
    assert [[n["index"] for n in a["neighbors"]] for a in answer] == want_i.tolist()
    np.testing.assert_allclose([[n["distance"] for n in a["neighbors"]] for a in answer], want_d, rtol=1e-4)

    # the picture: one row per query, the query then its four neighbours
    with Image.open(out) as img:
        assert img.height > 2 * 128 and img.width > 5 * 128

    # a second run reuses the cache; the text output lists the neighbours
    mtime = cached.stat().st_mtime_ns
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert cached.stat().st_mtime_ns == mtime and answer[0]["neighbors"][0]["path"] in again.stdout

    # a damaged cache is rebuilt, not an error
    good = cached.read_bytes()
    cached.write_bytes(good[: len(good) // 3])
    rebuilt = runner.invoke(app, args + ["--json"])
    assert rebuilt.exit_code == 0 and json.loads(rebuilt.stdout) == answer, rebuilt.output

    # --features: the same answer from a given file; a file of another network is refused
    given = runner.invoke(app, args + ["--json", "--features", str(cached)])
    assert given.exit_code == 0 and json.loads(given.stdout) == answer
    foreign = tmp_path / "foreign.h5"
    shutil.copy(cached, foreign)
    with h5py.File(foreign, "r+") as f:
        f.attrs["key"] = "0123456789abcdef"
    refused = runner.invoke(app, args + ["--features", str(foreign)])
    assert refused.exit_code == 1 and "another network" in refused.stderr


def test_cli_neighbors_bad_input(data, checkpoint, tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"no image here")
    bad = runner.invoke(app, ["neighbors", str(checkpoint), str(data), "--query", str(junk)])
    assert bad.exit_code == 1 and "Error:" in bad.stderr and "junk.jpg" in bad.stderr
    missing = runner.invoke(app, ["neighbors", str(checkpoint), str(data), "--query", str(tmp_path / "none.png")])
    assert missing.exit_code == 2
    assert runner.invoke(app, ["neighbors", str(checkpoint), str(data)]).exit_code == 2     # --query is required
    png = tmp_path / "q.png"
    Image.new("RGB", (256, 256), (10, 200, 30)).save(png)
    nosplit = runner.invoke(app, ["neighbors", str(checkpoint), str(data), "--query", str(png), "--split", "test"])
    assert nosplit.exit_code == 1 and "no split 'test'" in nosplit.stderr and "as --split" in nosplit.stderr


@pytest.mark.gpu
def test_gpu_search_and_features_match_the_cpu(data, checkpoint, tmp_path):
    rng = np.random.default_rng(3)
    rows = np.abs(rng.standard_normal((3000, 4096))).astype(np.float16)
    path = tmp_path / "f.h5"
    _features_file(path, rows)
    queries = torch.from_numpy(np.abs(rng.standard_normal((20, 4096))).astype(np.float32))
    cpu = nearest(queries, path, 6, memory_mb=64)
    gpu = nearest(queries.cuda(), path, 6, memory_mb=64)               # pinned chunks, several of them
    np.testing.assert_array_equal(gpu[1], cpu[1])
    np.testing.assert_allclose(gpu[0], cpu[0], rtol=1e-5)

    # features computed on the GPU (loader, crop and network there) match the CPU's
    on_gpu = extract_features(checkpoint, data, tmp_path / "gpu.h5", split="val", device="cuda")
    on_cpu = extract_features(checkpoint, data, tmp_path / "cpu.h5", split="val", device="cpu")
    assert on_gpu.key == on_cpu.key
    with h5py.File(on_gpu.path) as g, h5py.File(on_cpu.path) as c:
        np.testing.assert_allclose(g["features"][:].astype(np.float32), c["features"][:].astype(np.float32),
                                   rtol=1e-2, atol=1e-2)
    png = tmp_path / "val3.png"
    Image.fromarray(read_split_images(data, "val", [3])[0]).save(png)
    hits = find_neighbors(checkpoint, data, [png], k=4, split="val", device="cuda", features=on_gpu.path)
    assert hits[0].neighbors[0].index == 3 and hits[0].neighbors[0].distance < 0.05


def test_cli_neighbors_defaults_to_six_training_images(data, checkpoint, tmp_path):
    # tiny_data has 48 training images (12 per class) and 16 val: enough for k = 6 and more
    train_paths, train_labels = read_split_index(data, "train")
    assert len(train_paths) == 48
    manifest = json.loads((data / "manifest.json").read_text())
    row = 20                                              # a training image as its shard holds it
    png = tmp_path / "train20.png"
    Image.fromarray(read_split_images(data, "train", [row])[0]).save(png)
    result = runner.invoke(app, ["neighbors", str(checkpoint), str(data), "--query", str(png), "--device", "cpu",
                                 "--json"])                 # no --k, no --split
    assert result.exit_code == 0, result.output
    [answer] = json.loads(result.stdout)
    hits = answer["neighbors"]
    assert answer["query"] == str(png) and len(hits) == 6
    for n in hits:                                        # rows of the train split, not of val
        assert n["path"].startswith("train/") and n["path"] == train_paths[n["index"]]
        assert n["label"] == n["name"] == manifest["class_names"][train_labels[n["index"]]]
        assert n["class"] == manifest["classes"][train_labels[n["index"]]] != n["name"]   # the wnid, as predict's
    assert hits[0]["index"] == row and hits[0]["distance"] < hits[1]["distance"] / 20   # itself, found in train
    assert [n["distance"] for n in hits] == sorted(n["distance"] for n in hits)
    assert len({n["index"] for n in hits}) == 6


def test_cli_neighbors_refuses_a_picture_suffix_it_would_not_write(data, checkpoint, tmp_path):
    """--out k.txt would get PNG bytes: refused before any work, as kernels and predict do."""
    out, query = tmp_path / "neighbors.txt", tmp_path / "q.png"
    Image.new("RGB", (64, 48), (200, 40, 40)).save(query)
    result = runner.invoke(app, ["neighbors", str(checkpoint), str(data), "--query", str(query), "--out", str(out)])
    assert result.exit_code == 2 and "the suffix names the format" in result.output and not out.exists()


def test_cli_neighbors_features_of_another_split_says_which_and_what_to_do(data, checkpoint, tmp_path):
    """--features of 'val' while searching 'train': one line saying which split the file holds,
    which was asked, and what to do (it said "of other data than DATA's 'train'")."""
    val = extract_features(checkpoint, data, tmp_path / "val.h5", split="val", device="cpu").path
    png = tmp_path / "q.png"
    Image.fromarray(read_split_images(data, "val", [3])[0]).save(png)
    args = ["neighbors", str(checkpoint), str(data), "--query", str(png), "--device", "cpu", "--features", str(val)]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and refused.stdout == ""
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith(f"Error: {val} holds the features of split 'val' (16 images), not of 'train' (48 images)")
    assert line.endswith("as asked: use --split val, or leave out --features to compute those of 'train'")
    assert runner.invoke(app, args + ["--split", "val", "--json"]).exit_code == 0        # as the message says
    # the same split of other data (other shards, as many images): said so, and how to remake the file
    other = tmp_path / "other.h5"
    shutil.copy(val, other)
    with h5py.File(other, "r+") as f:
        f.attrs["data_key"] = "0123456789abcdef"
    refused = runner.invoke(app, args[:-1] + [str(other), "--split", "val"])
    assert refused.exit_code == 1 and f"of other images of 'val' than {data}'s" in refused.stderr, refused.stderr
    assert f"--out {other} --overwrite`" in refused.stderr


def test_bits_and_rerank_without_codes_are_refused_alike(tmp_path):
    """The audit: `--bits 64` without --codes ran the exact search as if not given, while
    `--rerank` without --codes was refused; both choose something of the Hamming search."""
    from alexnet_cli.errors import UsageError
    from alexnet_cli.neighbors import find_neighbors

    for option in ({"bits": 64}, {"rerank": 10}):
        with pytest.raises(UsageError, match="give `codes` too"):     # before any file is read
            find_neighbors(tmp_path / "absent.pt", tmp_path, [tmp_path / "absent.jpg"], **option)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_query_is_refused_as_a_non_finite_row_is(tmp_path, value):
    """NaN distances ranked arbitrarily (a NaN query got rows back, in no order); a query that is
    not finite is now refused, naming it, as RunningTopK refuses such rows (NonFiniteRow)."""
    from alexnet_cli.errors import AlexnetError
    from alexnet_cli.neighbors import NonFiniteQuery, check_queries

    g = torch.Generator().manual_seed(3)
    q = torch.rand(4, 8, generator=g)
    check_queries(q)                                                    # finite: nothing said
    q[2, 5] = value
    with pytest.raises(NonFiniteQuery) as caught:
        RunningTopK(q, 3)
    assert caught.value.query == 2
    path = tmp_path / "f.h5"
    _features_file(path, np.abs(np.random.default_rng(4).standard_normal((20, 8))).astype(np.float16))
    with pytest.raises(AlexnetError, match="^query 2 holds NaN or infinite values: no distance to it can be ranked$"):
        nearest(q, path, 3)


def test_cli_neighbors_names_a_query_whose_feature_is_not_finite(data, checkpoint, tmp_path, monkeypatch):
    """One `Error:` line naming the query, before the split's features are computed or searched
    (the network is a stand-in whose second query's fc7 overflows float16)."""
    import alexnet_cli.neighbors as neighbors_module

    def features_first(*args, **kwargs):
        raise AssertionError("the split's features were asked for before the queries were checked")

    def second_overflows(encoder, images, batch_size=64):
        q = torch.ones(len(images), 4096)
        q[1, 9] = float("inf")                                          # fc7 beyond float16's 65504
        return q

    monkeypatch.setattr(neighbors_module, "load_encoder", lambda *args: object())
    monkeypatch.setattr(neighbors_module, "encode_queries", second_overflows)
    monkeypatch.setattr(neighbors_module, "split_features", features_first)
    queries = [tmp_path / "fine.png", tmp_path / "bad.png"]
    for q, colour in zip(queries, [(10, 200, 30), (200, 10, 30)]):
        Image.new("RGB", (256, 256), colour).save(q)
    result = runner.invoke(app, ["neighbors", str(checkpoint), str(data), "--device", "cpu",
                                 "--query", str(queries[0]), "--query", str(queries[1])])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0] == (f"Error: {checkpoint}: the fc7 feature of query {queries[1]} is NaN or infinite in float16 "
                        "(values beyond 65504): it cannot be compared with the stored features")


def test_the_table_folds_a_long_path_whole_in_80_columns():
    """A piped `alexnet neighbors` renders 80 columns: a long path was cut with an ellipsis."""
    from rich.console import Console

    from alexnet_cli.cli.neighbors import neighbors_table
    from alexnet_cli.neighbors import Neighbor, QueryResult

    path = "train/n01440764/" + "a_very_long_file_name_" * 4 + "n01440764_10026.JPEG"
    result = QueryResult("photo.jpg", [Neighbor(7, path, 0, "tench, Tinca tinca", 12.5)], split="train")
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(neighbors_table(result))
    text = console.export_text()
    assert "…" not in text and "nearest in 'train'" in text and max(map(len, text.splitlines())) <= 80
    cells = [line.split("│")[-2].strip() for line in text.splitlines() if line.count("│") == 5]
    assert "".join(cells) == path                                  # the path column, line after line


def test_cli_neighbors_says_a_split_holds_fewer_images_than_k(data, checkpoint, tmp_path):
    """--k above the split's size: every image is listed, and the note says so on stderr (with
    --json too, leaving stdout one JSON document) and under each table, where a long table
    does not push it out of sight."""
    png = tmp_path / "q.png"
    Image.fromarray(read_split_images(data, "val", [3])[0]).save(png)
    args = ["neighbors", str(checkpoint), str(data), "--split", "val", "--k", "500", "--device", "cpu",
            "--query", str(png), "--query", str(png)]
    note = "Note: 'val' holds 16 images, fewer than --k 500: all of them are shown"
    as_json = runner.invoke(app, args + ["--json"])
    assert as_json.exit_code == 0, as_json.output
    assert [len(a["neighbors"]) for a in json.loads(as_json.stdout)] == [16, 16]
    assert as_json.stderr.count(note) == 1 and "Note" not in as_json.stdout
    shown = runner.invoke(app, args)
    assert shown.exit_code == 0, shown.output
    assert shown.stderr.count(note) == 1
    lines = shown.stdout.splitlines()
    caption = "only 16: 'val' holds 16 images, fewer than --k 500"
    assert [line.strip() for line in lines].count(caption) == 2           # under each query's table
    bottoms = [i for i, line in enumerate(lines) if line.startswith("└")]   # each table's last line
    assert [lines[i + 1].strip() for i in bottoms] == [caption, caption]
    exact = runner.invoke(app, args[:6] + ["16"] + args[7:])               # --k 16: as many as there are, no note
    assert exact.exit_code == 0 and "fewer than" not in exact.stdout + exact.stderr
