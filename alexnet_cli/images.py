"""Reading one image file the way `alexnet prep` does (paper section 3): any mode to RGB,
shorter side to 256, the central 256x256 patch.

`predict` and `neighbors` use the same function on the user's own images, so a query goes
through exactly the preprocessing of the training data; for those alone it first applies the
file's EXIF orientation (`exif=True`), so a phone photo is seen upright. `prep` does not: the
paper's pipeline reads ImageNet's files as they are stored.
"""

from __future__ import annotations

import os
import stat
import struct
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from alexnet_cli.errors import DataError

SIZE = 256  # paper section 3: rescale the shorter side to 256, take the central 256x256
IMAGE_SHAPE = (SIZE, SIZE, 3)   # every stored image: uint8 RGB, height x width x channel


def to_rgb(img: Image.Image) -> Image.Image:
    """Grayscale, CMYK, palette and alpha images become 8-bit RGB (16-bit grey: 65535 -> 255)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # the full 16-bit range to 8 bits (65535 -> 255), the same for every image, so a dark
        # image stays dark; PIL reads 16-bit PNGs as "I" too, hence its values are clipped to it
        arr = np.clip(np.asarray(img, dtype=np.float64), 0.0, 65535.0)
        arr = (arr * (255.0 / 65535.0)).round().astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    return img.convert("RGB")


def resize_center_crop(img: Image.Image, size: int = SIZE) -> np.ndarray:
    """Shorter side -> `size` (bilinear, antialiased), then the central size x size patch."""
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    # np.array, not np.asarray: a writable copy (196 KB), so torch.from_numpy takes it without a warning
    return np.array(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def upright(img: Image.Image) -> Image.Image:
    """`img` turned as its EXIF Orientation tag says (ImageOps.exif_transpose); as stored when it
    has no tag, or an EXIF block too damaged to read one (the pixels are still good)."""
    try:
        return ImageOps.exif_transpose(img)
    except (KeyError, TypeError, ValueError, SyntaxError, struct.error):
        return img


class UnreadableImage(DataError):
    """An image file that cannot be decoded; `reason` says why in a few words
    ("empty file", "truncated ...", "not an image ...", "undecodable ...")."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.reason = reason


