"""Data augmentation (paper section 5.1 "Data Augmentation", and the authors' released code).

Training: a random 224x224 patch of each 256x256 image, mirrored with probability 1/2, minus
the mean image, plus the PCA colour shift. Test: the centre patch, or the four corners and
the centre with their mirrors (10 patches). The network's input is always in 0-255 units.

Two recipes (docs/paper-vs-code.md):
- paper (defaults): per image; the crop of (image - mean image); alpha_i ~ N(0, 0.1) and a
  shift of P (alpha * lambda_255) / 255 grey levels, i.e. the eigenvalues of [0, 1] pixels
  scaled back to 0-255 (about 5.5 levels along p1 on ImageNet; applying lambda_255 directly
  would shift by ~1,400).
- code (convdata.py / convdata_jpeg.py of the release): one crop offset and one flip per
  chunk of 32 consecutive images; the CENTRAL 224x224 of the mean image subtracted from
  every crop; shift P (alpha * 0.1 * sqrt(lambda_255)) with alpha ~ N(0, 1), then the whole
  input divided by 1 + 0.1 (only while the noise is on).

Everything runs as a few batched tensor ops on the images' device; random numbers come
from the torch.Generator passed in (drawn on its own device), so the same generator state
gives the same batch on any device.

A third mean subtraction, mean_crop="channel", reads the paper's "subtracting the mean activity
over the training set from each pixel" as a per-channel mean: every pixel minus the mean image's
average colour (the manifest's mean_rgb), the same at every position (docs/paper-to-code.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from alexnet_cli.config import MEAN_CROPS, PCA_SCALES, check_choice
from alexnet_cli.errors import AlexnetError, UsageError

CROP = 224             # 5.1: 224x224 patches of the 256x256 images

# 5.1 test time: (top, left, mirrored) of the four corners and the centre, then their mirrors
TEN_CROPS: list[tuple[int, int, bool]] = [
    (0, 0, False), (0, 32, False), (32, 0, False), (32, 32, False), (16, 16, False),
    (0, 0, True), (0, 32, True), (32, 0, True), (32, 32, True), (16, 16, True),
]


def _mean_chw(mean_image: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(256, 256, 3) float mean image -> (3, 256, 256) float32 on `device`."""
    return mean_image.to(device=device, dtype=torch.float32).permute(2, 0, 1)


