"""Drawing helpers for the paper's figures (section 7.1), with PIL only: captioned image
tiles, horizontal probability bars (figure 4, left), and grids of tiles (figures 3 and 4).

Everything here is generic: a tile is any RGB image (a PIL image or a uint8 (H, W, 3)
array), and the helpers compose: `grid([hstack([labeled_tile(img, name), hbar_chart(...)])])`.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from alexnet_cli.atomic import cannot_write, save_output
from alexnet_cli.errors import AlexnetError, UsageError

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
BAR = (130, 170, 230)
BAR_HIGHLIGHT = (235, 110, 110)  # figure 4: the correct label's bar is red
TRACK = (225, 225, 225)


@lru_cache(maxsize=8)
def font(size: int = 12) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at `size` pixels (a scalable one when FreeType is available)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def to_image(img: Image.Image | np.ndarray) -> Image.Image:
    """A PIL RGB image from a PIL image or a uint8 (H, W, 3) / (H, W) array."""
    if isinstance(img, Image.Image):
        return img.convert("RGB")
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).convert("RGB")


def fit_text(text: str, width: int, fnt=None) -> str:
    """`text`, shortened in the middle with an ellipsis until it fits in `width` pixels: the end
    stays (a file's suffix and the digits that tell ILSVRC2012_val_00000001.JPEG from ..._00000002)."""
    fnt = fnt or font()
    if fnt.getlength(text) <= width:
        return text
    for keep in range(len(text) - 1, 0, -1):
        head = keep // 2                      # the end gets the odd character
        short = text[:head] + "..." + text[len(text) - (keep - head):]
        if fnt.getlength(short) <= width:
            return short
    return "..."


def labeled_tile(img: Image.Image | np.ndarray, text: str, *, size: int | None = None,
                 font_size: int = 12, pad: int = 4, color: tuple[int, int, int] = BLACK,
                 above: bool = False) -> Image.Image:
    """The image (scaled to `size` x `size` if given) with a one-line caption below it (`above`:
    a title over it)."""
    img = to_image(img)
    if size is not None:
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    fnt = font(font_size)
    line = font_size + 2 * pad
    tile = Image.new("RGB", (img.width, img.height + line), WHITE)
    tile.paste(img, (0, line if above else 0))
    ImageDraw.Draw(tile).text((pad, pad if above else img.height + pad), fit_text(text, img.width - 2 * pad, fnt),
                              fill=color, font=fnt)
    return tile


def hbar_chart(labels: Sequence[str], values: Sequence[float], *, width: int = 320, bar_height: int = 20,
               vmax: float = 1.0, highlight: int | None = None, font_size: int = 12, pad: int = 4,
               value_format: str = "{:.1%}") -> Image.Image:
    """One horizontal bar per value (0..vmax), its label over the bar and its value at the end.

    `highlight` is the index of a bar drawn in red (figure 4: the correct label).
    """
    fnt = font(font_size)
    height = len(values) * (bar_height + pad) + pad
    chart = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(chart)
    value_w = int(fnt.getlength(value_format.format(vmax))) + 2 * pad
    track_w = width - value_w - 2 * pad
    for i, (label, value) in enumerate(zip(labels, values)):
        y = pad + i * (bar_height + pad)
        filled = int(round(track_w * min(max(value / vmax, 0.0), 1.0)))
        draw.rectangle((pad, y, pad + track_w, y + bar_height - 1), fill=TRACK)
        if filled:
            draw.rectangle((pad, y, pad + filled, y + bar_height - 1),
                           fill=BAR_HIGHLIGHT if i == highlight else BAR)
        if i == highlight:           # outlined too: a bar of 0.19% fills no pixel and would not show
            draw.rectangle((pad, y, pad + track_w, y + bar_height - 1), outline=BAR_HIGHLIGHT, width=2)
        text_y = y + (bar_height - font_size) // 2 - 1
        draw.text((2 * pad, text_y), fit_text(label, track_w - 2 * pad, fnt), fill=BLACK, font=fnt)
        draw.text((2 * pad + track_w, text_y), value_format.format(value), fill=BLACK, font=fnt)
    return chart


def hstack(images: Sequence[Image.Image], *, pad: int = 8, bg: tuple[int, int, int] = WHITE) -> Image.Image:
    """Images side by side, top-aligned."""
    width = sum(im.width for im in images) + pad * (len(images) - 1)
    out = Image.new("RGB", (width, max(im.height for im in images)), bg)
    x = 0
    for im in images:
        out.paste(im, (x, 0))
        x += im.width + pad
    return out


def grid(tiles: Sequence[Image.Image], cols: int, *, pad: int = 8,
         bg: tuple[int, int, int] = WHITE) -> Image.Image:
    """Tiles in rows of `cols`, each in a cell as large as the largest tile, with a `pad` border."""
    if not tiles:
        raise AlexnetError("nothing to draw")
    cols = max(1, min(cols, len(tiles)))
    rows = -(-len(tiles) // cols)
    cell_w, cell_h = max(t.width for t in tiles), max(t.height for t in tiles)
    out = Image.new("RGB", (pad + cols * (cell_w + pad), pad + rows * (cell_h + pad)), bg)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out.paste(tile, (pad + c * (cell_w + pad), pad + r * (cell_h + pad)))
    return out


# suffixes whose format PIL writes from RGB (it reads many more: .psd, .xpm, ...)
PICTURE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                   ".tif": "TIFF", ".tiff": "TIFF", ".gif": "GIF"}


def check_picture_path(path: str | Path, formats: Iterable[str] = PICTURE_FORMATS) -> Path:
    """`path` as a Path when its suffix is one of `formats` (default: those save_picture writes;
    report.plot_runs passes matplotlib's); else a UsageError about `out`, the argument every
    drawing function names its picture by. Every function that draws one (kernel_report,
    draw_predictions, draw_neighbors, report) checks it before its work, and the CLI before it
    starts them: `k.txt` would otherwise get PNG bytes after the work."""
    path = Path(path)
    suffixes = {s.lower() for s in formats}
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"out {path}: the suffix names the format; use one of {', '.join(sorted(suffixes))}",
                         field="out", value=path)
    return path


def save_picture(img: Image.Image, path: str | Path) -> Path:
    """Write `img` in the format its suffix names (PICTURE_FORMATS; PNG for any other suffix),
    creating the folder: encoded in memory, then written atomically (atomic.save_output), so
    a full disk leaves an earlier picture of that name as it was, and no half picture; a path
    that cannot be written is a user error."""
    path = Path(path)
    fmt = PICTURE_FORMATS.get(path.suffix.lower(), "PNG")
    buf = io.BytesIO()
    try:
        img.convert("RGB").save(buf, format=fmt)
    except OSError as exc:                  # an encoder's own error
        raise AlexnetError(f"{path}: cannot write the picture: {cannot_write(path, exc)}") from None
    return save_output(path, buf.getbuffer(), "the picture")
