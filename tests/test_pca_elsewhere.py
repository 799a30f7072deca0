"""The PCA outside the data folder (a group's read-only shared ImageNet): `alexnet pca DATA --out
FILE` (its unfinished pass's sums beside FILE), `alexnet train DATA --pca FILE`; the training
shards' key in pca.json, by which a PCA of other data is refused; `alexnet pca` on a read-only
DATA that already holds its PCA."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from alexnet_cli.cli.app import app
from alexnet_cli.config import resolve_model_config, resolve_train_config
from alexnet_cli.pca import PCA_FILE, compute_pca, read_pca, write_pca
from alexnet_cli.progress import NullReporter
from alexnet_cli.shards import data_key, read_manifest
from alexnet_cli.train import RunOptions, Trainer
from test_pca import _Recorder

runner = CliRunner()
FAST = ["--device", "cpu", "--batch-size", "8", "--log-every", "1"]


@pytest.fixture(scope="module")
def bare(tiny_data, tmp_path_factory) -> Path:
    """A copy of tiny_data without pca.json, as a shared folder nobody ran `pca` in. READ-ONLY."""
    data = Path(shutil.copytree(tiny_data, tmp_path_factory.mktemp("bare") / "data"))
    (data / PCA_FILE).unlink()
    return data


@pytest.fixture
def read_only(monkeypatch):
    """Every folder refuses new files, as a read-only mount does (for root too, whom chmod does
    not stop); the pass must not run."""
    from alexnet_cli.cli import common
    monkeypatch.setattr(common, "_can_create_in", lambda folder: False)
    monkeypatch.setattr("alexnet_cli.pca._read_only", lambda folder: True)
    monkeypatch.setattr("alexnet_cli.pca.compute_pca", lambda *a, **k: pytest.fail("the pass ran"))


def _copy(data: Path, to: Path, pca: dict | None = None) -> Path:
    """A copy of `data`, with `pca` as its pca.json (None: as it is)."""
    out = Path(shutil.copytree(data, to))
    if pca is not None:
        (out / PCA_FILE).write_text(json.dumps(pca))
    return out


def _pca_doc(data: Path, **changes) -> dict:
    doc = json.loads((data / PCA_FILE).read_text())
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}           # a None change: the field left out


def _trainer(data: Path, out: Path, pca_file: Path | None) -> Trainer:
    return Trainer(data, out, resolve_model_config("paper"), resolve_train_config("paper", batch_size=8),
                   RunOptions(device="cpu", pca_file=pca_file), "paper", NullReporter())


def _one_error(result, code: int, *words: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert all(w in lines[0] for w in words), (words, lines[0])
    return lines[0]


def test_pca_out_elsewhere_then_train_with_it(bare, tiny_data, tmp_path):
    made = tmp_path / "mine" / "imagenet-pca.json"
    result = runner.invoke(app, ["pca", str(bare), "--out", str(made), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["path"] == str(made) and not (bare / PCA_FILE).exists()
    doc = json.loads(made.read_text())
    assert doc["data_key"] == data_key(read_manifest(bare), "train")        # the shards it was computed from
    assert doc["eigenvalues"] == json.loads((tiny_data / PCA_FILE).read_text())["eigenvalues"]
    assert sorted(p.name for p in made.parent.iterdir()) == [made.name]     # the pass's sums removed
    augment = _trainer(bare, tmp_path / "t", made).augment                  # the colour noise is FILE's
    np.testing.assert_array_equal(augment.eigenvectors.numpy(), np.float32(doc["eigenvectors"]))
    assert augment.noise_scale is not None and float(augment.noise_scale.min()) > 0
    run = tmp_path / "run"
    trained = runner.invoke(app, ["train", str(bare), "--out", str(run), "--pca", str(made), "--max-steps", "1",
                                  *FAST, "--json"])
    assert trained.exit_code == 0, trained.output
    config = json.loads((run / "config.json").read_text())
    assert config["run"]["pca_file"] == str(made) and config["pca_key"] is not None
    missing = runner.invoke(app, ["train", str(bare), "--out", str(tmp_path / "r2"), *FAST])
    # bare can be written: no aside on read-only folders (test_the_read_only_aside_only_where_data_is_read_only)
    _one_error(missing, 1, f"{bare / PCA_FILE} not found: run `alexnet pca {bare}` first (or train with --no-pca-aug)")
    nowhere = runner.invoke(app, ["train", str(bare), "--out", str(tmp_path / "r3"), "--pca", str(tmp_path / "no"),
                                  *FAST])
    _one_error(nowhere, 1, f"{tmp_path / 'no'} not found: compute it with `alexnet pca {bare} --out "
               f"{tmp_path / 'no'}` first")
    both = runner.invoke(app, ["train", str(bare), "--out", str(tmp_path / "r4"), "--pca", str(made),
                               "--no-pca-aug", *FAST])
    _one_error(both, 2, "--pca FILE is the PCA of the colour noise, which --no-pca-aug turns off")
    folder = runner.invoke(app, ["train", str(bare), "--out", str(tmp_path / "r5"), "--pca", str(made.parent), *FAST])
    _one_error(folder, 2, f"{made.parent} is a folder, not a PCA file: give the file `alexnet pca` wrote (its --out)")
    assert not any((tmp_path / r).exists() for r in ("r2", "r3", "r4", "r5"))


def test_a_sample_pca_of_the_shards_trains(bare, tmp_path):
    """`pca --sample N` records the training shards' key too (its images are drawn from them), so
    train takes it; it is not mistaken for another data set's."""
    made = tmp_path / "sample.json"
    assert runner.invoke(app, ["pca", str(bare), "--sample", "6", "--out", str(made)]).exit_code == 0
    assert json.loads(made.read_text())["data_key"] == data_key(read_manifest(bare), "train")
    trained = runner.invoke(app, ["train", str(bare), "--out", str(tmp_path / "run"), "--pca", str(made),
                                  "--max-steps", "1", *FAST])
    assert trained.exit_code == 0, trained.output


