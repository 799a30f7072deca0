"""Finding the images and labels of an ImageNet copy, whatever its layout (the README's "Prepare the data").

Supported, found automatically (flags may point at the label files instead):

- training images as `train/<wnid>/*` (any file names, sub-folders allowed);
- validation as `val/<wnid>/*`, or flat `val/*` labelled by
  - Kaggle's `LOC_val_solution.csv` (ImageId -> first wnid of PredictionString), or
  - the devkit's `ILSVRC2012_validation_ground_truth.txt` (one 1-based ILSVRC2012_ID per
    line, for val files 1, 2, ...) with `meta.mat` mapping ILSVRC2012_ID -> wnid (read by
    alexnet_cli.matfile, v5 or v7.3), or `--val-synsets FILE`: one wnid per line in
    ILSVRC2012_ID order (line 1 is ID 1), for when meta.mat is not at hand;
- all of the above under Kaggle's nested root `ILSVRC/Data/CLS-LOC/`, with the CSVs beside
  `ILSVRC/` (or anywhere between SRC and the image folders).

Classes are the sorted wnids of `train/` (of the labelled validation images if there is no
`train/`): class index = position in that order (torchvision's convention). Readable names
come from `LOC_synset_mapping.txt`, meta.mat's `words` or the --val-synsets file.

Files that cannot be given a label are returned in `Layout.unlabeled` with the reason;
`prep` reports them as skipped, so every source file is accounted for.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from alexnet_cli.errors import DataError, UsageError
from alexnet_cli.images import not_regular
from alexnet_cli.matfile import read_synsets

SPLITS = ("train", "val")
LOC_SOLUTION = "LOC_val_solution.csv"
LOC_MAPPING = "LOC_synset_mapping.txt"
DEVKIT_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_META = "meta.mat"
NESTED_ROOTS = ("ILSVRC/Data/CLS-LOC", "Data/CLS-LOC", "CLS-LOC")
_DEVKIT_SUBDIRS = (".", "data", "ILSVRC2012_devkit_t12/data", "ILSVRC2012_devkit_t12", "devkit/data")
_VAL_NUMBER = re.compile(r"ILSVRC20\d\d_val_0*(\d+)")

FOLDERS = "folders"                          # a split's kind: class folders label its images
DEVKIT_KIND = "devkit ground truth"          # ... the devkit's ground truth file does (with its name)

EXPECTED = ("expected train/<wnid>/*.JPEG and/or val/ (val/<wnid>/*.JPEG, or flat val/*.JPEG with "
            f"{LOC_SOLUTION} or the devkit's {DEVKIT_TRUTH} + {DEVKIT_META}), directly in SRC or under "
            "Kaggle's ILSVRC/Data/CLS-LOC/")


@dataclass
class LabelFiles:
    """Optional paths that override the automatic search (the `prep` flags)."""

    val_labels: Path | None = None        # LOC_val_solution.csv or the devkit's ground-truth .txt
    synset_mapping: Path | None = None    # LOC_synset_mapping.txt: "wnid name" per line (names only)
    devkit_meta: Path | None = None       # the devkit's meta.mat
    val_synsets: Path | None = None       # one wnid per line in ILSVRC2012_ID order


@dataclass(frozen=True)
class UnusedLabelFile:
    """A label file given that no split read, and why: prep notes it, never drops it silently."""
    setting: str                          # its LabelFiles field: val_labels, devkit_meta or val_synsets
    path: Path
    why: str

    def __str__(self) -> str:             # the setting in backticks: a reporter names it (progress.py)
        return f"`{self.setting}` {self.path} is not used: {self.why}"


@dataclass
class Layout:
    name: str                                           # e.g. "train folders, val LOC csv"
    source: Path                                        # SRC as given
    image_root: Path                                    # the folder holding train/ and val/
    classes: list[str]                                  # sorted wnids
    class_names: dict[str, str]
    splits: dict[str, list[tuple[str, str]]]            # split -> sorted [(path relative to SRC, wnid)]
    unlabeled: dict[str, list[dict]] = field(default_factory=dict)  # split -> [{"path", "reason"}]
    unused: list[UnusedLabelFile] = field(default_factory=list)     # label files given that no split read


# What an image file is usually called: for the hint of `_class_folders` only (prep reads any file)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _class_folders(src: Path) -> list[str]:
    """The folders directly in `src` that hold an image file (a quick look at their first
    entries), sorted: the class folders of an ImageFolder tree."""
    found = []
    for folder in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            names = [e.name for _, e in zip(range(50), os.scandir(folder))]
        except OSError:
            continue
        if any(Path(n).suffix.lower() in IMAGE_SUFFIXES for n in names):
            found.append(folder.name)
    return found


def looks_like_source(path: Path) -> bool:
    """Whether `path` holds an image tree for `alexnet prep` (train/ or val/, directly or under a
    Kaggle root): a cheap look, for telling a user who gives it where a data folder belongs."""
    return any((path / root / split).is_dir() for root in (".", *NESTED_ROOTS) for split in ("train", "val"))


def image_folders(src: str | Path) -> list[Path]:
    """The folders whose files `find_layout` lists as images of `src`, with everything below
    them: its split folders (train/, val/) that exist, directly in it or under a Kaggle root;
    none where it has no layout. Files elsewhere in `src` (label files, a data folder beside
    the splits) are never taken for images."""
    src = Path(src)
    root = _image_root(src) if src.is_dir() else None
    return [] if root is None else [root / s for s in SPLITS if (root / s).is_dir()]


def find_layout(src: str | Path, splits: list[str] | None = None, labels: LabelFiles | None = None) -> Layout:
    """Find the images, labels and classes of the ImageNet copy at `src`."""
    src = Path(src)
    labels = labels or LabelFiles()
    if not src.is_dir():
        raise DataError(f"{src}: not a folder")
    image_root = _image_root(src)
    if image_root is None:
        parent = next((p for p in src.resolve().parents[:2] if looks_like_source(p)), None)
        if parent is not None:          # SRC is train/, val/ or a class folder of an ImageNet tree
            raise DataError(f"{src}: no ImageNet layout found (train/ or val/ in it); did you mean the parent "
                            f"folder {parent}?")
        folders = _class_folders(src)
        if folders:                     # torchvision's ImageFolder: the classes straight in SRC
            shown = ", ".join(folders[:3]) + (", ..." if len(folders) > 3 else "")
            raise DataError(f"{src}: no ImageNet layout found, but {len(folders)} folders of images ({shown}): "
                            f"if they are the classes, move them into {src / 'train'} (and a validation set's "
                            f"into {src / 'val'}, one folder per class)")
        raise DataError(f"{src}: no ImageNet layout found: {EXPECTED}")
    present = [s for s in SPLITS if (image_root / s).is_dir()]
    wanted = list(splits) if splits else present
    for s in wanted:
        if s not in SPLITS:
            raise UsageError(f"splits: unknown split '{s}' (splits: {', '.join(SPLITS)})", field="splits", value=wanted)
        if s not in present:
            raise DataError(f"{image_root}: no {s}/ folder (found: {', '.join(present) or 'none'}); {EXPECTED}")
    search = _search_dirs(src, image_root)
    names = _read_mapping(labels.synset_mapping or _find(search, LOC_MAPPING))
    classes = _class_dirs(image_root / "train") if "train" in present else []
    out = Layout(name="", source=src, image_root=image_root, classes=classes, class_names=names, splits={})
    kinds = {}
    for s in wanted:
        entries, unlabeled, kinds[s] = _list_split(src, image_root / s, s, search, labels, names)
        out.splits[s], out.unlabeled[s] = entries, unlabeled
    if not out.classes:
        out.classes = sorted({w for entries in out.splits.values() for _, w in entries})
    if not out.classes:
        raise DataError(f"{src}: found no class folders and no labelled images; {EXPECTED}")
    _drop_unknown_classes(out)
    out.unused = _unused_label_files(labels, kinds)
    nested = image_root != src
    out.name = ("kaggle root " if nested else "") + ", ".join(f"{s} {kind}" for s, kind in kinds.items())
    out.class_names = {w: out.class_names.get(w, w) for w in out.classes}
    return out


def _unused_label_files(labels: LabelFiles, kinds: dict[str, str]) -> list[UnusedLabelFile]:
    """The label files given that no split read, each with why: given, never silently dropped."""
    val = kinds.get("val")
    if val is None:
        why_val = "no val/ split is prepared"
    elif val == FOLDERS:
        why_val = "val/ is in class folders, which give the labels"
    else:
        why_val = None
    devkit = val is not None and val.startswith(DEVKIT_KIND)
    why_devkit = None if devkit else "no split is labelled by the devkit's ground truth"
    unused = []
    for setting, why in (("val_labels", why_val), ("devkit_meta", why_devkit), ("val_synsets", why_devkit)):
        path = getattr(labels, setting)
        if path is not None and why is not None:
            unused.append(UnusedLabelFile(setting, path, why))
    return unused


def _image_root(src: Path) -> Path | None:
    for rel in (".", *NESTED_ROOTS):
        root = src / rel
        if any((root / s).is_dir() for s in SPLITS):
            return src if rel == "." else root
    return None


def _search_dirs(src: Path, image_root: Path) -> list[Path]:
    """Where label files may sit: SRC, the image root and every folder between them."""
    dirs = [src]
    for part in image_root.relative_to(src).parts:
        dirs.append(dirs[-1] / part)
    return dirs


def _find(search: list[Path], name: str) -> Path | None:
    for d in search:
        for sub in _DEVKIT_SUBDIRS:
            p = d / sub / name
            if p.is_file():
                return p
    return None


def _class_dirs(folder: Path) -> list[str]:
    """The class folders in `folder` (links to folders count), by name; hidden ones are not classes."""
    names = sorted(e.name for e in os.scandir(folder) if _is_dir(e) and not e.name.startswith("."))
    for name in names:
        if not _utf8(name):
            raise DataError(f"{_shown(folder / name)}: a class folder whose name is not valid UTF-8: rename it")
    return names


def _walk_files(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The regular files under `folder` (links followed, each real folder read once, so a link
    loop ends), and everything else found there with the reason it is not read: not a regular
    file (a FIFO would block a reader forever), a broken link, a name that is not UTF-8, a
    folder that cannot be listed or was already read through another link."""
    files: list[Path] = []
    other: list[tuple[Path, str]] = []
    seen: set[tuple[int, int]] = set()
    stack = [folder]
    while stack:
        d = stack.pop()
        try:
            st = d.stat()
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            other.append((d, f"folder cannot be read ({exc.strerror or exc})"))
            continue
        if (st.st_dev, st.st_ino) in seen:
            other.append((d, "a link to a folder already read (a loop, or a second link to it)"))
            continue
        seen.add((st.st_dev, st.st_ino))
        subdirs = []
        for e in entries:
            path = Path(e.path)
            if not _utf8(e.name):
                other.append((path, "name is not valid UTF-8 (rename it)"))
            elif _is_dir(e):
                subdirs.append(path)
            elif _is_file(e):
                files.append(path)
            else:
                other.append((path, _not_regular(path)))
        stack.extend(reversed(subdirs))
    return files, other


