"""Tests of alexnet_cli.augment: random crops, mirrors, mean subtraction and PCA colour noise
(paper 5.1), in the paper's recipe and the released code's, plus the test-time crops.

Most tests feed "coordinate images" whose red channel is the row and green channel the
column of each pixel, so the output's first pixel tells where the crop was taken and
whether it was mirrored.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alexnet_cli.augment import TEN_CROPS, TrainAugment, center_crop, crop
from alexnet_cli.augment import test_crops as make_test_crops
from alexnet_cli.errors import AlexnetError

# ImageNet's RGB PCA on [0, 1] pixels (the widely used published values), in 0-255 units
IMAGENET_EIGVAL_255 = torch.tensor([0.2175, 0.0188, 0.0045], dtype=torch.float64) * 255.0**2
IMAGENET_EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009],
                                [-0.5808, -0.0045, -0.8140],
                                [-0.5836, -0.6948, 0.4203]], dtype=torch.float64)  # columns


def coordinate_images(batch: int, size: int = 256) -> torch.Tensor:
    """uint8 (B, size, size, 3): R = row, G = column, B = image index."""
    rows = torch.arange(size).view(1, size, 1).expand(batch, size, size)
    cols = torch.arange(size).view(1, 1, size).expand(batch, size, size)
    index = torch.arange(batch).view(batch, 1, 1).expand(batch, size, size) % 256
    return torch.stack([rows, cols, index], dim=-1).to(torch.uint8)


def decode(out: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top, left, mirrored) of each crop of coordinate images with a zero mean image."""
    top = out[:, 0, 0, 0].round().long().numpy()
    first, second = out[:, 1, 0, 0].round().long(), out[:, 1, 0, 1].round().long()
    mirrored = (second < first).numpy()
    left = np.where(mirrored, first.numpy() - 223, first.numpy())
    return top, left, mirrored


def random_images(batch: int, seed: int, size: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, size, size, 3), generator=g, dtype=torch.uint8)


