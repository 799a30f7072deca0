"""`alexnet predict` (alexnet_cli.predict): odd image files, the crops, the JSON shape and the
figure-4 picture."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from alexnet_cli.checkpoint import save_checkpoint
from alexnet_cli.cli.app import app
from alexnet_cli.errors import DataError, UsageError
from alexnet_cli.images import load_image
from alexnet_cli.model import AlexNet
from alexnet_cli.predict import predict
from test_docs import check_documented_json

runner = CliRunner()
CLASSES = ["n01000001", "n01000002", "n01000003", "n01000004"]
NAMES = ["red thing", "green thing", "blue thing", "grey thing"]
TEN = [(0, 0, False), (0, 32, False), (32, 0, False), (32, 32, False), (16, 16, False),
       (0, 0, True), (0, 32, True), (32, 0, True), (32, 32, True), (16, 16, True)]


def _random_model(num_classes: int, seed: int) -> AlexNet:
    """A random net whose softmax is neither flat nor saturated: no biases, and fc8 blind to
    the features' common level (a random net's features differ little between images)."""
    torch.manual_seed(seed)
    model = AlexNet(num_classes=num_classes, bias_fill=0.0)
    with torch.no_grad():
        w = model.fc8.weight
        w.sub_(w.mean(1, keepdim=True)).mul_(20)
    return model.eval()


@functools.lru_cache(maxsize=1)
def _model() -> AlexNet:
    return _random_model(4, seed=3)


MEAN = torch.full((256, 256, 3), 110.0)


def _save(path: Path, model: AlexNet, classes: list[str], names: list[str]) -> Path:
    save_checkpoint(path, {"model": model.state_dict(), "classes": classes, "class_names": names,
                           "mean_image": MEAN,
                           "config": {"recipe": "paper", "model": dataclasses.asdict(model.config),
                                      "train": {"mean_crop": "crop"}}})
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return _save(tmp_path_factory.mktemp("ckpt") / "model.pt", _model(), CLASSES, NAMES)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (180, 120), dtype=np.uint8)
    out = {"rgb": d / "photo.JPEG", "png": d / "drawing.png", "gray": d / "gray.png",
           "gray_rgb": d / "gray_as_rgb.png", "cmyk": d / "cmyk.jpg", "rgba": d / "alpha.png",
           "png_named_jpeg": d / "really_png.JPEG"}
    Image.fromarray(rgb).save(out["rgb"], quality=95)
    Image.fromarray(rgb).save(out["png"])
    Image.fromarray(gray, "L").save(out["gray"])
    Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2)).save(out["gray_rgb"])
    Image.fromarray(rgb).convert("CMYK").save(out["cmyk"], quality=95)
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)]), "RGBA").save(out["rgba"])
    Image.fromarray(rgb).save(out["png_named_jpeg"], format="PNG")
    return out


def _manual_probs(path: Path, crops) -> torch.Tensor:
    """The mean over `crops` of the softmax, by hand: (4,)."""
    x = torch.from_numpy(load_image(path).copy()).float() - MEAN          # (256, 256, 3)
    patches = [x[top:top + 224, left:left + 224].permute(2, 0, 1) for top, left, _ in crops]
    batch = torch.stack([p.flip(-1) if flip else p for p, (_, _, flip) in zip(patches, crops)])  # (n, 3, 224, 224)
    with torch.no_grad():
        return _model()(batch).softmax(1).mean(0)


def test_predict_matches_a_direct_forward_pass(ckpt, images):
    [centre] = predict(ckpt, [images["rgb"]], k=4, device="cpu")
    expected = _manual_probs(images["rgb"], [(16, 16, False)])
    assert [t.index for t in centre.top] == expected.argsort(descending=True).tolist()
    np.testing.assert_allclose([t.prob for t in centre.top], expected.sort(descending=True).values, rtol=1e-5)
    assert [t.wnid for t in centre.top] == [CLASSES[t.index] for t in centre.top]
    assert [t.name for t in centre.top] == [NAMES[t.index] for t in centre.top]
    [ten] = predict(ckpt, [images["rgb"]], k=4, crops=10, device="cpu")
    expected10 = _manual_probs(images["rgb"], TEN)
    np.testing.assert_allclose(sorted(t.prob for t in ten.top), sorted(expected10.tolist()), rtol=1e-5)
    assert [t.prob for t in ten.top] != [t.prob for t in centre.top]


def test_odd_image_files_all_work(ckpt, images):
    keys = ["rgb", "png", "gray", "gray_rgb", "cmyk", "rgba", "png_named_jpeg"]
    preds = predict(ckpt, [images[k] for k in keys], k=3, device="cpu")
    assert [p.image for p in preds] == [str(images[k]) for k in keys]
    for p in preds:
        probs = [t.prob for t in p.top]
        assert len(p.top) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    by = dict(zip(keys, preds))
    # a grayscale file is the same picture as its grey RGB copy; a PNG named .JPEG is that PNG
    assert [t.prob for t in by["gray"].top] == pytest.approx([t.prob for t in by["gray_rgb"].top], rel=1e-6)
    assert [t.prob for t in by["png_named_jpeg"].top] == pytest.approx([t.prob for t in by["png"].top], rel=1e-6)


def test_a_file_that_is_not_an_image_is_a_clear_error(ckpt, images, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n")
    with pytest.raises(DataError, match="notes.jpg"):
        predict(ckpt, [images["rgb"], text], device="cpu")
    truncated = tmp_path / "cut.JPEG"
    truncated.write_bytes(images["rgb"].read_bytes()[:300])
    res = runner.invoke(app, ["predict", str(ckpt), str(truncated)])
    assert res.exit_code == 1 and "Error:" in res.output and "cut.JPEG" in res.output
    assert "Traceback" not in res.output
    both = runner.invoke(app, ["predict", str(ckpt), str(text), str(images["rgb"]), str(truncated)])
    lines = both.stderr.strip().splitlines()                 # one line naming every bad file
    assert both.exit_code == 1 and len(lines) == 1 and "2 of the 3" in lines[0]
    assert "notes.jpg" in lines[0] and "cut.JPEG" in lines[0]


def test_cli_json_shape(ckpt, images):
    res = runner.invoke(app, ["predict", str(ckpt), str(images["rgb"]), str(images["gray"]), "--k", "2",
                              "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    check_documented_json("predict", data)
    assert isinstance(data, list) and [d["image"] for d in data] == [str(images["rgb"]), str(images["gray"])]
    for d in data:
        assert len(d["top"]) == 2
        for t in d["top"]:
            assert set(t) == {"class", "name", "index", "prob"}
            assert t["class"] == CLASSES[t["index"]] and t["name"] == NAMES[t["index"]]
            assert isinstance(t["prob"], float) and 0.0 <= t["prob"] <= 1.0


def test_cli_table_and_figure(ckpt, images, tmp_path):
    out = tmp_path / "fig" / "top5.png"
    res = runner.invoke(app, ["predict", str(ckpt), str(images["rgb"]), str(images["cmyk"]), str(images["gray"]),
                              "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert res.output.count("probability") == 3 and "%" in res.output    # one table per image
    assert any(n in res.output for n in NAMES) and any(c in res.output for c in CLASSES)
    with Image.open(out) as img:
        assert img.format == "PNG" and img.mode == "RGB"
        w, h = img.size
        assert w > 2 * 160 * 2 and h > 2 * 160     # 3 panels of image + bars, 2 per row
        assert len(img.getcolors(maxcolors=1 << 20)) > 100   # the photos are in it, not a blank page
    assert runner.invoke(app, ["predict", str(ckpt), str(images["rgb"]), "--crops", "3"]).exit_code == 2
    assert runner.invoke(app, ["predict", str(ckpt), str(tmp_path / "missing.jpg")]).exit_code == 2


def test_bare_state_dict_needs_the_data_folder(ckpt, images, tmp_path, tiny_data):
    torch.save(_model().state_dict(), tmp_path / "bare.pt")
    with pytest.raises(UsageError, match="^data_dir is needed"):
        predict(tmp_path / "bare.pt", [images["rgb"]], device="cpu")
    bare = runner.invoke(app, ["predict", str(tmp_path / "bare.pt"), str(images["rgb"])])
    assert bare.exit_code == 2 and bare.stderr.startswith("Error: --data is needed"), bare.output   # an option left out
    assert len(bare.stderr.splitlines()) == 1                   # the error alone: no note before it
    res = runner.invoke(app, ["predict", str(tmp_path / "bare.pt"), str(images["rgb"]), "--data", str(tiny_data),
                              "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    # what was taken for granted is said, once the network is usable (a full checkpoint says nothing)
    note = [line for line in res.stderr.splitlines() if line.startswith("Note:")]
    assert len(note) == 1 and "bare state_dict" in note[0] and "4 classes and 2 columns" in note[0] \
        and "inverted dropout" in note[0], res.stderr
    full = runner.invoke(app, ["predict", str(ckpt), str(images["rgb"]), "--json", "--device", "cpu"])
    assert full.exit_code == 0 and "Note:" not in full.stderr, full.output
    from alexnet_cli.shards import read_manifest
    classes = read_manifest(tiny_data).classes
    assert {t["class"] for t in json.loads(res.stdout)[0]["top"]} <= set(classes)


def test_weights_saved_with_their_config_alone_take_the_classes_from_data(images, tmp_path, tiny_data):
    """docs/formats.md's way to keep the paper's dropout with plain weights, {"model", "config"}:
    no class list, like a bare state_dict, so predict --data names the data's classes (it
    printed "0", "1", ...) and eval checks their number only (it refused them as other classes)."""
    from alexnet_cli.evaluate import evaluate
    from alexnet_cli.shards import read_manifest

    net = _model()
    path = tmp_path / "weights.pt"
    save_checkpoint(path, {"model": net.state_dict(), "config": {"model": dataclasses.asdict(net.config)}})
    res = runner.invoke(app, ["predict", str(path), str(images["rgb"]), "--data", str(tiny_data), "--json",
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    manifest = read_manifest(tiny_data)
    for top in json.loads(res.stdout)[0]["top"]:
        assert (top["class"], top["name"]) == (manifest.classes[top["index"]], manifest.class_names[top["index"]])
    assert evaluate([path], tiny_data, device="cpu").n == manifest.splits["val"].count


CLASSES8 = [f"n0200000{i}" for i in range(8)]
NAMES8 = [f"thing number {i}" for i in range(8)]


@pytest.fixture(scope="module")
def ckpt8(tmp_path_factory) -> Path:
    """A random 8-class network (more classes than the default --k 5), saved like `ckpt`."""
    return _save(tmp_path_factory.mktemp("ckpt8") / "model8.pt", _random_model(8, seed=4), CLASSES8, NAMES8)


def test_cli_default_k_is_five(ckpt8, images):
    files = [str(images["rgb"]), str(images["png"])]
    res = runner.invoke(app, ["predict", str(ckpt8), *files, "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [d["image"] for d in data] == files
    full = predict(ckpt8, files, k=8, device="cpu")
    for d, all8 in zip(data, full):
        assert len(d["top"]) == 5                                        # not 8: --k defaults to 5
        assert [t["index"] for t in d["top"]] == [t.index for t in all8.top[:5]]
        probs = [t["prob"] for t in d["top"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) < 1.0
        for t in d["top"]:
            assert set(t) == {"class", "name", "index", "prob"} and t["class"] == CLASSES8[t["index"]]
    # the human output: one table per image, of 5 rows each, the same classes in the same order
    table = runner.invoke(app, ["predict", str(ckpt8), *files, "--device", "cpu"])
    assert table.exit_code == 0, table.output
    assert table.output.count("probability") == 2
    listed = re.findall(r"\b(n0200000\d)\b", table.output)
    assert listed == [t["class"] for d in data for t in d["top"]]


def _overflowing(path: Path) -> Path:
    """Finite weights whose outputs overflow to NaN (fc6 and fc7 scaled by 1e37): what one step
    at --lr 1e30 leaves."""
    model = _random_model(4, seed=3)
    with torch.no_grad():
        model.fc6.weight.mul_(1e37)
        model.fc7.weight.mul_(1e37)
    return _save(path, model, CLASSES, NAMES)


def test_a_network_with_non_finite_outputs_is_an_error_not_nan_json(tmp_path, images):
    """F7: `predict --json` printed `"prob": NaN` (not JSON) and exit 0."""
    result = runner.invoke(app, ["predict", str(_overflowing(tmp_path / "nan.pt")), str(images["rgb"]),
                                 "--device", "cpu", "--json"])
    assert result.exit_code == 1 and result.stdout == "", result.output
    assert "outputs are NaN or infinite for" in result.stderr and str(images["rgb"]) in result.stderr


def test_class_names_are_never_markup(tmp_path, images):
    """F4: a class named "[red]..." printed without its brackets, "[/x]" failed the command."""
    names = ["[red]stop[/red]", "a [/x] b", "[bold]c", "d"]
    path = _save(tmp_path / "markup.pt", _model(), CLASSES, names)
    result = runner.invoke(app, ["predict", str(path), str(images["rgb"]), "--device", "cpu", "--k", "4"])
    assert result.exit_code == 0, result.output
    for name in names:
        assert name in result.stdout, name


def test_cli_predict_refuses_a_picture_suffix_it_cannot_write_before_any_work(tmp_path):
    """The suffix names the format (as for `alexnet report`); nothing is read or run first."""
    checkpoint, image = tmp_path / "not-yet-read.pt", tmp_path / "not-yet-read.jpg"
    checkpoint.write_text("never loaded")
    image.write_text("never decoded")
    out = tmp_path / "x.txt"
    result = runner.invoke(app, ["predict", str(checkpoint), str(image), "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: --out {out}: the suffix names the format; use one of ")
    assert ".png" in lines[0] and not out.exists()


def test_classes_without_names_are_one_column(tmp_path, images, ckpt):
    """A data folder with no synset mapping names each class by its folder: the class and its
    name are the same text, shown once under `class`; a class with a name keeps both columns."""
    folders = ["cat", "dog", "eel", "fox"]
    path = _save(tmp_path / "folders.pt", _model(), folders, folders)
    plain = runner.invoke(app, ["predict", str(path), str(images["rgb"]), "--device", "cpu", "--k", "4"])
    assert plain.exit_code == 0, plain.output
    header = next(line for line in plain.stdout.splitlines() if "probability" in line)
    assert header.replace("┃", " ").split() == ["#", "class", "probability"]
    rows = [line.replace("│", " ").split() for line in plain.stdout.splitlines() if "%" in line]
    assert sorted(row[1] for row in rows) == folders and all(len(row) == 3 for row in rows)
    named = runner.invoke(app, ["predict", str(ckpt), str(images["rgb"]), "--device", "cpu", "--k", "4"])
    header = next(line for line in named.stdout.splitlines() if "probability" in line)
    assert header.replace("┃", " ").split() == ["#", "class", "name", "probability"]
    rows = [line.replace("│", " ").split() for line in named.stdout.splitlines() if "%" in line]
    assert sorted(row[1] for row in rows) == CLASSES and sorted(" ".join(row[2:4]) for row in rows) == sorted(NAMES)