def _top_entries(folder: Path) -> tuple[list[str], list[tuple[Path, str]]]:
    """The names of the regular files directly in `folder`, and its other entries that are
    not folders, with the reason they are not read."""
    files, other = [], []
    with os.scandir(folder) as it:
        for e in sorted(it, key=lambda e: e.name):
            if not _utf8(e.name):
                other.append((Path(e.path), "name is not valid UTF-8 (rename it)"))
            elif _is_file(e):
                files.append(e.name)
            elif not _is_dir(e):
                other.append((Path(e.path), _not_regular(Path(e.path))))
    return files, other


def _is_dir(entry: os.DirEntry) -> bool:
    """entry.is_dir(), links followed; False for a link that cannot be followed (a loop of
    links raises ELOOP), which `_not_regular` then names."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_file(entry: os.DirEntry) -> bool:
    """entry.is_file(), as `_is_dir`."""
    try:
        return entry.is_file()
    except OSError:
        return False


def _not_regular(path: Path) -> str:
    """Why `path`, neither a regular file nor a folder, is not read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "a broken link"
    except OSError as exc:
        if exc.errno == errno.ELOOP:         # links that lead to each other (ln -s a b; ln -s b a)
            return "a symbolic link loop"
        return f"cannot be read ({exc.strerror or exc})"
    return not_regular(mode)