def test_pca_out_is_no_file_of_the_data_folder_but_its_own_pca_json(bare, tmp_path):
    data = _copy(bare, tmp_path / "data")
    inside = runner.invoke(app, ["pca", str(data), "--out", str(data / "mine.json")])
    _one_error(inside, 2, f"--out {data / 'mine.json'} is inside the data folder {data}")
    folder = runner.invoke(app, ["pca", str(data), "--out", str(tmp_path)])
    _one_error(folder, 2, f"{tmp_path} is a folder; give a file")
    own = runner.invoke(app, ["pca", str(data), "--out", str(data / ".." / "data" / PCA_FILE)])   # the default
    assert own.exit_code == 0 and (data / PCA_FILE).is_file(), own.output


def test_a_killed_pass_with_out_resumes_beside_its_file(bare, tmp_path):
    out = tmp_path / "pcas" / "shared.json"
    out.parent.mkdir()
    whole = compute_pca(bare, batch_size=16, out=tmp_path / "whole.json")
    with pytest.raises(KeyboardInterrupt):             # killed after 2 of 3 batches: sums of 32 images saved
        compute_pca(bare, batch_size=16, save_every=1, progress=_Recorder(stop_after=2), out=out)
    partial = out.parent / "shared.partial.json"
    assert json.loads(partial.read_text())["images"] == 32
    assert not (bare / "pca.partial.json").exists() and not out.exists()
    again = _Recorder()
    resumed = compute_pca(bare, batch_size=16, save_every=1, progress=again, out=out)
    assert again.totals == [16] and any(f"resuming the pass at image 32 of 48 ({partial})" in s for s in again.lines)
    np.testing.assert_array_equal(resumed.eigenvalues, whole.eigenvalues)
    np.testing.assert_array_equal(resumed.eigenvectors, whole.eigenvectors)
    assert write_pca(bare, resumed, out=out) == out and not partial.exists()
    assert read_pca(bare, out).data_key == data_key(read_manifest(bare), "train")


