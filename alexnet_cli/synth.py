"""A tiny generated ImageNet-like tree, for the tests and `alexnet demo`.

Each class is its own visual family drawn procedurally with PIL (a hue, a shape and a
texture: red discs, green stripes, blue triangles, ...) at random positions, sizes and
aspect ratios, so that a small network learns them in a few CPU minutes. The tree can be
written in every layout `alexnet prep` understands (the README's "Prepare the data"):

- "folders": train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (+ LOC_synset_mapping.txt for names)
- "loc":     flat val/*.JPEG with Kaggle's LOC_val_solution.csv and LOC_synset_mapping.txt
- "devkit":  flat val/*.JPEG with the devkit's ILSVRC2012_validation_ground_truth.txt and
             meta.mat (written as MATLAB v7.3, i.e. HDF5, since scipy is not a dependency);
             its ILSVRC2012_IDs are deliberately NOT in sorted-wnid order
- "kaggle":  the nested ILSVRC/Data/CLS-LOC/{train,val} with the LOC CSVs beside ILSVRC/

With `odd_files=True` the first class also gets the oddities of real ImageNet copies
(`ODD_FILES`): CMYK, grayscale, PNG bytes named .JPEG (kept), truncated and empty (skipped).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import h5py
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

LAYOUTS = ("folders", "loc", "devkit", "kaggle")

# (name, hue RGB, shape): the class families, cycled (with a shifted hue) past eight classes.
FAMILIES = [
    ("red discs", (220, 40, 40), "disc"),
    ("green stripes", (40, 190, 60), "stripes"),
    ("blue triangles", (40, 70, 220), "triangle"),
    ("yellow checks", (230, 210, 40), "checks"),
    ("magenta rings", (200, 40, 200), "ring"),
    ("cyan crosses", (40, 200, 210), "cross"),
    ("orange dots", (240, 140, 30), "dots"),
    ("grey waves", (128, 128, 128), "waves"),
]

# File name -> what prep must do with it ("kept" or the start of the skip reason).
ODD_FILES = {
    "odd_cmyk.JPEG": "kept",
    "odd_gray.JPEG": "kept",
    "odd_png.JPEG": "kept",
    "odd_truncated.JPEG": "truncated",
    "odd_empty.JPEG": "empty",
}


def wnid(k: int) -> str:
    """A synset-like id; sorted order = class order."""
    return f"n{1000000 + 1111 * k:08d}"


def class_name(k: int) -> str:
    name = FAMILIES[k % len(FAMILIES)][0]
    return name if k < len(FAMILIES) else f"{name} {k // len(FAMILIES) + 1}"


def draw_image(k: int, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """One image of class `k`: its shape family in its hue on a random pale background."""
    _, hue, shape = FAMILIES[k % len(FAMILIES)]
    shift = 37 * (k // len(FAMILIES))
    hue = tuple(int((c + shift) % 256) for c in hue)
    w, h = size
    bg = tuple(int(v) for v in rng.integers(150, 240, 3) // 2 + 60)
    img = Image.new("RGB", size, bg)
    d = ImageDraw.Draw(img)
    jitter = lambda: tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in hue)  # noqa: E731
    s = min(w, h)
    for _ in range(int(rng.integers(2, 5))):
        r = int(rng.integers(s // 8, s // 3))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        _draw_shape(d, shape, cx, cy, r, jitter(), rng, w, h)
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    noise = rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(img, np.float64) + noise, 0, 255).astype(np.uint8))


def _draw_shape(d: ImageDraw.ImageDraw, shape: str, cx: int, cy: int, r: int, color, rng, w: int, h: int) -> None:
    if shape == "disc":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)
    elif shape == "ring":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), outline=color, width=max(2, r // 3))
    elif shape == "triangle":
        a = rng.uniform(0, 2 * math.pi)
        d.polygon([(cx + r * math.cos(a + i * 2.094), cy + r * math.sin(a + i * 2.094)) for i in range(3)], fill=color)
    elif shape == "stripes":
        step = max(4, r // 2)
        for y in range(int(rng.integers(0, step)), h, step * 2):
            d.rectangle((0, y, w, y + step - 1), fill=color)
    elif shape == "checks":
        step = max(4, r // 2)
        for y in range(0, h, step):
            for x in range((y // step) % 2 * step, w, 2 * step):
                d.rectangle((x, y, x + step - 1, y + step - 1), fill=color)
    elif shape == "cross":
        t = max(2, r // 3)
        d.rectangle((cx - r, cy - t, cx + r, cy + t), fill=color)
        d.rectangle((cx - t, cy - r, cx + t, cy + r), fill=color)
    elif shape == "dots":
        for _ in range(12):
            x, y, q = int(rng.integers(0, w)), int(rng.integers(0, h)), max(2, r // 4)
            d.ellipse((x - q, y - q, x + q, y + q), fill=color)
    else:  # waves
        for x in range(w):
            y = cy + r * math.sin(x / max(3, r / 2))
            d.line((x, y - 3, x, y + 3), fill=color)


def _random_size(rng: np.random.Generator) -> tuple[int, int]:
    short = int(rng.integers(64, 129))
    long = int(short * rng.uniform(1.0, 1.5))
    long = min(long, 160)
    return (long, short) if rng.random() < 0.5 else (short, long)


def _jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def _write_odd_files(folder: Path, k: int, rng: np.random.Generator) -> None:
    img = draw_image(k, rng, (120, 90))
    (folder / "odd_cmyk.JPEG").write_bytes(_jpeg_bytes(img.convert("CMYK")))
    (folder / "odd_gray.JPEG").write_bytes(_jpeg_bytes(img.convert("L")))
    png = io.BytesIO()
    img.save(png, format="PNG")
    (folder / "odd_png.JPEG").write_bytes(png.getvalue())
    full = _jpeg_bytes(img)
    (folder / "odd_truncated.JPEG").write_bytes(full[: len(full) // 2])
    (folder / "odd_empty.JPEG").write_bytes(b"")


def make_tree(root: str | Path, classes: int = 4, train_per_class: int = 12, val_per_class: int = 4,
              seed: int = 0, odd_files: bool = False, layout: str = "folders") -> Path:
    """Write a generated ImageNet-like tree under `root` in `layout`; returns `root`."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}")
    root = Path(root)
    base = root / "ILSVRC" / "Data" / "CLS-LOC" if layout == "kaggle" else root
    rng = np.random.default_rng(seed)
    for k in range(classes):
        folder = base / "train" / wnid(k)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(train_per_class):
            img = draw_image(k, rng, _random_size(rng))
            (folder / f"{wnid(k)}_{i + 1}.JPEG").write_bytes(_jpeg_bytes(img))
        if odd_files and k == 0:
            _write_odd_files(folder, k, rng)
    val = [(k, draw_image(k, rng, _random_size(rng))) for k in range(classes) for _ in range(val_per_class)]
    order = rng.permutation(len(val))  # flat val files are not grouped by class, as in ImageNet
    val = [val[i] for i in order]
    if layout == "folders":
        for i, (k, img) in enumerate(val):
            folder = base / "val" / wnid(k)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"ILSVRC2012_val_{i + 1:08d}.JPEG").write_bytes(_jpeg_bytes(img))
        _write_mapping(root, classes)
        return root
    (base / "val").mkdir(parents=True, exist_ok=True)
    for i, (k, img) in enumerate(val):
        (base / "val" / f"ILSVRC2012_val_{i + 1:08d}.JPEG").write_bytes(_jpeg_bytes(img))
    labels = [k for k, _ in val]
    if layout in ("loc", "kaggle"):
        _write_loc(root, classes, labels)
    else:
        _write_devkit(root, classes, labels)
    return root