def _utf8(name: str) -> bool:
    """Whether a file name is valid UTF-8 (Python keeps the bytes of one that is not as surrogates)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _shown(path: Path) -> str:
    """A path as text that can be printed and stored (bytes that are not UTF-8 as \\xNN)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _rel(src: Path, path: Path) -> str:
    return _shown(Path(os.path.relpath(path, src))).replace(os.sep, "/")


def _list_split(src: Path, folder: Path, split: str, search: list[Path], labels: LabelFiles,
                names: dict[str, str]) -> tuple[list[tuple[str, str]], list[dict], str]:
    """The labelled files of one split, the unlabeled ones with a reason, and the kind of layout."""
    subdirs = _class_dirs(folder)
    top, other = _top_entries(folder)
    unread = [{"path": _rel(src, p), "reason": why} for p, why in other]
    if split == "train" or subdirs:
        entries = []
        for w in subdirs:
            files, odd = _walk_files(folder / w)
            if split == "train" and not files:    # fc8 would have an output no image ever trains
                raise DataError(f"{_shown(folder / w)}: a class folder without any image file (a class needs "
                                "training images): add its images, or remove the folder"
                                + (f"; {len(odd)} entr{'y' if len(odd) == 1 else 'ies'} in it cannot be read"
                                   if odd else ""))
            entries += [(_rel(src, p), w) for p in files]
            unread += [{"path": _rel(src, p), "reason": why} for p, why in odd]
        unlabeled = [{"path": _rel(src, folder / f), "reason": "not inside a class folder"} for f in top]
        return sorted(entries), unlabeled + unread, FOLDERS
    label_of, kind = _flat_val_labels(search, labels, names)
    entries, unlabeled = [], unread
    for f in top:
        wnid = label_of(f)
        if wnid is None:
            unlabeled.append({"path": _rel(src, folder / f), "reason": f"no label for it in the {kind}"})
        else:
            entries.append((_rel(src, folder / f), wnid))
    return sorted(entries), unlabeled, kind


