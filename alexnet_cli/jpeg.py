"""The JPEG codec of jpeg shards (docs/formats.md): `encode_jpeg` when `prep` stores an image,
`decode_jpeg` on the CPU (simplejpeg's libjpeg-turbo, else PIL: the same pixels) and
`decode_jpegs_on` a CUDA device (one batched nvJPEG call), and `resolve_decode`, which picks
between the two for the loader's --decode.

Where the bytes are stored is the shard schema's business (alexnet_cli.shards: `jpeg_index`);
this module only turns 256x256 RGB images into JPEG files and back.
"""

from __future__ import annotations

import functools
import io
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from alexnet_cli.config import check_choice
from alexnet_cli.errors import DataError, UsageError
from alexnet_cli.images import IMAGE_SHAPE

DECODES = ("cpu", "gpu", "auto")


def encode_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """uint8 (256, 256, 3) -> the bytes of a JPEG file as a uint8 vector."""
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="JPEG", quality=quality)
    return np.frombuffer(buf.getvalue(), np.uint8)


@functools.cache
def _simplejpeg():
    """simplejpeg (libjpeg-turbo, the GIL released while it decodes), or None where it is not
    installed (then PIL decodes: the same pixels, slower)."""
    try:
        import simplejpeg
    except ImportError:
        return None
    return simplejpeg


def decode_jpeg(data, out: np.ndarray | None = None) -> np.ndarray:
    """The bytes of a stored JPEG (any buffer: numpy uint8, bytes, memoryview) -> uint8
    (256, 256, 3) RGB, written into `out` if given (a C-contiguous (256, 256, 3) array).

    simplejpeg's libjpeg-turbo decode, straight into `out`, in one C call that releases the
    GIL: loader threads decode in parallel. Its pixels are PIL's exactly (the same library and
    settings: accurate DCT, smooth upsampling; tests check it). ValueError for bytes that are
    not a decodable 256x256 JPEG."""
    if out is None:
        out = np.empty(IMAGE_SHAPE, np.uint8)
    codec = _simplejpeg()
    if codec is None:
        try:
            with Image.open(io.BytesIO(bytes(data))) as img:
                rgb = np.asarray(img.convert("RGB"))
        except (OSError, SyntaxError) as exc:
            raise ValueError(f"stored JPEG cannot be decoded: {exc}") from None
        if rgb.shape != IMAGE_SHAPE:
            raise ValueError(f"stored JPEG is {rgb.shape[:2]}, expected {IMAGE_SHAPE[:2]}")
        out[...] = rgb
        return out
    try:
        got = codec.decode_jpeg(data, "RGB", buffer=out)
    except ValueError as exc:   # corrupt bytes, or an image larger than `out`
        raise ValueError(f"stored JPEG cannot be decoded: {exc}") from None
    if got.shape != IMAGE_SHAPE:
        raise ValueError(f"stored JPEG is {got.shape[:2]}, expected {IMAGE_SHAPE[:2]}")
    return out


@functools.cache
def gpu_jpeg_decoder():
    """A batched nvJPEG decoder, f(list of uint8 CPU tensors, device) -> list of (3, H, W)
    uint8 tensors on the device: TorchCodec's (torchvision's image codecs' successor) where it
    is installed, else torchvision.io's (deprecated in torchvision 0.29); None if neither.
    TorchCodec's is used through _CodecDecoder, which turns to torchvision's for good if the
    installed TorchCodec refuses the call's arguments."""
    vision = _vision_decoder()
    try:
        from torchcodec.decoders import decode_jpeg as codec_decode
    except (ImportError, OSError, RuntimeError):    # not installed, or its libraries do not load
        return vision
    return _CodecDecoder(codec_decode, vision)


def _vision_decoder():
    """torchvision.io's batched decode, or None where torchvision lacks it."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg as vision_decode
    except ImportError:
        return None

    # each call warns that the codecs are deprecated: a DeprecationWarning, which Python's default
    # filters hide outside __main__. The caller's filters are left alone: no filter added (a
    # notebook's would change), no catch_warnings (not thread-safe: this runs in the loader's thread)
    return lambda blobs, device: vision_decode(blobs, mode=ImageReadMode.RGB, device=device)


class _CodecDecoder:
    """TorchCodec's decode_jpeg(blobs, mode="RGB", device=...), a young API: a version that
    takes other arguments raises TypeError, and then torchvision's decoder (when there is one)
    decodes this call and every later one, the choice remembered rather than tried per batch."""

    def __init__(self, codec, fallback):
        self.codec, self.fallback, self.refused = codec, fallback, False

    def __call__(self, blobs, device):
        if not self.refused:
            try:
                return self.codec(blobs, mode="RGB", device=device)
            except TypeError as exc:
                if self.fallback is None:
                    raise UsageError(f"the installed torchcodec's decode_jpeg refuses the call ({exc}) and "
                                     "torchvision has no decoder to use instead: use `decode` cpu",
                                     mentions=("decode",)) from None
                self.refused = True
        return self.fallback(blobs, device)


def resolve_decode(decode: str, fmt: str, device: str | torch.device) -> str:
    """Where the loader decodes: "cpu" or "gpu" for jpeg shards, "none" for raw ones (nothing
    to decode). auto: gpu on a CUDA device when a GPU decoder is installed, else cpu; gpu
    without them is a UsageError (never a silent CPU decode)."""
    check_choice("decode", decode, DECODES)
    if fmt != "jpeg":
        return "none"
    device = torch.device(device)
    usable = device.type == "cuda" and gpu_jpeg_decoder() is not None
    if decode == "gpu" and not usable:
        why, mentions = (("a CUDA `device`", ("device", "decode")) if device.type != "cuda"
                         else ("torchvision with nvJPEG or torchcodec", ("decode",)))
        raise UsageError(f"decode gpu needs {why} (device {device}); use `decode` cpu or auto", field="decode",
                         value=decode, mentions=mentions)
    return "gpu" if decode == "gpu" or (decode == "auto" and usable) else "cpu"


def decode_jpegs_on(blobs: Sequence, device: torch.device) -> torch.Tensor:
    """Stored JPEGs (uint8 vectors) -> uint8 (B, 256, 256, 3) RGB on a CUDA device, in one
    batched nvJPEG call on the current stream. nvJPEG's pixels differ slightly from
    libjpeg-turbo's (docs/formats.md gives the measured difference)."""
    decoder = gpu_jpeg_decoder()
    tensors = [torch.from_numpy(np.asarray(b, np.uint8)) for b in blobs]
    try:
        chw = decoder(tensors, device)                                       # B x (3, H, W)
    except RuntimeError as exc:
        raise DataError(f"JPEGs cannot be decoded on {device} ({str(exc).splitlines()[0]}): "
                        "run `alexnet prep SRC OUT --verify`, or use `decode` cpu", mentions=("decode",)) from None
    bad = [tuple(c.shape) for c in chw if tuple(c.shape) != (3, *IMAGE_SHAPE[:2])]
    if bad:
        raise DataError(f"a stored JPEG decodes to {bad[0]}, expected (3, 256, 256): "
                        "run `alexnet prep` again")
    return torch.stack([c.permute(1, 2, 0) for c in chw]) if chw else \
        torch.empty((0, *IMAGE_SHAPE), dtype=torch.uint8, device=device)           # (B, 256, 256, 3)
