"""Just enough of MATLAB's .mat formats to read the ILSVRC devkit's `meta.mat`.

The devkit ships `meta.mat` as a MATLAB v5 file (zlib-compressed elements holding a struct
array `synsets` with fields ILSVRC2012_ID, WNID, words, ...). scipy.io.loadmat reads it, but
scipy is not a dependency of this tool, so this module parses the documented v5 element
format itself: numeric arrays, char arrays, cells and structs, which is all meta.mat uses
(MathWorks, "MAT-File Format", version 5). Files saved with `-v7.3` are HDF5 and are read
with h5py. Anything else raises DataError; `alexnet prep --val-synsets FILE` (one wnid per
line in ILSVRC2012_ID order) is the way around a meta.mat this module cannot read.
"""

from __future__ import annotations

import stat
import struct
import zlib
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from alexnet_cli.errors import DataError

# v5 data types (miXXX) -> numpy dtypes, and the element types used here.
_NUMERIC = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8",
            16: "u1", 17: "u2", 18: "u4"}
_MATRIX, _COMPRESSED = 14, 15
_UTF = {16: "utf-8", 17: "utf-16", 18: "utf-32"}
# array classes (mxXXX_CLASS)
_CELL, _STRUCT, _OBJECT, _CHAR, _SPARSE = 1, 2, 3, 4, 5


def read_synsets(path: str | Path) -> list[dict[str, Any]]:
    """The `synsets` struct array of a devkit meta.mat as a list of plain dicts
    (ILSVRC2012_ID: int, WNID: str, words: str, ...)."""
    path = Path(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):   # a FIFO would block the read forever
            raise DataError(f"{path}: not a regular file")
        head = path.read_bytes()[:128]
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if head[:8] == b"\x89HDF\r\n\x1a\n" or (len(head) >= 128 and _is_hdf5(path)):
        return _read_synsets_v73(path)
    if head[:6] != b"MATLAB" or len(head) < 128:
        raise DataError(f"{path}: not a MATLAB .mat file")
    try:
        variables = read_mat_v5(path.read_bytes())
    except (struct.error, zlib.error, ValueError, IndexError, KeyError, RecursionError) as exc:
        raise DataError(f"{path}: cannot parse this MATLAB file ({exc}); pass the class order as text "
                        "with `val_synsets` FILE (one wnid per line, in ILSVRC2012_ID order)",
                        mentions=("val_synsets",)) from None
    if "synsets" not in variables or not isinstance(variables["synsets"], list):
        raise DataError(f"{path}: no struct array 'synsets' in it (not the devkit's meta.mat?)")
    return [{k: _scalar(v) for k, v in s.items()} for s in variables["synsets"]]


def _is_hdf5(path: Path) -> bool:
    try:
        return h5py.is_hdf5(path)
    except OSError:
        return False


def _scalar(v: Any) -> Any:
    if isinstance(v, np.ndarray) and v.size == 1:
        x = v.reshape(-1)[0]
        return int(x) if float(x).is_integer() else float(x)
    return v


# ---------------------------------------------------------------------------- v5

def read_mat_v5(data: bytes) -> dict[str, Any]:
    """All top-level variables of a v5 MAT file: name -> value."""
    endian = {b"IM": "<", b"MI": ">"}.get(data[126:128])
    if endian is None:
        raise ValueError("bad endian indicator")
    out: dict[str, Any] = {}
    pos = 128
    while pos + 8 <= len(data):
        dtype, payload, pos = _element(data, pos, endian)
        if dtype == _COMPRESSED:
            inner = zlib.decompress(payload)
            dtype, payload, _ = _element(inner, 0, endian)
        if dtype == _MATRIX:
            name, value = _matrix(payload, endian)
            out[name] = value
    return out


