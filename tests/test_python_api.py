"""A user can do from Python what the CLI does (STYLE.md), without traps the CLI does not have:
the recipe a run records, the split a neighbour search keeps, one rule for the codes' bits, one
path where a list is expected, the checks the CLI makes before any work, warning filters left
alone, and the same JSON documents as the commands print."""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from alexnet_cli import ablate as ablate_module
from alexnet_cli import neighbors as neighbors_module
from alexnet_cli.ablate import ablate
from alexnet_cli.cli.app import app
from alexnet_cli.checkpoint import save_checkpoint
from alexnet_cli.cli.flags import flag_message
from alexnet_cli.codes import codes_for_split, make_codes
from alexnet_cli.config import recipe_of, resolve_model_config, resolve_train_config
from alexnet_cli.errors import AlexnetError, UsageError
from alexnet_cli.evaluate import evaluate
from alexnet_cli.features import extract_features, read_features_info
from alexnet_cli.figures import check_picture_path
from alexnet_cli.kernels import kernel_report
from alexnet_cli.model import AlexNet
from alexnet_cli.neighbors import Neighbor, QueryResult, draw_neighbors, find_neighbors
from alexnet_cli.paths import path_list
from alexnet_cli.pca import compute_pca, write_pca
from alexnet_cli.predict import draw_predictions, predict
from alexnet_cli.prep import PrepOptions, prepare
from alexnet_cli.report import report
from alexnet_cli.shards import read_manifest, read_mean_image
from alexnet_cli.train import RunOptions, train

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tiny_data, tmp_path_factory) -> Path:
    """A randomly initialised 4-class network of the tiny data's classes, with its mean image."""
    torch.manual_seed(0)
    model = AlexNet(num_classes=4)
    manifest = read_manifest(tiny_data)
    path = tmp_path_factory.mktemp("ck") / "ck.pt"
    save_checkpoint(path, {"model": model.state_dict(), "classes": list(manifest.classes),
                           "class_names": list(manifest.class_names),
                           "mean_image": torch.from_numpy(read_mean_image(tiny_data)),
                           "config": {"recipe": "paper", "model": dataclasses.asdict(model.config),
                                      "train": {"mean_crop": "crop"}}})
    return path


@pytest.fixture
def data(tiny_data, tmp_path) -> Path:
    """A copy of the tiny data folder, which the features cache and pca.json are written into."""
    return Path(shutil.copytree(tiny_data, tmp_path / "data"))


def _an_image(tiny_tree) -> Path:
    return sorted((tiny_tree / "val").rglob("*.JPEG"))[0]


# ---------------------------------------------------------------------------- 1. the recipe

def test_recipe_of_tells_the_recipe_the_configs_were_resolved_from():
    for recipe in ("paper", "code"):
        assert recipe_of(resolve_model_config(recipe, dropout=0.3),
                         resolve_train_config(recipe, batch_size=8, epochs=1)) == recipe
    # the code's network with the paper's training: neither recipe's, so the caller must say
    with pytest.raises(UsageError, match=r"^recipe cannot be told .*not paper's: conv1_order.*not code's: aug_c") as e:
        recipe_of(resolve_model_config("code"), resolve_train_config("paper"))
    assert e.value.field == "recipe"
    # one recipe with a field or two set otherwise ("the paper plus one change"): that recipe
    assert recipe_of(resolve_model_config("code", lrn_alpha_over_n=False), resolve_train_config("code")) == "code"
    assert recipe_of(resolve_model_config("paper", within_map_norm=False),
                     resolve_train_config("paper", lr_schedule="code", mean_crop="center")) == "paper"
    # the paper's network with the code's training: 7 fields against 5, told apart by no one
    with pytest.raises(UsageError, match="^recipe cannot be told"):
        recipe_of(resolve_model_config("paper"), resolve_train_config("code"))
    # named, it is taken as given (that mix is what `--recipe code --lrn-alpha-as-written` trains) but checked
    mixed = resolve_model_config("code", lrn_alpha_over_n=False)
    assert recipe_of(mixed, resolve_train_config("code"), "code") == "code"
    with pytest.raises(UsageError, match="^recipe must be one of paper, code"):
        recipe_of(resolve_model_config(), resolve_train_config(), "papper")


def test_train_records_the_code_recipe_without_being_told_twice(tiny_data, tmp_path):
    """The audit's call: it was recorded as the paper's recipe, with 12 "changed" settings."""
    run_dir = tmp_path / "run_code"
    train(tiny_data, run_dir, resolve_model_config("code"), resolve_train_config("code", batch_size=8, epochs=1),
          RunOptions(device="cpu", max_steps=1, workers=1))
    [run] = report([run_dir])
    assert run.recipe == "code"
    assert set(run.changed) <= {"num_classes", "batch_size", "epochs"}, run.changed   # asked for, or fitted to the data


