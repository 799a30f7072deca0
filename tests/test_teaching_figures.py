"""What a teacher shows from the paper's section 7.1: the user's own photos upright (EXIF),
figure 4's captions and numbers (true class and its red bar, names shortened in the middle,
units said once), and LoadedModel.preprocess, the one-image path of `predict`."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_cli import images as images_module
from alexnet_cli.checkpoint import load_model, save_checkpoint
from alexnet_cli.figures import BAR_HIGHLIGHT, fit_text, font, hbar_chart, labeled_tile
from alexnet_cli.errors import UsageError
from alexnet_cli.images import load_image, user_image
from alexnet_cli.model import AlexNet
from alexnet_cli.neighbors import Neighbor, QueryResult, draw_neighbors
from alexnet_cli.predict import Prediction, TopClass, draw_predictions, predict

ORIENTATION = 0x0112


def _stripes(w: int, h: int) -> np.ndarray:
    """Vertical stripes with a colour ramp down the image: every turn or mirror of it differs."""
    x = np.arange(w)[None, :, None]
    y = np.arange(h)[:, None, None]
    return np.broadcast_to(np.concatenate([((x // 40) % 2) * 200 + 20 + 0 * y,
                                           (y * 255 // h) + 0 * x, 0 * x + 0 * y + 90], axis=2),
                           (h, w, 3)).astype(np.uint8)


def _save_with_orientation(path: Path, pixels: np.ndarray, orientation: int, **kw) -> Path:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(pixels).save(path, exif=exif, **kw)
    return path


def test_an_exif_turned_photo_reads_as_the_same_photo_turned_for_real(tmp_path):
    # 640 x 520: no JPEG draft scale-down, so the stored pixels are compared exactly
    stored = tmp_path / "phone.jpg"
    _save_with_orientation(stored, _stripes(640, 520), 6, quality=95)
    decoded = np.asarray(Image.open(stored).convert("RGB"))
    turned = tmp_path / "turned.png"                               # the same pixels, turned, no EXIF
    Image.fromarray(np.rot90(decoded, k=-1)).save(turned)          # 6: turn 90 degrees clockwise
    assert np.array_equal(load_image(stored, exif=True), load_image(turned))
    assert not np.array_equal(load_image(stored), load_image(turned))          # prep's: as stored


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_every_orientation_of_a_large_jpeg_is_undone_after_the_draft_scale_down(tmp_path, orientation):
    """The audit's case, 1600 x 1200 (decoded at half its size): as the stored pixels turned for
    real and saved without EXIF (a PNG: read at full size, hence not exactly equal)."""
    stored = _save_with_orientation(tmp_path / "big.jpg", _stripes(1600, 1200), orientation, quality=95)
    method = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
              7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}[orientation]
    turned = tmp_path / "turned.png"
    Image.open(stored).convert("RGB").transpose(method).save(turned)
    got, expected = load_image(stored, exif=True).astype(np.int16), load_image(turned).astype(np.int16)
    assert np.abs(got - expected).mean() < 2.0, np.abs(got - expected).mean()
    assert np.abs(load_image(stored).astype(np.int16) - expected).mean() > 20        # prep's: not turned
    red = got[:, :, 0].astype(float)               # the stripes run across the picture turned a quarter
    assert (red.std(axis=0).mean() > red.std(axis=1).mean()) == (orientation in (5, 6, 7, 8))


def test_prep_reads_the_stored_pixels_and_every_load_is_writable(tmp_path):
    path = _save_with_orientation(tmp_path / "p.jpg", _stripes(1600, 1200), 6, quality=90)
    with Image.open(path) as img:                   # prep's reading, done by hand: no turn
        img.draft("RGB", (1600 * 512 // 1200, 512))   # load_image's request
        by_hand = images_module.resize_center_crop(img.convert("RGB"))
    got = load_image(path)
    assert np.array_equal(got, by_hand) and got.flags.writeable and load_image(path, exif=True).flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # "The given NumPy array is not writable"
        torch.from_numpy(got)


def test_a_damaged_exif_block_leaves_the_image_as_stored(tmp_path):
    path = tmp_path / "odd.jpg"
    exif = Image.Exif()
    exif[ORIENTATION] = 99                              # no such orientation
    Image.fromarray(_stripes(300, 280)).save(path, exif=exif)
    assert np.array_equal(load_image(path, exif=True), load_image(path))


# ---------------------------------------------------------------- figure 4's captions and numbers

def test_captions_are_shortened_in_the_middle_keeping_what_tells_files_apart():
    fnt = font(12)
    names = ["yellow_checks_5000x3000.jpg", "yellow_checks_5000x3000.png"] + \
            [f"ILSVRC2012_val_0000000{i}.JPEG" for i in range(1, 5)]
    short = [fit_text(n, 120, fnt) for n in names]
    assert len(set(short)) == len(names), short
    for name, s in zip(names, short):
        assert "..." in s and fnt.getlength(s) <= 120 and name.endswith(s.split("...")[1])
        assert name.startswith(s.split("...")[0])
    assert fit_text("fits", 120, fnt) == "fits" and fit_text("x" * 50, 1, fnt) == "..."


def _red_pixels(img: Image.Image) -> int:
    return int((np.asarray(img) == np.array(BAR_HIGHLIGHT, np.uint8)).all(axis=2).sum())


def test_the_bars_say_99_99_percent_as_the_predict_table_does(pictures, tmp_path, monkeypatch):
    from alexnet_cli import predict as predict_module
    said = []

    def chart(labels, values, **kw):
        said.append([kw["value_format"].format(v) for v in values])
        return hbar_chart(labels, values, **kw)
    monkeypatch.setattr(predict_module, "hbar_chart", chart)
    draw_predictions([_prediction(pictures[0], [0.9999, 0.0001])], tmp_path / "p.png")
    assert said == [["99.99%", "0.01%"]]                # the table's f"{100 * p:.2f}%", not "100.0%"


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("pics")
    out = []
    for i, name in enumerate(["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG"]):
        Image.fromarray(np.full((64, 80, 3), 40 + 60 * i, np.uint8)).save(d / name)
        out.append(d / name)
    return out


def _prediction(path: Path, probs: list[float]) -> Prediction:
    return Prediction(str(path), [TopClass(f"n0{i}", f"class {i}", i, p) for i, p in enumerate(probs)])


def test_the_true_class_is_captioned_and_its_bar_is_red_when_among_the_top(pictures, tmp_path):
    preds = [_prediction(pictures[0], [0.6, 0.3, 0.1]), _prediction(pictures[1], [0.5, 0.4, 0.1])]
    plain = Image.open(draw_predictions(preds, tmp_path / "plain.png"))
    marked = Image.open(draw_predictions(preds, tmp_path / "marked.png", true_classes=["n01", "n09"]))
    assert _red_pixels(plain) == 0
    assert _red_pixels(marked) > 100                    # the second bar of the first image
    assert marked.height > plain.height                  # the "true: ..." line under each image
    one = Image.open(draw_predictions(preds[1:], tmp_path / "absent.png", true_classes=["n09"]))
    assert _red_pixels(one) == 0                         # not among the top: no red bar
    with pytest.raises(UsageError, match="true_classes has 1 entries for 2"):
        draw_predictions(preds, tmp_path / "bad.png", true_classes=["n01"])


@pytest.mark.parametrize("kind", ["euclidean", "hamming"])
def test_the_neighbours_figure_says_what_its_numbers_are(pictures, tmp_path, monkeypatch, kind):
    from alexnet_cli import neighbors as neighbors_module
    texts = []

    def tile(img, text, **kw):
        texts.append((text, kw.get("above", False)))
        return labeled_tile(img, text, **kw)
    monkeypatch.setattr(neighbors_module, "labeled_tile", tile)
    monkeypatch.setattr(neighbors_module, "read_split_images",
                        lambda data_dir, split, indices: [np.zeros((256, 256, 3), np.uint8) for _ in indices])
    near = [Neighbor(path=f"train/n01/{i}.JPEG", label=0, label_name="red discs", distance=d, index=i)
            for i, d in enumerate([12.0, 16.94])]
    draw_neighbors([QueryResult(str(pictures[0]), near, distance_kind=kind)], tmp_path, tmp_path / "n.png")
    titles = [t for t, above in texts if above]
    assert len(titles) == 1 and (("Euclidean" in titles[0] and "fc7" in titles[0]) if kind == "euclidean"
                                 else ("Hamming" in titles[0] and "bits" in titles[0]))
    assert ("red discs (16.94)" if kind == "euclidean" else "red discs (17)") in [t for t, _ in texts]


# ---------------------------------------------------------------- LoadedModel.preprocess

def _checkpoint(path: Path, mean_crop: str) -> Path:
    torch.manual_seed(0)
    model = AlexNet(num_classes=3, bias_fill=0.0).eval()
    with torch.no_grad():
        model.fc8.weight.mul_(30)
    mean = torch.from_numpy(np.random.default_rng(1).uniform(60, 160, (256, 256, 3)).astype(np.float32))
    save_checkpoint(path, {"model": model.state_dict(), "classes": ["a", "b", "c"], "mean_image": mean,
                           "config": {"recipe": "code" if mean_crop == "center" else "paper",
                                      "model": dataclasses.asdict(model.config), "train": {"mean_crop": mean_crop}}})
    return path


@pytest.mark.parametrize("mean_crop", ["crop", "center"])
def test_preprocess_gives_predicts_probabilities(tmp_path, mean_crop):
    ckpt = _checkpoint(tmp_path / "m.pt", mean_crop)
    photo = _save_with_orientation(tmp_path / "phone.jpg", _stripes(700, 540), 6, quality=90)
    loaded = load_model(ckpt)
    x = loaded.preprocess(photo)
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    with torch.no_grad():
        probs = loaded.model(x).softmax(dim=1)[0]
    (pred,) = predict(ckpt, photo, k=3, device="cpu")
    assert torch.allclose(probs, torch.tensor([t.prob for t in sorted(pred.top, key=lambda t: t.index)]), atol=1e-6)
    # the same photo already in memory, as a PIL image (its EXIF too) or an array turned by hand
    assert torch.equal(loaded.preprocess(Image.open(photo)), x)
    upright = np.asarray(Image.open(photo).convert("RGB").transpose(Image.Transpose.ROTATE_270))
    assert torch.equal(loaded.preprocess(upright), x)
    assert np.array_equal(user_image(photo), load_image(photo, exif=True))


def test_an_image_in_a_folder_named_after_a_class_says_its_true_class(tmp_path):
    """val/<class>/x.JPEG, the layout prep reads: predict knows each image's class, says its
    probability and rank (table caption, JSON "true_class") and draws its bar red by default."""
    import json

    from typer.testing import CliRunner

    from alexnet_cli.cli.app import app
    ckpt = _checkpoint(tmp_path / "m.pt", "crop")                 # classes a, b, c
    pixels = _stripes(300, 260)
    (tmp_path / "b").mkdir()
    (tmp_path / "other").mkdir()
    labelled, loose = tmp_path / "b" / "x.png", tmp_path / "other" / "y.png"
    Image.fromarray(pixels).save(labelled)
    Image.fromarray(pixels).save(loose)
    known, unknown = predict(ckpt, [labelled, loose], k=3, device="cpu")
    assert unknown.true_class is None and unknown.to_json()["true_class"] is None
    truth = known.true_class
    assert truth is not None and (truth.wnid, truth.index) == ("b", 1)
    assert truth.prob == next(t.prob for t in known.top if t.index == 1)
    assert known.to_json()["true_class"] == truth.to_json()
    red = Image.open(draw_predictions([known], tmp_path / "f.png"))
    assert (_red_pixels(red) > 100) == (truth.index in [t.index for t in known.top[:5]])
    result = CliRunner().invoke(app, ["predict", str(ckpt), str(labelled), str(loose), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rank = [t.index for t in known.top].index(1) + 1
    assert f"true class (its folder): b, {100 * truth.prob:.2f}%, #{rank}" in result.stdout
    assert result.stdout.count("true class") == 1
    shown = json.loads(CliRunner().invoke(app, ["predict", str(ckpt), str(labelled), "--device", "cpu",
                                                "--json"]).stdout)
    assert shown[0]["true_class"]["class"] == "b"


def test_a_true_class_of_tiny_probability_still_shows_red_and_one_outside_the_top_by_name(pictures, tmp_path,
                                                                                       monkeypatch):
    """The diff review: only the filled part of the bar was red, so a true class at 0.19% showed
    none; and one outside the top five was named by its wnid though its name was known."""
    low = _prediction(pictures[0], [0.998, 0.0019, 0.0001])
    marked = Image.open(draw_predictions([low], tmp_path / "low.png", true_classes=["n01"]))
    assert _red_pixels(marked) > 50
    outside = Prediction(str(pictures[1]), [TopClass(f"n0{i}", f"class {i}", i, 0.2) for i in range(5)],
                         TopClass("n09", "class 9", 9, 0.0))
    said = []
    from alexnet_cli import predict as predict_module
    real = predict_module.labeled_tile

    def tile(img, text, **kw):
        said.append(text)
        return real(img, text, **kw)
    monkeypatch.setattr(predict_module, "labeled_tile", tile)
    draw_predictions([outside], tmp_path / "out.png")
    assert "true: class 9 (not in the top 5)" in said, said