def _flat_val_labels(search: list[Path], labels: LabelFiles, names: dict[str, str]):
    """A function file name -> wnid (or None) for a flat val/ folder, and the source's name."""
    given = labels.val_labels
    if given is not None:
        kind = "LOC csv" if "," in _read_text(given, "label file").split("\n", 1)[0] else DEVKIT_KIND
        path = given
    elif (path := _find(search, LOC_SOLUTION)) is not None:
        kind = "LOC csv"
    elif (path := _find(search, DEVKIT_TRUTH)) is not None:
        kind = DEVKIT_KIND
    else:
        raise DataError(f"val/ is flat (no class folders) and no labels were found: put {LOC_SOLUTION} "
                        f"or the devkit's {DEVKIT_TRUTH} (+ {DEVKIT_META}) beside it, or pass `val_labels` FILE",
                        mentions=("val_labels",))
    if kind == "LOC csv":
        by_id = _read_loc_solution(path)
        return (lambda f: by_id.get(Path(f).stem)), f"LOC csv ({path.name})"
    truth = _read_ground_truth(path)
    id_to_wnid = _devkit_synsets(path, search, labels, names)
    def label(f: str) -> str | None:
        m = _VAL_NUMBER.search(f)
        if not m:
            return None
        n = int(m.group(1))
        if not 1 <= n <= len(truth):
            return None
        return id_to_wnid.get(truth[n - 1])

    return label, f"{DEVKIT_KIND} ({path.name})"