def test_a_pca_of_other_shards_is_refused(bare, tiny_data, three_step_data, tmp_path):
    other = tmp_path / "other.json"
    shutil.copy(three_step_data / PCA_FILE, other)
    theirs = json.loads(other.read_text())["data_key"]
    assert theirs != data_key(read_manifest(bare), "train")
    result = runner.invoke(app, ["train", str(bare), "--out", str(tmp_path / "run"), "--pca", str(other), *FAST])
    _one_error(result, 1, f"{other} is a PCA of other data: of training shards with key {theirs}, not {bare}'s",
               f"`alexnet pca {bare} --out FILE` and train with --pca FILE")
    copied = _copy(tiny_data, tmp_path / "copied", _pca_doc(three_step_data))   # another folder's pca.json
    result = runner.invoke(app, ["train", str(copied), "--out", str(tmp_path / "run"), *FAST])
    _one_error(result, 1, f"{copied / PCA_FILE} is a PCA of other data",
               f"`alexnet pca {copied} --overwrite`")
    assert not (tmp_path / "run").exists()
    # and `pca --out` onto it stops before the pass, as for any other result
    refused = runner.invoke(app, ["pca", str(bare), "--out", str(other)])
    _one_error(refused, 1, f"{other} already holds a PCA", "this pass is over other training shards")


def test_an_older_pca_json_without_the_key_still_works(tiny_data, tmp_path):
    older = _pca_doc(tiny_data, data_key=None)
    data = _copy(tiny_data, tmp_path / "data", older)
    assert read_pca(data).data_key is None
    assert _trainer(data, tmp_path / "run", None).augment.noise_scale is not None
    elsewhere = tmp_path / "older.json"
    elsewhere.write_text(json.dumps(older))
    assert _trainer(data, tmp_path / "run2", elsewhere).augment.noise_scale is not None
    again = runner.invoke(app, ["pca", str(data), "--json"])           # a rerun adds the key, same result
    assert again.exit_code == 0, again.output
    assert json.loads((data / PCA_FILE).read_text())["data_key"] == data_key(read_manifest(data), "train")


def test_pca_on_a_read_only_data_folder_keeps_a_pca_of_its_shards(tiny_data, three_step_data, tmp_path, read_only):
    older = _copy(tiny_data, tmp_path / "older", _pca_doc(tiny_data, data_key=None))
    result = runner.invoke(app, ["pca", str(older)])                  # an older file: by its image count
    assert result.exit_code == 0, result.output
    assert f"kept in {older / PCA_FILE}" in result.stdout and "eigenvector" in result.stdout
    assert result.stderr.strip() == f"Note: {older} is read-only: its pca.json, a PCA of all its training images, " \
                                    "is kept as it is"
    fix = ("{} is not a writable folder: compute the PCA into another file with `alexnet pca {} --out FILE`, "
           "then train with `alexnet train {} --pca FILE`")
    cases = {"none": None, "other shards": _pca_doc(three_step_data),
             "a sample": _pca_doc(tiny_data, images=3, data_key=None)}
    for name, doc in cases.items():
        data = _copy(tiny_data, tmp_path / name.replace(" ", "_"), doc)
        if doc is None:
            (data / PCA_FILE).unlink()
        result = runner.invoke(app, ["pca", str(data)])
        _one_error(result, 2, f"Invalid value for DATA: cannot write {data / PCA_FILE}: "
                   + fix.format(data, data, data))
    for args in (["--sample", "5"], ["--overwrite"]):                 # a pass that would give another result
        result = runner.invoke(app, ["pca", str(older), *args])
        _one_error(result, 2, "not a writable folder: compute the PCA into another file")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into a chmod a-w folder")