def _write_loc(root: Path, classes: int, labels: list[int]) -> None:
    lines = ["ImageId,PredictionString"]
    for i, k in enumerate(labels):
        lines.append(f"ILSVRC2012_val_{i + 1:08d},{wnid(k)} 1 2 30 40 {wnid(k)} 5 6 50 60")
    (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    _write_mapping(root, classes)


def _write_mapping(root: Path, classes: int) -> None:
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{wnid(k)} {class_name(k)}\n" for k in range(classes)))


def devkit_ids(classes: int) -> list[int]:
    """ILSVRC2012_ID (1-based) of each class k: reversed, so that it differs from sorted order."""
    return [classes - k for k in range(classes)]


def _write_devkit(root: Path, classes: int, labels: list[int]) -> None:
    ids = devkit_ids(classes)
    data = root / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{ids[k]}\n" for k in labels))
    write_meta_mat_v73(data / "meta.mat", [(ids[k], wnid(k), class_name(k)) for k in range(classes)])


def write_meta_mat_v73(path: Path, synsets: list[tuple[int, str, str]]) -> None:
    """A devkit-like meta.mat in MATLAB v7.3 (HDF5) form: struct array `synsets` with
    ILSVRC2012_ID, WNID and words, each element stored behind an object reference."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        g = f.create_group("synsets")
        g.attrs["MATLAB_class"] = np.bytes_("struct")
        columns = {"ILSVRC2012_ID": [], "WNID": [], "words": []}
        for i, (sid, w, words) in enumerate(synsets):
            d = refs.create_dataset(f"id{i}", data=np.array([[float(sid)]]))
            d.attrs["MATLAB_class"] = np.bytes_("double")
            columns["ILSVRC2012_ID"].append(d.ref)
            for key, text in (("WNID", w), ("words", words)):
                d = refs.create_dataset(f"{key}{i}", data=np.array([[ord(c)] for c in text], np.uint16))
                d.attrs["MATLAB_class"] = np.bytes_("char")
                columns[key].append(d.ref)
        for key, col in columns.items():
            g.create_dataset(key, data=np.array([col], dtype=h5py.ref_dtype).T)
    with open(path, "r+b") as fh:  # MATLAB's 128-byte text header in the user block
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: synthetic HDF5 schema 1.00 .".ljust(116)
                 + b"\0" * 8 + b"\x00\x02IM")