def random_mean(seed: int, size: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(size, size, 3, generator=g) * 255.0


def zero_mean(size: int = 256) -> torch.Tensor:
    return torch.zeros(size, size, 3)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- offsets and flips

@pytest.mark.parametrize("offsets, last", [(32, 31), (33, 32), (None, 32)])
def test_offsets_cover_0_to_the_last_uniformly_and_half_are_flipped(offsets, last):
    """32 positions per axis (0..31) are the paper's "factor of 2048" (32 x 32 x 2 mirrors), 33
    (0..32) the released code's; None: every position a 224 crop of 256 has (0..32)."""
    aug = TrainAugment(zero_mean(), crop_offsets=offsets)
    n = last + 1
    draw = aug.sample(n * 400, gen(1))
    for drawn in (draw.top.numpy(), draw.left.numpy()):
        counts = np.bincount(drawn, minlength=34)
        assert counts[n:].sum() == 0 and drawn.min() == 0 and drawn.max() == last
        assert counts[:n].min() > 0.7 * 400 and counts[:n].max() < 1.3 * 400
    # top and left are drawn independently
    assert abs(np.corrcoef(draw.top.numpy(), draw.left.numpy())[0, 1]) < 0.05
    assert 0.47 < draw.flip.float().mean().item() < 0.53
    if offsets == 32:           # every one of the 2048 patches is drawn: the factor of the paper
        many = aug.sample(2048 * 14, gen(2))           # each patch missed with probability e^-14
        patches = set(zip(many.top.tolist(), many.left.tolist(), many.flip.tolist()))
        assert len(patches) == 2048 == 32 * 32 * 2


def test_the_paper_draws_32_offsets_per_axis_and_the_code_33():
    from alexnet_cli.config import resolve_train_config
    from alexnet_cli.errors import UsageError

    assert resolve_train_config("paper").crop_offsets == 32 and resolve_train_config("code").crop_offsets == 33
    with pytest.raises(UsageError, match="crop_offsets must be one of 32, 33; got 31"):
        resolve_train_config("paper", crop_offsets=31)
    with pytest.raises(UsageError, match="crop_offsets must be from 1 to 5 for 4x4 crops of 8x8 images, got 32"):
        TrainAugment(zero_mean(8), crop=4, crop_offsets=32)


def test_output_follows_the_draw_and_is_a_true_mirror_of_the_crop():
    images = coordinate_images(48)
    aug = TrainAugment(zero_mean())
    out = aug(images, gen(2))
    draw = aug.sample(48, gen(2))
    assert out.shape == (48, 3, 224, 224) and out.dtype == torch.float32
    top, left, mirrored = decode(out)
    np.testing.assert_array_equal(top, draw.top.numpy())
    np.testing.assert_array_equal(left, draw.left.numpy())
    np.testing.assert_array_equal(mirrored, draw.flip.numpy())
    assert 0 < mirrored.sum() < 48
    # every image against the explicit NumPy crop, mirrored along the width
    for b in range(48):
        patch = images[b, top[b]:top[b] + 224, left[b]:left[b] + 224].numpy().astype(np.float32)
        if mirrored[b]:
            patch = patch[:, ::-1]
        np.testing.assert_array_equal(out[b].permute(1, 2, 0).numpy(), patch)


def test_paper_recipe_draws_per_image():
    top, left, mirrored = decode(TrainAugment(zero_mean())(coordinate_images(64), gen(3)))
    assert len(set(zip(top, left, mirrored))) > 50


# ---------------------------------------------------------------- mean subtraction

@pytest.mark.parametrize("chunk", [1, 32])
def test_mean_crop_is_the_crop_of_image_minus_mean(chunk):
    images, mean = random_images(40, seed=4), random_mean(5)
    aug = TrainAugment(mean, chunk=chunk, mean_crop="crop")
    out = aug(images, gen(6))
    draw = aug.sample(40, gen(6))
    diff = images.float() - mean                                     # (B, 256, 256, 3)
    for b in range(40):
        t, l = int(draw.top[b]), int(draw.left[b])
        want = diff[b, t:t + 224, l:l + 224]
        if draw.flip[b]:
            want = want.flip(1)
        torch.testing.assert_close(out[b].permute(1, 2, 0), want, rtol=0, atol=1e-4)


def drawn_patches(images: torch.Tensor, draw) -> list[torch.Tensor]:
    """Each image's (H, W, C) patch at the drawn offset, mirrored where drawn, in float."""
    patches = []
    for b in range(len(images)):
        t, l = int(draw.top[b]), int(draw.left[b])
        patch = images[b, t:t + 224, l:l + 224].float()
        patches.append(patch.flip(1) if draw.flip[b] else patch)
    return patches


def test_mean_center_subtracts_the_central_mean_wherever_the_crop_is():
    images, mean = random_images(40, seed=7), random_mean(8)
    aug = TrainAugment(mean, chunk=1, mean_crop="center")
    out = aug(images, gen(9))
    draw = aug.sample(40, gen(9))
    assert draw.flip.any() and not draw.flip.all() and (draw.top != 16).any()
    centre = mean[16:240, 16:240]                                    # never mirrored
    for b, patch in enumerate(drawn_patches(images, draw)):
        torch.testing.assert_close(out[b].permute(1, 2, 0), patch - centre, rtol=0, atol=1e-4)


def test_mean_channel_subtracts_the_average_colour_at_every_pixel():
    images, mean = random_images(40, seed=10), random_mean(11)
    mean_rgb = mean.double().mean(dim=(0, 1)).float()                # what prep stores as mean_rgb
    assert (mean - mean_rgb).abs().max() > 50                        # a varied mean image: "crop" would differ
    aug = TrainAugment(mean, chunk=1, mean_crop="channel")
    out = aug(images, gen(12))
    draw = aug.sample(40, gen(12))
    assert draw.flip.any() and not draw.flip.all()
    for b, patch in enumerate(drawn_patches(images, draw)):
        torch.testing.assert_close(out[b].permute(1, 2, 0), patch - mean_rgb, rtol=0, atol=1e-4)
    got = crop(images[:3], mean, 0, 32, flip=True, mean_crop="channel")     # test time: the same rule
    want = (images[:3, 0:224, 32:256].float().flip(2) - mean_rgb).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


# ---------------------------------------------------------------- chunks (the released code)

def test_chunk_shares_offset_and_flip_within_a_chunk_and_differs_across():
    batch = 32 * 6 + 5                                               # a short last chunk
    aug = TrainAugment(zero_mean(), chunk=32)
    top, left, mirrored = decode(aug(coordinate_images(batch), gen(10)))
    chunks = [slice(c, min(c + 32, batch)) for c in range(0, batch, 32)]
    for s in chunks:
        assert len(set(zip(top[s], left[s], mirrored[s]))) == 1
    assert len({(top[s][0], left[s][0], mirrored[s][0]) for s in chunks}) >= 5


def test_chunked_colour_noise_is_still_per_image():
    aug = TrainAugment(zero_mean(), eigenvalues=IMAGENET_EIGVAL_255, eigenvectors=IMAGENET_EIGVEC,
                       chunk=32, pca_scale="code")
    draw = aug.sample(64, gen(11))
    assert (draw.top[:32] == draw.top[0]).all()
    assert torch.unique(draw.alpha[:32, 0]).numel() == 32


# ---------------------------------------------------------------- PCA colour noise

def shifts(aug: TrainAugment, n: int, seed: int, value: int, size: int) -> torch.Tensor:
    """The per-image RGB offset of the output for constant images (value) of n draws."""
    images = torch.full((n, size, size, 3), value, dtype=torch.uint8)
    out = aug(images, gen(seed)).double()                            # (n, 3, c, c)
    # the shift is the same at every pixel of an image
    torch.testing.assert_close(out[:, :, -1, -1], out[:, :, 0, 0], rtol=0, atol=1e-3)
    return out[:, :, 0, 0]                                           # (n, 3)


def random_rotation(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen(seed), dtype=torch.float64))
    return q