def _element(data: bytes, pos: int, endian: str) -> tuple[int, bytes, int]:
    """One data element at `pos`: (type, payload, position of the next element)."""
    first, second = struct.unpack_from(endian + "II", data, pos)
    if first >> 16:  # small data element: type and size packed in 4 bytes, data in the next 4
        return first & 0xFFFF, data[pos + 4:pos + 4 + (first >> 16)], pos + 8
    start, end = pos + 8, pos + 8 + second
    if end > len(data):
        raise ValueError("element runs past the end of the file")
    padded = end if first == _COMPRESSED else start + (second + 7) // 8 * 8
    return first, data[start:end], padded


def _numbers(dtype: int, payload: bytes, endian: str) -> np.ndarray:
    return np.frombuffer(payload, np.dtype(endian + _NUMERIC[dtype]))


def _matrix(payload: bytes, endian: str) -> tuple[str, Any]:
    """A miMATRIX element: (name, value). Value: ndarray, str, list (cell) or list of dicts."""
    if not payload:
        return "", np.zeros((0, 0))
    _, flags, pos = _element(payload, 0, endian)
    mx_class = struct.unpack_from(endian + "I", flags)[0] & 0xFF
    dtype, dims, pos = _element(payload, pos, endian)
    shape = tuple(int(d) for d in _numbers(dtype, dims, endian))
    _, name, pos = _element(payload, pos, endian)
    name = name.decode("ascii", "replace")
    count = int(np.prod(shape))
    if mx_class == _CELL:
        items = []
        for _ in range(count):
            _, sub, pos = _element(payload, pos, endian)
            items.append(_matrix(sub, endian)[1])
        return name, items
    if mx_class == _STRUCT:
        _, length, pos = _element(payload, pos, endian)
        width = int(_numbers(5, length, endian)[0])
        _, names, pos = _element(payload, pos, endian)
        fields = [names[i:i + width].split(b"\0")[0].decode("ascii") for i in range(0, len(names), width)]
        records = []
        for _ in range(count):
            record = {}
            for f in fields:
                _, sub, pos = _element(payload, pos, endian)
                record[f] = _matrix(sub, endian)[1]
            records.append(record)
        return name, records
    if mx_class in (_OBJECT, _SPARSE):
        raise ValueError(f"unsupported MATLAB array class {mx_class} in '{name}'")
    dtype, real, pos = _element(payload, pos, endian)
    if mx_class == _CHAR:
        if dtype in _UTF and dtype != 16:
            text = real.decode(_UTF[dtype] + ("-le" if endian == "<" else "-be"))
        elif dtype == 16:
            text = real.decode("utf-8")
        else:
            text = "".join(map(chr, _numbers(dtype, real, endian)))
        return name, _char_array(text, shape)
    return name, _numbers(dtype, real, endian).reshape(shape, order="F")


def _char_array(text: str, shape: tuple[int, ...]) -> str:
    """A char matrix stored column by column -> its rows joined by newlines (one row: the string)."""
    if len(shape) != 2 or shape[0] <= 1 or len(text) != shape[0] * shape[1]:
        return text
    rows, cols = shape
    return "\n".join("".join(text[c * rows + r] for c in range(cols)).rstrip() for r in range(rows))


# ---------------------------------------------------------------------------- v7.3 (HDF5)

def _read_synsets_v73(path: Path) -> list[dict[str, Any]]:
    try:
        with h5py.File(path, "r") as f:
            if "synsets" not in f:
                raise DataError(f"{path}: no struct array 'synsets' in it (not the devkit's meta.mat?)")
            g = f["synsets"]
            columns = {key: [_deref(f, r) for r in np.asarray(g[key]).reshape(-1)] for key in g.keys()}
    except (OSError, AttributeError, TypeError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: cannot read this MATLAB v7.3 file ({exc})") from None
    n = len(next(iter(columns.values()), []))
    return [{key: col[i] for key, col in columns.items()} for i in range(n)]


def _deref(f: h5py.File, ref) -> Any:
    obj = f[ref]
    value = np.asarray(obj[()])
    if obj.attrs.get("MATLAB_class", b"") in (b"char", "char"):
        return "".join(map(chr, value.reshape(-1)))
    return _scalar(value)