def load_image(path: str | Path, size: int = SIZE, *, exif: bool = False) -> np.ndarray:
    """An image file as a writable uint8 (size, size, 3) RGB array, whatever its mode or real
    format (a PNG named .JPEG is read as the PNG it is). Raises UnreadableImage (a DataError)
    otherwise, also for what is not a regular file (a FIFO would block forever) and for an image
    whose decoded or resized size exceeds the bounds below (a 300-byte PNG can decode to gigabytes).

    `exif`: turn the image as its EXIF Orientation tag says (a phone photo stored sideways),
    for the user's own images (predict, neighbors' queries); off for `prep`, whose output stays
    the paper's pipeline."""
    try:
        with _open_regular(path) as file, warnings.catch_warnings():
            # PIL warns above 89 M pixels (and refuses above 179 M): the bound that matters is
            # _check_size's, after a JPEG's draft scale-down, so its warning is not needed
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as img:
                if img.format == "JPEG" and img.mode in ("RGB", "L"):
                    # decode at the smallest DCT scale that keeps the shorter side >= 2 * size:
                    # several times faster, and the antialiased resize that follows hides it
                    w, h = img.size
                    img.draft(img.mode, (max(1, w * 2 * size // min(w, h)), max(1, h * 2 * size // min(w, h))))
                _check_size(path, *img.size, size)
                img.load()
                # turned after the draft scale-down: that keeps the shorter side >= 2 * size,
                # which turning the image does not change
                return resize_center_crop(to_rgb(upright(img) if exif else img), size)
    except FileNotFoundError:
        raise UnreadableImage(path, "no such file") from None
    except IsADirectoryError:
        raise UnreadableImage(path, "a folder, not an image file") from None
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError, EOFError) as exc:
        raise UnreadableImage(path, _reason(path, exc)) from None


def user_image(image: str | Path | Image.Image | np.ndarray, size: int = SIZE) -> np.ndarray:
    """A user's own image as predict and neighbors read it, uint8 (size, size, 3): a file through
    load_image(exif=True); a PIL image or a uint8 (H, W, 3) / (H, W) array, already in memory,
    through the same steps (EXIF orientation, RGB, shorter side to `size`, central patch)."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, size, exif=True)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise DataError(f"an image array must be uint8 (H, W, 3) or (H, W), got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise DataError(f"not an image: {type(image).__name__} (give a path, a PIL image or a uint8 array)")
    return resize_center_crop(to_rgb(upright(image)), size)


# Bounds on the work per image (memory: 3 bytes a pixel, a few copies while converting).
MAX_DECODED_PIXELS = 1 << 26   # 67 M pixels (8192 x 8192), counted after the JPEG draft scale-down
MAX_RESIZED_PIXELS = 1 << 24   # 16.7 M pixels: 256 x 65,536, an aspect ratio of 256:1


def load_images(images: Sequence[str | Path], undone: str = "no image was predicted", *,
                exif: bool = False) -> list[np.ndarray]:
    """Every image, each uint8 (256, 256, 3) (`exif`: turned upright, as load_image), or one
    DataError that names every file that is not a readable image and, when others were given
    with it, says that none was used (`undone`): a bad file stops the whole command, it is never
    skipped (predict's images, neighbors' queries)."""
    pixels, bad = [], []
    for path in images:
        try:
            pixels.append(load_image(path, exif=exif))
        except DataError as exc:
            bad.append(str(exc))
    if len(bad) == 1 and len(images) == 1:
        raise DataError(bad[0])
    if len(bad) == 1:
        raise DataError(f"{bad[0]}: {undone} (1 of the {len(images)} images is unreadable: leave it out or "
                        "replace it)")
    if bad:
        raise DataError(f"{len(bad)} of the {len(images)} images are unreadable: " + "; ".join(bad[:10])
                        + ("; ..." if len(bad) > 10 else "") + f": {undone} (leave them out or replace them)")
    return pixels


def _check_size(path: str | Path, w: int, h: int, size: int) -> None:
    """UnreadableImage ("too large ...") if a w x h image is too big to decode or, resized to
    a shorter side of `size`, to hold in memory."""
    if w < 1 or h < 1:
        raise UnreadableImage(path, f"undecodable (its size is {w} x {h})")
    if w * h > MAX_DECODED_PIXELS:
        raise UnreadableImage(path, f"too large ({w} x {h} pixels; at most {MAX_DECODED_PIXELS:,} are decoded)")
    if max(w, h) * size // min(w, h) * size > MAX_RESIZED_PIXELS:
        raise UnreadableImage(path, f"too large ({w} x {h}: resized to a shorter side of {size} it would have "
                                    f"over {MAX_RESIZED_PIXELS:,} pixels)")


def _open_regular(path: str | Path):
    """`path` opened for reading as a binary file object, if it is a regular file (links
    followed); UnreadableImage otherwise. Opened without blocking, so a FIFO cannot hang."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(mode):
            raise UnreadableImage(path, not_regular(mode))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def special_kind(mode: int) -> str:
    """What a path of this st_mode, neither a regular file nor a folder, is: "a FIFO", ..."""
    return ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")


def path_kind(mode: int) -> str:
    """What a path of this st_mode that is no regular file is: "a folder", or special_kind's."""
    return "a folder" if stat.S_ISDIR(mode) else special_kind(mode)


def not_regular(mode: int) -> str:
    """Why a path of this st_mode, neither a regular file nor a folder, is not read."""
    return f"not a regular file ({special_kind(mode)})"


def _reason(path: str | Path, exc: Exception) -> str:
    message = " ".join(str(exc).split()) or type(exc).__name__
    try:
        if Path(path).stat().st_size == 0:
            return "empty file"
    except OSError:
        pass
    if isinstance(exc, UnidentifiedImageError):
        return "not an image (no known image format)"
    if "truncated" in message.lower() or isinstance(exc, (EOFError, SyntaxError)):
        return f"truncated ({message})"
    if isinstance(exc, Image.DecompressionBombError):
        return f"too large ({message})"
    return f"undecodable ({message})"
