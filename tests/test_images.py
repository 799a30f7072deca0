"""Reading one image as prep does (alexnet_cli.images): any mode to RGB, shorter side to
256, the central 256x256 patch; unreadable files raise UnreadableImage with a reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from alexnet_cli.errors import DataError
from alexnet_cli.images import UnreadableImage, load_image, resize_center_crop, to_rgb


def _reference(img: Image.Image) -> np.ndarray:
    """Independent: scale so the shorter side is exactly 256, crop the middle."""
    img = img.convert("RGB")
    w, h = img.size
    if w <= h:
        size = (256, int(round(h * 256 / w)))
    else:
        size = (int(round(w * 256 / h)), 256)
    big = np.asarray(img.resize(size, Image.Resampling.BILINEAR))
    top, left = (big.shape[0] - 256) // 2, (big.shape[1] - 256) // 2
    return big[top:top + 256, left:left + 256]


def _gradient(w: int, h: int) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1).astype(np.uint8)
    return Image.fromarray(arr)


@pytest.mark.parametrize("w, h", [(500, 375), (375, 500), (64, 100), (256, 256), (300, 257)])
def test_shorter_side_256_and_central_crop(w, h):
    img = _gradient(w, h)
    out = resize_center_crop(img)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, _reference(img))


def test_central_crop_is_central():
    # a wide image whose left and right thirds are black and middle white: the crop is all white
    arr = np.zeros((256, 768, 3), np.uint8)
    arr[:, 256:512] = 255
    out = resize_center_crop(Image.fromarray(arr))
    assert out.min() == 255


def test_load_image_png_bytes_named_jpeg_and_modes(tmp_path):
    img = _gradient(120, 90)
    png = tmp_path / "x.JPEG"
    img.save(png, format="PNG")
    np.testing.assert_array_equal(load_image(png), _reference(img))
    gray = tmp_path / "g.JPEG"
    img.convert("L").save(gray, format="JPEG", quality=95)
    g = load_image(gray)
    assert g.shape == (256, 256, 3) and (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
    cmyk = tmp_path / "c.JPEG"
    img.convert("CMYK").save(cmyk, format="JPEG", quality=95)
    c = load_image(cmyk).astype(int)
    assert np.abs(c - _reference(img).astype(int)).mean() < 12   # colours survive the CMYK round trip


def test_rgba_and_16bit_become_rgb():
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)        # transparent -> white background
    deep = Image.fromarray(np.full((4, 4), 4000, np.uint16))
    assert to_rgb(deep).mode == "RGB"


def test_16bit_grey_is_scaled_by_the_full_range_not_the_images_own_maximum(tmp_path):
    """65535 -> 255 for every image: a dark 16-bit image (all 4000) stays dark (16, not 255),
    and the same 16-bit value gives the same 8-bit value in any image."""
    levels = np.array([[0, 4000, 32768, 65535]], np.uint16).repeat(4, axis=0)      # (4, 4)
    assert np.asarray(to_rgb(Image.fromarray(levels)))[0, :, 0].tolist() == [0, 16, 128, 255]
    dark = np.asarray(to_rgb(Image.fromarray(np.full((4, 4), 4000, np.uint16))))
    assert dark.shape == (4, 4, 3) and (dark == 16).all()
    as_int = Image.fromarray(np.full((4, 4), 70000, np.int32))                 # mode "I": clipped to 16 bits
    assert (np.asarray(to_rgb(as_int)) == 255).all()
    png = tmp_path / "deep.png"                                                # a real file, through prep's reader
    Image.fromarray(np.full((300, 400), 4000, np.uint16)).save(png)
    loaded = load_image(png)
    assert loaded.shape == (256, 256, 3) and (loaded == 16).all()


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"this is not an image at all", "not an image"),
])
def test_unreadable_files_have_a_reason(tmp_path, content, reason):
    p = tmp_path / "bad.JPEG"
    p.write_bytes(content)
    with pytest.raises(UnreadableImage) as info:
        load_image(p)
    assert info.value.reason.startswith(reason)
    assert isinstance(info.value, DataError) and str(p) in str(info.value)


def test_truncated_jpeg_is_reported_as_truncated(tmp_path):
    buf = io.BytesIO()
    _gradient(200, 150).save(buf, format="JPEG", quality=90)
    p = tmp_path / "t.JPEG"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(UnreadableImage) as info:
        load_image(p)
    assert info.value.reason.startswith("truncated")


def test_missing_file(tmp_path):
    with pytest.raises(UnreadableImage, match="no such file"):
        load_image(tmp_path / "nope.JPEG")


def test_an_eof_inside_a_decoder_is_a_truncated_file(tmp_path, monkeypatch):
    """Some PIL plugins raise EOFError on a cut-off file: it must become a listed, skipped
    file (UnreadableImage), not abort the whole prep."""
    path = tmp_path / "cut.JPEG"
    Image.new("RGB", (64, 64)).save(path)

    def eof(*args, **kwargs):
        raise EOFError("no more data")

    monkeypatch.setattr(Image, "open", eof)
    with pytest.raises(UnreadableImage, match="truncated"):
        load_image(path)
