"""`alexnet pca` (alexnet_cli.pca): the RGB covariance of the training pixels against NumPy
on data with a known covariance, the eigen-decomposition's layout, pca.json, the CLI."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from alexnet_cli.cli.app import app
from alexnet_cli.cli.flags import flag_message
from alexnet_cli.errors import DataError, UsageError
from alexnet_cli.pca import PARTIAL_FILE, PixelMoments, compute_pca, eigen, read_pca, write_pca
from alexnet_cli.prep import PrepOptions, prepare
from test_docs import check_documented_json

COV = np.array([[400.0, 150.0, 60.0], [150.0, 300.0, 90.0], [60.0, 90.0, 200.0]])
MEAN = np.array([128.0, 120.0, 110.0])
runner = CliRunner()


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """Prepared data whose training pixels are drawn from N(MEAN, COV): 256x256 PNG sources, which
    prep stores unchanged (no resize needed), so NumPy can see exactly the same pixels; and a
    validation split of black images, which the PCA (paper 5.1: "the training set") leaves out."""
    root = tmp_path_factory.mktemp("known")
    rng = np.random.default_rng(0)
    chol = np.linalg.cholesky(COV)
    pixels = []
    for k in range(2):
        (root / "src" / "train" / f"n0{k}").mkdir(parents=True)
        for i in range(3):
            x = np.clip(np.rint(MEAN + rng.standard_normal((256 * 256, 3)) @ chol.T), 0, 255).astype(np.uint8)
            Image.fromarray(x.reshape(256, 256, 3)).save(root / "src" / "train" / f"n0{k}" / f"{i}.png")
            pixels.append(x)
        (root / "src" / "val" / f"n0{k}").mkdir(parents=True)       # black: would move the mean and the
        Image.new("RGB", (256, 256)).save(root / "src" / "val" / f"n0{k}" / "0.png")   # covariance if read
    prepare(root / "src", root / "data", PrepOptions(workers=1, shard_size=4, block_size=2))
    return root / "data", np.concatenate(pixels).astype(np.float64)


@pytest.fixture(autouse=True)
def fresh_pass(known):
    """Every test starts without saved sums (a finished pass keeps them until write_pca)."""
    (known[0] / PARTIAL_FILE).unlink(missing_ok=True)


def test_covariance_and_eigenvectors_match_numpy(known):
    data, pixels = known
    stats = compute_pca(data)
    cov = np.cov(pixels.T, bias=True)
    assert stats.pixels == len(pixels) and stats.images == 6
    np.testing.assert_allclose(stats.mean_rgb, pixels.mean(0), rtol=0, atol=1e-9)
    ref_values, ref_vectors = np.linalg.eigh(cov)
    np.testing.assert_allclose(stats.eigenvalues, ref_values[::-1], rtol=1e-10)
    for i in range(3):  # COLUMN i belongs to eigenvalue i (up to sign)
        assert abs(stats.eigenvectors[:, i] @ ref_vectors[:, 2 - i]) == pytest.approx(1.0, abs=1e-9)
        np.testing.assert_allclose(cov @ stats.eigenvectors[:, i], stats.eigenvalues[i] * stats.eigenvectors[:, i],
                                   atol=1e-8)
    np.testing.assert_allclose(stats.eigenvectors.T @ stats.eigenvectors, np.eye(3), atol=1e-12)
    # and the known covariance, up to sampling error and the rounding to integers (+1/12)
    np.testing.assert_allclose(cov, COV + np.eye(3) / 12, rtol=0.03, atol=3)
    assert list(stats.eigenvalues) == sorted(stats.eigenvalues, reverse=True)


def test_moments_are_exact_and_order_free():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (100_000, 3), dtype=np.uint8)
    a, b = PixelMoments(), PixelMoments()
    a.add(x)
    for part in np.array_split(x[rng.permutation(len(x))], 7):
        b.add(part)
    assert a.n == b.n and a.s == b.s and a.ss == b.ss
    assert a.s == [int(v) for v in x.astype(np.int64).sum(0)]
    flat = PixelMoments()
    flat.add(np.full((1000, 1000, 3), 255, np.uint8))
    mean, cov = flat.covariance()
    assert (mean == 255).all() and (cov == 0).all()


def test_eigen_sign_convention_and_clipping():
    values, vectors = eigen(np.diag([1.0, 9.0, 4.0]))
    assert values.tolist() == [9.0, 4.0, 1.0]
    np.testing.assert_array_equal(np.abs(vectors), np.eye(3)[:, [1, 2, 0]])
    assert (vectors.min(axis=0) < 0).all()      # the largest component of each vector is negative


def test_sample_is_deterministic(known):
    data, _ = known
    a, b = compute_pca(data, sample=2), compute_pca(data, sample=2)
    full = compute_pca(data)
    assert a.images == 2 and a.pixels == 2 * 256 * 256
    np.testing.assert_array_equal(a.eigenvalues, b.eigenvalues)
    assert not np.array_equal(a.eigenvalues, full.eigenvalues)
    np.testing.assert_allclose(a.eigenvalues, full.eigenvalues, rtol=0.05)
    other = compute_pca(data, sample=2, seed=1)      # another seed, another subset
    assert other.images == 2 and not np.array_equal(other.eigenvalues, a.eigenvalues)


def test_a_sample_of_data_with_an_older_manifest_is_the_same_sample(known, tmp_path):
    """A manifest written before per-shard counts were recorded: the sample finds its images
    through the shards (shards.split_index), and picks the same ones."""
    import shutil

    data, _ = known
    old = tmp_path / "old"
    shutil.copytree(data, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["splits"]["train"]["shard_counts"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    a, b = compute_pca(data, sample=3, seed=2), compute_pca(old, sample=3, seed=2)
    assert b.images == 3 and b.pixels == a.pixels
    np.testing.assert_array_equal(a.eigenvalues, b.eigenvalues)


def test_pca_json_round_trip_and_errors(tmp_path, tiny_data, monkeypatch):
    with pytest.raises(DataError) as missing:                            # a folder that can be written: no aside
        read_pca(tmp_path)
    assert str(missing.value) == f"{tmp_path / 'pca.json'} not found: run `alexnet pca {tmp_path}` first (or train " \
                                 "with `pca_aug=False`)"
    monkeypatch.setattr("alexnet_cli.pca._read_only", lambda folder: True)      # as on a read-only mount
    with pytest.raises(DataError, match=r"pca.json not found \(where .* is read-only: compute the PCA into another "
                                        r"file with pca's `out` FILE, then train with `pca_file` FILE\): run "
                                        r"`alexnet pca .*` first \(or train with `pca_aug=False`\)") as missing:
        read_pca(tmp_path)                                                             # the library's terms
    assert flag_message(missing.value).endswith("pca's --out FILE, then train with --pca FILE): run "   # the CLI's
                                                f"`alexnet pca {tmp_path}` first (or train with --no-pca-aug)")
    monkeypatch.undo()
    stats = read_pca(tiny_data)
    path = write_pca(tmp_path, stats)
    data = json.loads(path.read_text())
    assert data["scale"] == "0-255" and len(data["eigenvalues"]) == 3 and np.shape(data["eigenvectors"]) == (3, 3)
    again = read_pca(tmp_path)
    np.testing.assert_array_equal(again.eigenvectors, stats.eigenvectors)
    (tmp_path / "pca.json").write_text(json.dumps({**data, "eigenvalues": [1, 2]}))
    with pytest.raises(DataError, match="expected 3 eigenvalues"):
        read_pca(tmp_path)


def test_cli_pca(tmp_path, known):
    data, pixels = known
    result = runner.invoke(app, ["pca", str(data), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    check_documented_json("pca", doc)
    assert doc["scale"] == "0-255" and doc["pixels"] == len(pixels)
    assert json.loads((data / "pca.json").read_text())["eigenvalues"] == doc["eigenvalues"]
    table = runner.invoke(app, ["pca", str(data)])
    assert table.exit_code == 0 and "eigenvector" in table.stdout
    (tmp_path / "empty").mkdir()
    none = runner.invoke(app, ["pca", str(tmp_path / "empty")])
    assert none.exit_code == 1 and none.stderr.startswith("Error: ") and "alexnet prep" in none.stderr
    assert runner.invoke(app, ["pca", str(tmp_path / "nope")]).exit_code == 2


@pytest.mark.gpu
def test_cuda_sums_equal_cpu_sums(known):
    data, _ = known
    cpu = compute_pca(data)
    (data / PARTIAL_FILE).unlink()                  # else the second pass would resume the first's sums
    gpu = compute_pca(data, device="cuda")
    np.testing.assert_array_equal(cpu.eigenvalues, gpu.eigenvalues)
    np.testing.assert_array_equal(cpu.mean_rgb, gpu.mean_rgb)


class _Recorder:
    """A Reporter that keeps its log lines and task totals, and can stop a pass (like a
    kill) after `stop_after` batches."""

    def __init__(self, stop_after: int | None = None):
        self.lines, self.totals, self.batches, self.stop_after = [], [], 0, stop_after

    @contextlib.contextmanager
    def task(self, description, total, unit="it", done=0):
        self.totals.append(total)
        yield self

    def advance(self, n=1, **info):
        self.batches += 1
        if self.batches == self.stop_after:
            raise KeyboardInterrupt

    def log(self, message, mentions=()):
        self.lines.append(message)


def test_an_interrupted_pass_resumes_to_the_same_result(known, tmp_path):
    data, _ = known
    whole = compute_pca(data, batch_size=2)
    (data / PARTIAL_FILE).unlink()                             # its finished sums, kept until write_pca
    with pytest.raises(KeyboardInterrupt):      # killed after 2 of 3 batches: sums of 4 images saved
        compute_pca(data, batch_size=2, save_every=1, progress=_Recorder(stop_after=2))
    saved = json.loads((data / PARTIAL_FILE).read_text())
    assert saved["images"] == 4 and saved["sums"]["n"] == 4 * 256 * 256
    again = _Recorder()
    resumed = compute_pca(data, batch_size=2, save_every=1, progress=again)
    assert again.totals == [2] and again.batches == 1          # only the last batch was read
    assert any("resuming the pass at image 4" in line for line in again.lines)
    # the finished pass stays saved until pca.json holds it: a kill before that loses nothing
    assert json.loads((data / PARTIAL_FILE).read_text())["images"] == 6
    third = _Recorder()
    assert compute_pca(data, batch_size=2, progress=third).eigenvalues.tolist() == whole.eigenvalues.tolist()
    assert third.batches == 0
    write_pca(tmp_path, resumed)                               # (another folder: the fixture's stays clean)
    assert not (data / PARTIAL_FILE).exists()
    for got in (resumed, compute_pca(data)):                   # the default batch size agrees too
        np.testing.assert_array_equal(got.eigenvalues, whole.eigenvalues)
        np.testing.assert_array_equal(got.eigenvectors, whole.eigenvectors)
        assert (got.pixels, got.images) == (whole.pixels, whole.images)


@pytest.mark.parametrize("damage", ["other shards", "other batch size", "corrupt"])
def test_a_partial_file_that_does_not_fit_is_ignored(known, damage):
    data, _ = known
    whole = compute_pca(data, batch_size=2)
    (data / PARTIAL_FILE).unlink()                             # its finished sums, kept until write_pca
    with pytest.raises(KeyboardInterrupt):
        compute_pca(data, batch_size=2, save_every=1, progress=_Recorder(stop_after=2))
    partial = data / PARTIAL_FILE
    saved = json.loads(partial.read_text())
    saved["sums"]["n"] += 1                  # would show in the result if these sums were used
    if damage == "other shards":
        saved["data"] = "0" * 16
    elif damage == "other batch size":
        saved["batch_size"] = 4
    partial.write_text("{not json" if damage == "corrupt" else json.dumps(saved))
    again = _Recorder()
    got = compute_pca(data, batch_size=2, progress=again)
    assert again.totals == [6] and any("starting afresh" in line for line in again.lines)
    np.testing.assert_array_equal(got.eigenvalues, whole.eigenvalues)
    assert got.pixels == whole.pixels and json.loads(partial.read_text())["images"] == 6
    partial.unlink()


def test_sums_that_do_not_match_their_image_count_are_ignored(known):
    data, _ = known
    whole = compute_pca(data, batch_size=2)
    (data / PARTIAL_FILE).unlink()                             # its finished sums, kept until write_pca
    with pytest.raises(KeyboardInterrupt):
        compute_pca(data, batch_size=2, save_every=1, progress=_Recorder(stop_after=2))
    partial = data / PARTIAL_FILE
    saved = json.loads(partial.read_text())
    saved["sums"]["n"] += 1                                    # a hand-edited file, same key
    partial.write_text(json.dumps(saved))
    again = _Recorder()
    assert compute_pca(data, batch_size=2, progress=again).eigenvalues.tolist() == whole.eigenvalues.tolist()
    assert again.totals == [6] and any("inconsistent" in line for line in again.lines)
    partial.unlink()


def test_a_read_only_data_folder_still_gets_its_pca(known, monkeypatch):
    from alexnet_cli import pca as pca_module

    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(pca_module, "write_atomic", refuse)
    data, _ = known
    said = _Recorder()
    got = compute_pca(data, batch_size=2, save_every=1, progress=said)
    assert got.images == 6 and sum("cannot save" in line for line in said.lines) == 1


def test_cli_pca_seed_is_checked_like_every_commands(known, tmp_path):
    """--seed -5 --sample 3 was a ValueError from NumPy ("run alexnet --debug"), exit 1; without
    --sample it was accepted. Now: train's range and message, exit 2, before anything is read."""
    data, _ = known
    for args in (["--seed", "-5", "--sample", "3"], ["--seed", "-5"], ["--seed", str(2**63)]):
        bad = runner.invoke(app, ["pca", str(data), *args])
        assert bad.exit_code == 2, bad.output
        assert bad.stderr.startswith("Error: --seed must be a whole number from 0 to 9223372036854775807, got ")
        assert len(bad.stderr.splitlines()) == 1
    # into a file of its own: a sample in the module's DATA/pca.json made test_cli_pca, run after it, fail
    big = runner.invoke(app, ["pca", str(data), "--sample", "3", "--seed", str(2**63 - 1), "--out",
                              str(tmp_path / "sample.json"), "--json"])
    assert big.exit_code == 0 and json.loads(big.stdout)["images"] == 3, big.output
    with pytest.raises(UsageError, match="seed must be a whole number"):
        compute_pca(data, sample=3, seed=-1)


def test_a_read_only_data_folder_keeps_its_pca_without_a_pass(tiny_data, monkeypatch):
    """On a read-only data folder the pass ran to its end (hours on ImageNet), then failed naming
    a hidden temporary file; then the command stopped first, naming pca.json (exit 2), even where
    pca.json already held this PCA. Now that PCA is kept, with a note, and no pass runs (a
    read-only folder without one: tests/test_pca_elsewhere.py)."""
    from alexnet_cli.cli import common

    monkeypatch.setattr(common, "_can_create_in", lambda folder: False)         # as on a read-only mount
    monkeypatch.setattr("alexnet_cli.pca.compute_pca", lambda *a, **k: pytest.fail("the pass ran"))
    result = runner.invoke(app, ["pca", str(tiny_data), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["eigenvalues"] == json.loads((tiny_data / "pca.json").read_text())["eigenvalues"]
    assert result.stderr.strip() == (f"Note: {tiny_data} is read-only: its pca.json, a PCA of all its training "
                                     "images, is kept as it is")