@pytest.mark.parametrize("pca_scale", ["paper", "code"])
def test_colour_shift_covariance_matches_the_formula(pca_scale):
    eigval = torch.tensor([3000.0, 400.0, 60.0], dtype=torch.float64)  # 0-255 units
    eigvec = random_rotation(12)                                     # not symmetric: columns matter
    size, n = 12, 40000
    aug = TrainAugment(torch.full((size, size, 3), 100.0), eigenvalues=eigval, eigenvectors=eigvec,
                       pca_std=0.1, pca_scale=pca_scale, crop=4)
    s = shifts(aug, n, seed=13, value=100, size=size)
    if pca_scale == "paper":                                         # alpha ~ N(0, 0.1), lambda / 255
        scale, divide = 0.1 * eigval / 255.0, 1.0
    else:                                                            # alpha ~ N(0, 1) * 0.1 sqrt(lambda), / 1.1
        scale, divide = 0.1 * eigval.sqrt(), 1.1
    want = eigvec @ torch.diag(scale**2) @ eigvec.T / divide**2
    got = torch.cov(s.T)
    assert s.mean(0).abs().max() < 4 * want.diagonal().sqrt().max() / n**0.5
    torch.testing.assert_close(got, want, rtol=0, atol=0.04 * want.diagonal().max().item())
    # each component's variance along its own eigenvector, within a few percent
    along = s @ eigvec                                               # (n, 3)
    torch.testing.assert_close(along.var(0), scale**2 / divide**2, rtol=0.04, atol=0)


def test_paper_shift_is_grey_levels_not_the_naive_1400():
    """lambda_255 applied to 0-255 pixels would shift by ~1,400 levels; the paper's reading ~5.5."""
    aug = TrainAugment(torch.zeros(8, 8, 3), eigenvalues=IMAGENET_EIGVAL_255,
                       eigenvectors=IMAGENET_EIGVEC, crop=4)
    s = shifts(aug, 20000, seed=14, value=0, size=8)
    std_p1 = (s @ IMAGENET_EIGVEC[:, 0]).std().item()
    assert 5.2 < std_p1 < 5.9                                        # 0.1 * 0.2175 * 255 = 5.55
    assert 0.1 * IMAGENET_EIGVAL_255[0] > 1000                       # what the naive reading would give