def test_train_refuses_configs_of_two_recipes_before_writing_anything(tiny_data, tmp_path):
    with pytest.raises(UsageError, match="^recipe cannot be told"):
        train(tiny_data, tmp_path / "run", resolve_model_config("code"), resolve_train_config("paper"),
              RunOptions(device="cpu", max_steps=1))
    assert not (tmp_path / "run").exists()


def test_ablate_passes_the_recipe_the_configs_were_resolved_from(tiny_data, tmp_path, monkeypatch):
    seen = []

    def fake_train(*args, recipe, **kwargs):
        seen.append(recipe)
        raise AlexnetError("stop here")

    monkeypatch.setattr(ablate_module, "train", fake_train)
    with pytest.raises(AlexnetError, match="stop here"):
        ablate(tiny_data, tmp_path / "abl", resolve_model_config("code"), resolve_train_config("code"),
               RunOptions(device="cpu", max_steps=1), variants=["no-lrn"])
    assert seen == ["code"]
    with pytest.raises(UsageError, match="^recipe cannot be told"):
        ablate(tiny_data, tmp_path / "abl2", resolve_model_config("paper"), resolve_train_config("code"))


# ---------------------------------------------------------------------------- 2. the split searched

def test_a_query_result_keeps_the_split_it_was_searched_in(data, checkpoint, tiny_tree, tmp_path):
    [result] = find_neighbors(checkpoint, data, [_an_image(tiny_tree)], k=3, split="val", device="cpu")
    assert result.split == "val" and result.to_json()["split"] == "val"
    out = draw_neighbors([result], data, tmp_path / "n.png")
    with Image.open(out) as img:
        assert img.width > 0


def test_draw_neighbors_reads_each_result_from_its_own_split(tiny_data, tiny_tree, tmp_path, monkeypatch):
    asked = []
    real = neighbors_module.read_split_images

    def spy(data_dir, split, indices):
        asked.append((split, list(indices)))
        return real(data_dir, split, indices)

    monkeypatch.setattr(neighbors_module, "read_split_images", spy)
    query = str(_an_image(tiny_tree))
    hits = [Neighbor(i, f"x{i}.JPEG", 0, "zero", 1.0 * i, "n0") for i in (15, 2)]
    results = [QueryResult(query, hits, split="val"), QueryResult(query, hits[:1], split="train")]
    draw_neighbors(results, tiny_data, tmp_path / "n.png")
    assert asked == [("val", [15, 2]), ("train", [15])]


# ---------------------------------------------------------------------------- 3. one rule for bits

@pytest.mark.parametrize("call", [
    lambda tmp: codes_for_split(tmp / "ck.pt", tmp, bits=512),
    lambda tmp: make_codes(tmp / "f.h5", bits=512),
    lambda tmp: find_neighbors(tmp / "ck.pt", tmp, [tmp / "q.jpg"], codes=True, bits=512),
])
def test_the_codes_take_the_same_bits_everywhere(tmp_path, call):
    with pytest.raises(UsageError) as e:
        call(tmp_path)
    assert str(e.value) == "bits must be one of 64, 128, 256, got 512" and e.value.field == "bits"


# ---------------------------------------------------------------------------- 4. one path for a list

def test_path_list_takes_one_path_or_many():
    assert path_list("a/b.pt") == ["a/b.pt"]
    assert path_list(Path("a/b.pt")) == [Path("a/b.pt")]
    assert path_list(("x", Path("y"))) == ["x", Path("y")]
    assert path_list(p for p in ["z"]) == ["z"]


def test_one_checkpoint_or_image_may_be_given_as_a_path(tiny_data, checkpoint, tiny_tree):
    many = evaluate([checkpoint], tiny_data, device="cpu")
    for one in (checkpoint, str(checkpoint)):
        result = evaluate(one, tiny_data, device="cpu")
        assert (result.top1_error, result.n, result.checkpoints) == (many.top1_error, many.n, [str(checkpoint)])
    image = _an_image(tiny_tree)
    [listed] = predict(checkpoint, [image], device="cpu")
    for one in (image, str(image)):
        [pred] = predict(checkpoint, one, device="cpu")
        assert pred.image == str(image) and [t.wnid for t in pred.top] == [t.wnid for t in listed.top]


def test_one_query_may_be_given_as_a_path(data, checkpoint, tiny_tree):
    image = _an_image(tiny_tree)
    [listed] = find_neighbors(checkpoint, data, [image], k=2, split="val", device="cpu")
    [one] = find_neighbors(checkpoint, data, str(image), k=2, split="val", device="cpu")
    assert one.query == str(image) and [n.index for n in one.neighbors] == [n.index for n in listed.neighbors]


def test_one_run_folder_may_be_given_as_a_path(tmp_path):
    folder = tmp_path / "not_a_run"
    folder.mkdir()
    for one in (str(folder), folder):
        with pytest.raises(AlexnetError) as e:
            report(one)
        assert str(e.value).startswith(f"{folder} is not a training run's folder"), str(e.value)


# ---------------------------------------------------------------------------- 5. the checks the CLI made