def test_pca_and_train_on_a_really_read_only_data_folder(tiny_data, bare, tmp_path):
    kept, none = _copy(tiny_data, tmp_path / "kept"), _copy(bare, tmp_path / "none")
    for data in (kept, none):
        data.chmod(0o555)
    try:
        result = runner.invoke(app, ["pca", str(kept), "--json"])
        assert result.exit_code == 0 and "is read-only" in result.stderr, result.output
        _one_error(runner.invoke(app, ["pca", str(none)]), 2, f"alexnet pca {none} --out FILE")
        out = tmp_path / "pca.json"
        assert runner.invoke(app, ["pca", str(none), "--out", str(out)]).exit_code == 0
        trained = runner.invoke(app, ["train", str(none), "--out", str(tmp_path / "run"), "--pca", str(out),
                                      "--max-steps", "1", *FAST])
        assert trained.exit_code == 0, trained.output
    finally:
        for data in (kept, none):
            data.chmod(0o755)


def test_resume_with_another_pca_is_refused(bare, tiny_data, tmp_path):
    first = tmp_path / "a.json"
    shutil.copy(tiny_data / PCA_FILE, first)
    run = tmp_path / "run"
    args = ["train", str(bare), "--out", str(run), *FAST]
    assert runner.invoke(app, [*args, "--pca", str(first), "--max-steps", "1"]).exit_code == 0
    other = tmp_path / "b.json"                                      # the same shards' key, other values
    doc = json.loads(first.read_text())
    other.write_text(json.dumps({**doc, "eigenvalues": [2 * v for v in doc["eigenvalues"]]}))
    refused = runner.invoke(app, [*args, "--pca", str(other), "--max-steps", "2", "--resume"])
    _one_error(refused, 1, f"{run / 'checkpoints' / 'last.pt'} was trained on other data (the PCA in {other} is not "
                           f"the one it trained with (from {first}))")
    same = tmp_path / "same.json"                                    # the same PCA under another name: its content
    shutil.copy(first, same)                                         # counts
    resumed = runner.invoke(app, [*args, "--pca", str(same), "--max-steps", "2", "--resume", "--json"])
    assert resumed.exit_code == 0 and json.loads(resumed.stdout)["step"] == 2, resumed.output


def test_ablate_gives_its_pca_file_to_every_run(bare, tiny_data, tmp_path):
    made = write_pca(bare, read_pca(tiny_data), out=tmp_path / "pca" / "mine.json")     # bare has no pca.json
    out = tmp_path / "ablations"
    result = runner.invoke(app, ["ablate", str(bare), "--out", str(out), "--variants", "no-pca-aug", "--pca", str(made),
                                 "--max-steps", "1", "--batch-size", "4", "--crops", "1", "--device", "cpu",
                                 "--log-every", "1", "--workers", "1", "--eval-batch-size", "16"])
    assert result.exit_code == 0, result.output
    recorded = {name: json.loads((out / name / "config.json").read_text())["run"]["pca_file"]
                for name in ("full", "no-pca-aug")}
    assert recorded == {"full": str(made), "no-pca-aug": None}          # without colour noise: no PCA read


def test_the_read_only_aside_only_where_data_is_read_only(bare, tmp_path, monkeypatch):
    """"not found (where DATA is read-only: ...)" was said of every DATA, writable or not
    (test_pca_out_elsewhere_then_train_with_it: a writable one)."""
    monkeypatch.setattr("alexnet_cli.pca._read_only", lambda folder: folder == bare)     # as a read-only mount
    missing = runner.invoke(app, ["train", str(bare), "--out", str(tmp_path / "run"), *FAST])
    _one_error(missing, 1, f"{bare / PCA_FILE} not found (where {bare} is read-only: compute the PCA into another "
               "file with pca's --out FILE, then train with --pca FILE): run `alexnet pca", "--no-pca-aug")