def test_code_shift_is_0_1_sqrt_lambda_then_divided_by_1_1():
    aug = TrainAugment(torch.full((8, 8, 3), 100.0), eigenvalues=IMAGENET_EIGVAL_255,
                       eigenvectors=IMAGENET_EIGVEC, pca_scale="code", crop=4)
    s = shifts(aug, 20000, seed=15, value=200, size=8)
    # the whole input is divided by 1.1, the mean-subtracted pixels (200 - 100) too
    torch.testing.assert_close(s.mean(0), torch.full((3,), 100 / 1.1, dtype=torch.float64), rtol=0, atol=0.3)
    std_p1 = (s @ IMAGENET_EIGVEC[:, 0]).std().item()
    assert 10.4 < std_p1 < 11.3                                      # 0.1 * sqrt(0.2175) * 255 / 1.1 = 10.8


@pytest.mark.parametrize("pca_scale", ["paper", "code"])
def test_colour_noise_off_adds_nothing_and_does_not_divide(pca_scale):
    images, mean = random_images(8, seed=16), random_mean(17)
    noisy = TrainAugment(mean, eigenvalues=IMAGENET_EIGVAL_255, eigenvectors=IMAGENET_EIGVEC,
                         pca_scale=pca_scale, mean_crop="center")
    plain = TrainAugment(mean, pca_scale=pca_scale, mean_crop="center")
    off = noisy(images, gen(18), color_noise=False)
    torch.testing.assert_close(off, plain(images, gen(18)), rtol=0, atol=0)
    # and it is exactly crop - centre mean: no division by 1.1
    draw = plain.sample(8, gen(18))
    t, l = int(draw.top[0]), int(draw.left[0])
    patch = images[0, t:t + 224, l:l + 224].float()
    patch = patch.flip(1) if draw.flip[0] else patch
    torch.testing.assert_close(off[0].permute(1, 2, 0), patch - mean[16:240, 16:240], rtol=0, atol=1e-4)
    assert not torch.equal(noisy(images, gen(18)), off)


# ---------------------------------------------------------------- determinism and errors

def test_same_generator_state_gives_the_same_batch():
    images, mean = random_images(6, seed=19), random_mean(20)
    aug = TrainAugment(mean, eigenvalues=IMAGENET_EIGVAL_255, eigenvectors=IMAGENET_EIGVEC)
    a, b = aug(images, gen(21)), aug(images, gen(21))
    assert torch.equal(a, b)
    g = gen(21)
    first, second = aug(images, g), aug(images, g)
    assert torch.equal(first, a) and not torch.equal(first, second)
    assert not torch.equal(a, aug(images, gen(22)))


def test_channels_last_output_has_the_same_values_in_nhwc_memory():
    images, mean = random_images(3, seed=23), random_mean(24)
    kw = dict(eigenvalues=IMAGENET_EIGVAL_255, eigenvectors=IMAGENET_EIGVEC)
    nchw = TrainAugment(mean, **kw)(images, gen(25))
    nhwc = TrainAugment(mean, channels_last=True, **kw)(images, gen(25))
    assert nchw.is_contiguous() and not nhwc.is_contiguous()
    assert nhwc.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(nchw, nhwc)


def test_bad_arguments_are_reported():
    with pytest.raises(AlexnetError):
        TrainAugment(zero_mean(), pca_scale="naive")
    with pytest.raises(AlexnetError):
        TrainAugment(zero_mean(), mean_crop="corner")
    with pytest.raises(AlexnetError):
        TrainAugment(zero_mean(), eigenvalues=IMAGENET_EIGVAL_255)
    with pytest.raises(AlexnetError):
        TrainAugment(zero_mean())(coordinate_images(2, size=128), gen())
    with pytest.raises(AlexnetError):
        list(make_test_crops(coordinate_images(1), zero_mean(), 5))