@pytest.mark.parametrize("sample", [0, -1, True, 2.5])
def test_compute_pca_refuses_a_sample_that_is_no_count(tiny_data, sample):
    with pytest.raises(UsageError) as e:
        compute_pca(tiny_data, sample=sample)
    assert e.value.field == "sample" and str(e.value).startswith("sample must be positive")
    assert flag_message(e.value).startswith("--sample must be positive")


def test_predict_refuses_a_batch_size_below_one(checkpoint, tiny_tree):
    with pytest.raises(UsageError) as e:
        predict(checkpoint, [_an_image(tiny_tree)], batch_size=0, device="cpu")
    assert e.value.field == "batch_size" and flag_message(e.value) == "--batch-size must be positive, got 0"


def test_kernel_report_refuses_a_scale_below_one(checkpoint, tmp_path):
    with pytest.raises(UsageError) as e:
        kernel_report(checkpoint, tmp_path / "k.png", scale=0)
    assert e.value.field == "scale" and flag_message(e.value).startswith("--scale must be")
    assert not (tmp_path / "k.png").exists()


def test_every_picture_is_refused_a_suffix_that_names_no_format(checkpoint, tiny_data, tiny_tree, tmp_path):
    """`k.txt` got PNG bytes; now each drawing function refuses it first, with the CLI's message."""
    image = _an_image(tiny_tree)
    [pred] = predict(checkpoint, [image], device="cpu")
    hit = QueryResult(str(image), [Neighbor(0, "x.JPEG", 0, "zero", 0.0, "n0")], split="val")
    calls = {"kernels": lambda out: kernel_report(checkpoint, out).out,
             "predictions": lambda out: draw_predictions([pred], out),
             "neighbors": lambda out: draw_neighbors([hit], tiny_data, out)}
    for name, call in calls.items():
        out = tmp_path / f"{name}.txt"
        with pytest.raises(UsageError) as e:
            call(out)
        assert e.value.field == "out" and not out.exists()
        assert flag_message(e.value) == (f"--out {out}: the suffix names the format; use one of .bmp, .gif, .jpeg, "
                                         ".jpg, .png, .tif, .tiff, .webp")
        assert call(tmp_path / f"{name}.PNG").read_bytes().startswith(b"\x89PNG")
    assert check_picture_path(str(tmp_path / "a.JpG")) == tmp_path / "a.JpG"


# ---------------------------------------------------------------------------- 6. warning filters

def test_the_gpu_decoder_leaves_the_warning_filters_as_they_were(tiny_tree):
    from alexnet_cli import jpeg

    blob = torch.frombuffer(bytearray(_an_image(tiny_tree).read_bytes()), dtype=torch.uint8)
    for module in ("torchcodec.decoders", "torchvision.io"):   # first the libraries' own (lazy) imports,
        try:                                                  # which add filters of their own (sympy's)
            importlib.import_module(module).decode_jpeg([blob])
        except Exception:
            pass
    jpeg.gpu_jpeg_decoder.cache_clear()
    before = list(warnings.filters)
    decoder = jpeg.gpu_jpeg_decoder()
    if decoder is None:
        pytest.skip("no GPU JPEG decoder installed")
    [chw] = decoder([blob], "cpu")
    assert chw.shape[0] == 3
    assert list(warnings.filters) == before


# ---------------------------------------------------------------------------- 7. the same JSON

def test_kernels_features_and_pca_give_python_the_documents_the_cli_prints(data, checkpoint, tmp_path):
    out = tmp_path / "k.png"
    cli = runner.invoke(app, ["kernels", str(checkpoint), "--out", str(out), "--scale", "2", "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout) == kernel_report(checkpoint, out, scale=2).to_json()

    features = tmp_path / "f.h5"
    extract_features(checkpoint, data, features, split="val", device="cpu")
    cli = runner.invoke(app, ["features", str(checkpoint), str(data), "--out", str(features), "--split", "val",
                              "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout) == read_features_info(features).to_json()

    cli = runner.invoke(app, ["pca", str(data), "--sample", "3", "--overwrite", "--json"])   # data has a full pass's
    assert cli.exit_code == 0, cli.output
    stats = compute_pca(data, sample=3)
    assert json.loads(cli.stdout) == stats.to_json(write_pca(data, stats))


def test_prep_gives_python_the_document_the_cli_prints(tiny_tree, tmp_path, monkeypatch):
    result = prepare(tiny_tree, tmp_path / "d", PrepOptions(shard_size=16, workers=1))
    monkeypatch.setattr("alexnet_cli.prep.prepare", lambda *args, **kwargs: result)
    cli = runner.invoke(app, ["prep", str(tiny_tree), str(tmp_path / "d"), "--json"])
    assert cli.exit_code == 0, cli.output
    doc = result.to_json()
    assert json.loads(cli.stdout) == doc
    assert doc["out"] == str(tmp_path / "d") and doc["splits"]["val"]["count"] == 16