def _read_text(path: Path, what: str, mentions: tuple[str, ...] = ()) -> str:
    """A label file's text; DataError if it is missing, not a regular file (a FIFO would
    block) or not UTF-8 text. `mentions`: the settings `what` names (`val_synsets`)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise DataError(f"{path}: not a regular file (the {what} must be one)", mentions=mentions)
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such {what}", mentions=mentions) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: the {what} is not UTF-8 text (byte {exc.start})", mentions=mentions) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the {what} ({exc.strerror or exc})", mentions=mentions) from None


def _read_loc_solution(path: Path) -> dict[str, str]:
    out = {}
    for row in csv.reader(io.StringIO(_read_text(path, "label file"), newline="")):
        if len(row) < 2 or row[0] == "ImageId" or not row[1].split():
            continue
        out[row[0].strip()] = row[1].split()[0]
    if not out:
        raise DataError(f"{path}: no labels in it (expected rows 'ImageId,wnid x y x y ...')")
    return out


def _read_ground_truth(path: Path) -> list[int]:
    try:
        return [int(line) for line in _read_text(path, "label file").split()]
    except ValueError:
        raise DataError(f"{path}: expected one integer ILSVRC2012_ID per line") from None


def _devkit_synsets(truth: Path, search: list[Path], labels: LabelFiles, names: dict[str, str]) -> dict[int, str]:
    """ILSVRC2012_ID -> wnid, from `val_synsets` or meta.mat; also fills `names`."""
    if labels.val_synsets is not None:
        ids, text = {}, _read_text(labels.val_synsets, "`val_synsets` file", ("val_synsets",))
        for i, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                wnid, _, name = line.strip().partition(" ")
                ids[i] = wnid
                if name.strip():
                    names.setdefault(wnid, name.strip())
        return ids
    meta = labels.devkit_meta or _find([truth.parent, *search], DEVKIT_META)
    if meta is None:
        raise DataError(f"{truth.name} needs the devkit's {DEVKIT_META} to map ILSVRC2012_IDs to wnids: pass "
                        "`devkit_meta` FILE, or `val_synsets` FILE (one wnid per line in ILSVRC2012_ID order)",
                        mentions=("devkit_meta", "val_synsets"))
    ids = {}
    for s in read_synsets(meta):
        try:
            sid, wnid = int(s["ILSVRC2012_ID"]), str(s["WNID"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{meta}: synsets lack ILSVRC2012_ID/WNID; use `val_synsets` FILE",
                            mentions=("val_synsets",)) from None
        ids[sid] = wnid
        if isinstance(s.get("words"), str) and s["words"]:
            names.setdefault(wnid, s["words"])
    return ids


def _read_mapping(path: Path | None) -> dict[str, str]:
    """LOC_synset_mapping.txt: "n01440764 tench, Tinca tinca" per line -> {wnid: name}."""
    if path is None:
        return {}
    out = {}
    for line in _read_text(path, "synset mapping file").splitlines():
        wnid, _, name = line.strip().partition(" ")
        if wnid:
            out[wnid] = name.strip() or wnid
    return out


def _drop_unknown_classes(layout: Layout) -> None:
    """Validation images whose wnid has no training folder cannot be scored: skip them."""
    known = set(layout.classes)
    for s, entries in layout.splits.items():
        bad = [(p, w) for p, w in entries if w not in known]
        if bad:
            if len(bad) == len(entries):
                raise DataError(f"none of the {s} labels ({bad[0][1]}, ...) is a class of train/: wrong label "
                                "files? (for the devkit, check meta.mat or `val_synsets`)", mentions=("val_synsets",))
            layout.splits[s] = [(p, w) for p, w in entries if w in known]
            layout.unlabeled[s] += [{"path": p, "reason": f"class {w} is not among the training classes"}
                                    for p, w in bad]