# ---------------------------------------------------------------- test time

def test_ten_crops_are_the_corners_and_centre_then_their_mirrors():
    assert TEN_CROPS == [(0, 0, False), (0, 32, False), (32, 0, False), (32, 32, False), (16, 16, False),
                         (0, 0, True), (0, 32, True), (32, 0, True), (32, 32, True), (16, 16, True)]
    images = coordinate_images(2)
    views = list(make_test_crops(images, zero_mean(), 10))
    assert len(views) == 10
    for (t, l, flip), view in zip(TEN_CROPS, views):
        top, left, mirrored = decode(view)
        assert list(top) == [t, t] and list(left) == [l, l] and list(mirrored) == [flip, flip]
    for i in range(5):
        assert torch.equal(views[i + 5], views[i].flip(-1))
    (single,) = list(make_test_crops(images, zero_mean(), 1))
    assert torch.equal(single, views[4]) and torch.equal(center_crop(images, zero_mean()), single)


def test_test_crops_subtract_the_mean_like_the_training_crops():
    images, mean = random_images(3, seed=23), random_mean(24)
    diff = (images.float() - mean).permute(0, 3, 1, 2)               # (B, 3, 256, 256)
    got = crop(images, mean, 0, 32, flip=True)
    torch.testing.assert_close(got, diff[:, :, 0:224, 32:256].flip(-1), rtol=0, atol=1e-4)
    got = crop(images, mean, 0, 32, flip=True, mean_crop="center")
    want = images[:, 0:224, 32:256].permute(0, 3, 1, 2).float().flip(-1) - mean[16:240, 16:240].permute(2, 0, 1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    centre = list(make_test_crops(images, mean, 1, mean_crop="center"))[0]
    torch.testing.assert_close(centre, diff[:, :, 16:240, 16:240], rtol=0, atol=1e-4)
    with pytest.raises(AlexnetError):
        crop(images, mean, 40, 0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_images_with_a_cpu_generator_match_the_cpu_result():
    images, mean = random_images(64, seed=25), random_mean(26)
    aug = TrainAugment(mean, eigenvalues=IMAGENET_EIGVAL_255, eigenvectors=IMAGENET_EIGVEC, chunk=32)
    cpu = aug(images, gen(27))
    cuda = TrainAugment(mean, eigenvalues=IMAGENET_EIGVAL_255, eigenvectors=IMAGENET_EIGVEC, chunk=32)(
        images.cuda(), gen(27))
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("crops", [1, 10])
def test_channel_test_crops_compute_the_average_colour_once_and_match_the_per_crop_path(crops, monkeypatch):
    """mean_crop="channel": test_crops (and a caller's precomputed `mean_rgb`) give the very
    bits of the old path, where each crop averaged the mean image again (ten times a batch)."""
    import alexnet_cli.augment as augment

    images, mean = random_images(2, seed=31), random_mean(32)
    positions = TEN_CROPS if crops == 10 else [(16, 16, False)]
    old = [crop(images, mean, top, left, flip, mean_crop="channel") for top, left, flip in positions]
    real, calls = augment.channel_mean, []
    monkeypatch.setattr(augment, "channel_mean", lambda m: calls.append(1) or real(m))
    new = list(make_test_crops(images, mean, crops, mean_crop="channel"))
    assert len(calls) == 1 and len(new) == len(old) == crops
    assert all(torch.equal(a, b) for a, b in zip(new, old))
    given = list(make_test_crops(images, mean, crops, mean_crop="channel", mean_rgb=real(mean)))
    assert len(calls) == 1 and all(torch.equal(a, b) for a, b in zip(given, old))   # given: not computed again
    for mode in ("crop", "center"):                                                # the other modes ignore it
        assert torch.equal(center_crop(images, mean, mean_crop=mode, mean_rgb=torch.full((3,), 1e6)),
                           center_crop(images, mean, mean_crop=mode))
    assert len(calls) == 1