def channel_mean(mean_image: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) mean image -> (3,) float32, its average colour (prep's manifest mean_rgb)."""
    return mean_image.to(torch.float64).mean(dim=(0, 1)).to(dtype=torch.float32)


def crop(images: torch.Tensor, mean_image: torch.Tensor, top: int, left: int, flip: bool = False,
         *, mean_crop: str = "crop", size: int = CROP, mean_rgb: torch.Tensor | None = None) -> torch.Tensor:
    """One patch position for the whole batch: uint8 (B, H, W, 3) -> float32 (B, 3, size, size).

    mean_crop="crop": the patch of (image - mean image), mirrored if `flip` (paper).
    mean_crop="center": the (mirrored) patch minus the central size x size of the mean image,
    never mirrored (the released code).
    mean_crop="channel": the (mirrored) patch minus the mean image's average colour at every pixel:
    `mean_rgb` when given (`channel_mean(mean_image)`, computed once by a caller that crops the
    same mean image many times), else computed here. The other modes ignore `mean_rgb`.
    """
    check_choice("mean_crop", mean_crop, MEAN_CROPS)
    h, w = images.shape[1:3]
    if not (0 <= top <= h - size and 0 <= left <= w - size):
        raise AlexnetError(f"crop ({top}, {left}) of size {size} does not fit in {h}x{w} images")
    x = images[:, top:top + size, left:left + size].permute(0, 3, 1, 2).float()  # (B, 3, size, size)
    if mean_crop == "channel":
        rgb = channel_mean(mean_image) if mean_rgb is None else mean_rgb          # (3,)
        x = x - rgb.to(images.device)[:, None, None]
        return x.flip(-1) if flip else x
    mean = _mean_chw(mean_image, images.device)                                  # (3, H, W)
    if mean_crop == "crop":
        x = x - mean[:, top:top + size, left:left + size]
        return x.flip(-1) if flip else x
    mt, ml = (h - size) // 2, (w - size) // 2
    return (x.flip(-1) if flip else x) - mean[:, mt:mt + size, ml:ml + size]


def center_crop(images: torch.Tensor, mean_image: torch.Tensor, *, mean_crop: str = "crop",
                mean_rgb: torch.Tensor | None = None) -> torch.Tensor:
    """The central 224x224 patch, offset (16, 16) of a 256x256 image: float32 (B, 3, 224, 224)."""
    h, w = images.shape[1:3]
    return crop(images, mean_image, (h - CROP) // 2, (w - CROP) // 2, mean_crop=mean_crop, mean_rgb=mean_rgb)


def test_crops(images: torch.Tensor, mean_image: torch.Tensor, crops: int, *,
               mean_crop: str = "crop", mean_rgb: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """Test-time patches (5.1): crops=1 the centre one; crops=10 the TEN_CROPS in order.
    mean_crop="channel": the average colour is computed once for all the patches, unless given
    (`mean_rgb`, see `crop`)."""
    if mean_crop == "channel" and mean_rgb is None:
        mean_rgb = channel_mean(mean_image)                                      # (3,), once
    if crops == 1:
        yield center_crop(images, mean_image, mean_crop=mean_crop, mean_rgb=mean_rgb)
    elif crops == 10:
        for top, left, flip in TEN_CROPS:
            yield crop(images, mean_image, top, left, flip, mean_crop=mean_crop, mean_rgb=mean_rgb)
    else:
        raise UsageError(f"crops must be 1 or 10, got {crops}", field="crops", value=crops)


test_crops.__test__ = False  # a library function, not a pytest test, wherever it is imported


@dataclass
class AugmentDraw:
    """The random choices for one batch, one row per image (chunked draws are repeated)."""

    top: torch.Tensor    # int64 (B,), 0..H-crop
    left: torch.Tensor   # int64 (B,), 0..W-crop
    flip: torch.Tensor   # bool (B,)
    alpha: torch.Tensor | None  # float32 (B, 3) ~ N(0, 1), or None: no colour noise


class TrainAugment:
    """Random crops, mirrors and PCA colour noise for a training batch (paper 5.1).
    `channels_last=True` returns the batch in NHWC memory (the CUDA network's layout)."""

    def __init__(self, mean_image: torch.Tensor, *, eigenvalues: torch.Tensor | None = None,
                 eigenvectors: torch.Tensor | None = None, pca_std: float = 0.1, pca_scale: str = "paper",
                 chunk: int = 1, mean_crop: str = "crop", crop: int = CROP, crop_offsets: int | None = None,
                 channels_last: bool = False):
        """`crop_offsets`: crop positions per axis, 0 .. crop_offsets - 1 (config.CROP_OFFSETS: 32 is the
        paper's factor of 2048, 33 the released code's 0..32); None: every position that fits."""
        check_choice("pca_scale", pca_scale, PCA_SCALES)
        check_choice("mean_crop", mean_crop, MEAN_CROPS)
        if chunk < 1:
            raise UsageError(f"chunk must be positive, got {chunk}", field="chunk", value=chunk)
        h, w = mean_image.shape[:2]
        if crop_offsets is not None and not 1 <= crop_offsets <= min(h, w) - crop + 1:
            raise UsageError(f"crop_offsets must be from 1 to {min(h, w) - crop + 1} for {crop}x{crop} crops of "
                             f"{h}x{w} images, got {crop_offsets}", field="crop_offsets", value=crop_offsets)
        if (eigenvalues is None) != (eigenvectors is None):
            raise AlexnetError("pass both eigenvalues and eigenvectors for PCA colour noise, or neither")
        self.mean_image = torch.as_tensor(mean_image, dtype=torch.float32)      # (256, 256, 3)
        self.mean_rgb = channel_mean(self.mean_image)                            # (3,), for "channel"
        self.pca_std, self.pca_scale, self.chunk = pca_std, pca_scale, chunk
        self.mean_crop, self.crop, self.channels_last = mean_crop, crop, channels_last
        self.offsets = (crop_offsets, crop_offsets) if crop_offsets else (h - crop + 1, w - crop + 1)   # rows, cols
        self.eigenvectors = self.noise_scale = None
        if eigenvalues is not None:
            lam = torch.as_tensor(eigenvalues, dtype=torch.float32).clamp(min=0)  # (3,) 0-255 units
            self.eigenvectors = torch.as_tensor(eigenvectors, dtype=torch.float32)  # (3, 3), columns
            # standard deviation of the shift along each p_i, in grey levels, per unit alpha ~ N(0, 1)
            if pca_scale == "paper":   # 255 * (0.1 * alpha) * lambda_255 / 255^2
                self.noise_scale = pca_std * lam / 255.0
            else:                      # the code: 0.1 * alpha * sqrt(lambda_255)
                self.noise_scale = pca_std * lam.sqrt()

    def sample(self, batch: int, generator: torch.Generator, *, color_noise: bool = True) -> AugmentDraw:
        """Draw the batch's offsets, flips and alphas from `generator` (on its own device)."""
        chunks = -(-batch // self.chunk)
        dev = generator.device
        top = torch.randint(0, self.offsets[0], (chunks,), generator=generator, device=dev)
        left = torch.randint(0, self.offsets[1], (chunks,), generator=generator, device=dev)
        flip = torch.randint(0, 2, (chunks,), generator=generator, device=dev).bool()
        alpha = None
        if color_noise and self.noise_scale is not None:
            alpha = torch.randn(batch, 3, generator=generator, device=dev)      # per image, even when chunked

        def per_image(t: torch.Tensor) -> torch.Tensor:              # (chunks,) -> (B,)
            return t.repeat_interleave(self.chunk)[:batch]

        return AugmentDraw(per_image(top), per_image(left), per_image(flip), alpha)

    def _to(self, device: torch.device) -> None:
        """Move the mean image and the PCA tensors to the images' device, once."""
        self.mean_image = self.mean_image.to(device)                  # no-op once it is there
        self.mean_rgb = self.mean_rgb.to(device)
        if self.noise_scale is not None:
            self.noise_scale, self.eigenvectors = self.noise_scale.to(device), self.eigenvectors.to(device)

    def apply(self, images: torch.Tensor, draw: AugmentDraw) -> torch.Tensor:
        """uint8 (B, H, W, 3) and the batch's draw -> float32 (B, 3, crop, crop)."""
        dev, size = images.device, self.crop
        h, w = images.shape[1:3]
        if images.shape[1:] != self.mean_image.shape:
            raise AlexnetError(f"images are {tuple(images.shape[1:])}, the mean image {tuple(self.mean_image.shape)}")
        self._to(dev)
        top, left, flip = draw.top.to(dev), draw.left.to(dev), draw.flip.to(dev)
        steps = torch.arange(size, device=dev)
        rows = top[:, None] + steps                                              # (B, size)
        cols = left[:, None] + torch.where(flip[:, None], size - 1 - steps, steps)  # (B, size), mirrored
        batch = torch.arange(images.shape[0], device=dev)[:, None, None]
        x = images[batch, rows[:, :, None], cols[:, None, :]].float()           # (B, size, size, 3)
        mean = self.mean_image                                                   # (H, W, 3)
        if self.mean_crop == "crop":     # the same patch (and mirror) of the mean image
            x = x - mean[rows[:, :, None], cols[:, None, :]]                     # (B, size, size, 3)
        elif self.mean_crop == "channel":  # the average colour, the same at every pixel
            x = x - self.mean_rgb
        else:                            # the code: the central patch, never mirrored
            mt, ml = (h - size) // 2, (w - size) // 2
            x = x - mean[mt:mt + size, ml:ml + size]
        if draw.alpha is not None:
            shift = (draw.alpha.to(dev) * self.noise_scale) @ self.eigenvectors.T   # (B, 3) grey levels
            x = x + shift[:, None, None, :]
            if self.pca_scale == "code":  # keep the training inputs at the scale of the test inputs
                x = x / (1.0 + self.pca_std)
        x = x.permute(0, 3, 1, 2)                                # (B, 3, size, size), NHWC in memory
        return x if self.channels_last else x.contiguous()     # channels_last: no copy at all

    def __call__(self, images: torch.Tensor, generator: torch.Generator, *,
                 color_noise: bool = True) -> torch.Tensor:
        """uint8 (B, 256, 256, 3) -> float32 (B, 3, 224, 224), augmented."""
        return self.apply(images, self.sample(images.shape[0], generator, color_noise=color_noise))
