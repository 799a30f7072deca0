"""`alexnet kernels`: the colour score on hand-made kernels, the picture's size and block
layout (figure 3), and the command end to end."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from alexnet_cli.checkpoint import save_checkpoint
from alexnet_cli.cli.app import app
from alexnet_cli.kernels import color_specificity, column_scores, column_title, draw_kernels, title_size
from alexnet_cli.model import AlexNet
from test_docs import check_documented_json

runner = CliRunner()


def _block_size(per_column: int, scale: int) -> tuple[int, int]:
    """One column's block: rows of 16 tiles of 11*scale pixels, `scale` pixels apart."""
    tile, pad, rows = 11 * scale, scale, -(-per_column // 16)
    return pad + 16 * (tile + pad), pad + rows * (tile + pad)


def _coloured_kernels(n: int, channel: int, seed: int) -> torch.Tensor:
    """n kernels with positive weights in one channel only (pure red/green/blue tiles), of
    magnitudes that differ from kernel to kernel."""
    w = torch.zeros(n, 3, 11, 11)
    w[:, channel] = torch.rand(n, 11, 11, generator=torch.Generator().manual_seed(seed)) + 0.1
    return w * torch.arange(1, n + 1).view(n, 1, 1, 1)


def test_color_score_grey_single_channel_and_opponent_kernels():
    g = torch.Generator().manual_seed(0)
    pattern = torch.randn(5, 1, 11, 11, generator=g)
    grey = pattern.expand(5, 3, 11, 11)                          # R = G = B everywhere
    red = torch.cat([pattern, torch.zeros(5, 2, 11, 11)], dim=1)  # one channel only
    opponent = torch.cat([pattern, -pattern, torch.zeros(5, 1, 11, 11)], dim=1)  # R = -G
    assert torch.allclose(color_specificity(grey), torch.zeros(5), atol=1e-6)
    assert torch.allclose(color_specificity(red), torch.full((5,), 2 / 3), atol=1e-6)
    assert torch.allclose(color_specificity(opponent), torch.ones(5), atol=1e-6)
    # a grey kernel plus a little colour scores low, but above zero
    tinted = grey + 0.05 * opponent
    assert 0 < color_specificity(tinted).max() < 0.01
    assert color_specificity(torch.zeros(1, 3, 11, 11)).item() == 0.0


def test_column_scores_split_grey_column_a_from_coloured_column_b():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(48, 1, 11, 11, generator=g).expand(48, 3, 11, 11)
    b = torch.randn(48, 3, 11, 11, generator=g)                 # independent channels: about 2/3
    scores = column_scores(torch.cat([a, b]), columns=2)
    assert [c.name for c in scores] == ["A", "B"] and [c.kernels for c in scores] == [48, 48]
    assert scores[0].mean < 1e-6
    assert 0.55 < scores[1].mean < 0.78 and 0.55 < scores[1].median < 0.78
    assert len(scores[1].scores) == 48


def _title_height(scale: int) -> int:
    """The strip over each of two columns' blocks that holds its title: a line of the font, `scale` above and below."""
    return title_size(scale) + 2 * scale


@pytest.mark.parametrize("scale", [1, 3])
def test_picture_has_column_a_block_above_column_b_block(scale):
    weights = torch.cat([_coloured_kernels(48, 0, seed=0), _coloured_kernels(48, 1, seed=1)])
    img = np.asarray(draw_kernels(weights, columns=2, scale=scale))
    gap, title = 4 * scale, _title_height(scale)
    bw, bh = _block_size(48, scale)
    assert img.shape == (gap + 2 * (title + bh + gap), gap + bw + gap, 3)
    tile, pad = 11 * scale, scale
    strips = []
    for block, channel in ((0, 0), (1, 1)):                     # A is red, B is green
        start = gap + block * (title + bh + gap)
        strip = img[start:start + title, gap:gap + bw].astype(int)   # (title, bw, 3): the block's title
        assert (strip.max(axis=2) == strip.min(axis=2)).all()       # black text on white: no colour
        assert (strip < 100).any(axis=2).sum() > 20 * title_size(scale)   # text is drawn there
        strips.append(strip)
        top = start + title + pad
        for i in range(48):
            r, c = divmod(i, 16)
            y, x = top + r * (tile + pad), gap + pad + c * (tile + pad)
            cell = img[y:y + tile, x:x + tile].astype(int)      # (tile, tile, 3)
            others = [ch for ch in range(3) if ch != channel]
            assert cell[..., others].max() == 0, (block, i)
            # each tile is scaled to its own range: the brightest pixel of every kernel is 255
            assert cell[..., channel].max() == 255 and cell[..., channel].min() > 0, (block, i)
    assert (strips[0] != strips[1]).any()                       # "column A ..." and "column B ..."
    assert [column_title(n) for n in "AB"] == ["column A (GPU 1 in figure 3)", "column B (GPU 2 in figure 3)"]
    between = img[gap + title + bh:gap + title + bh + gap]      # the rows between the two blocks
    assert (between == 255).all()


def test_one_column_network_gives_one_block():
    img = draw_kernels(_coloured_kernels(48, 2, seed=2), columns=1, scale=2)
    bw, bh = _block_size(48, 2)
    assert img.size == (8 + bw + 8, 8 + bh + 8)                 # no title: there is no other column


def test_kernels_help_says_how_each_kernel_is_scaled():
    shown = runner.invoke(app, ["kernels", "--help"], env={"COLUMNS": "100"})
    assert shown.exit_code == 0
    text = " ".join(shown.stdout.replace("│", " ").split())
    assert "Each kernel is drawn scaled to its own range: its lowest weight black, its highest white, one scale " \
           "for its three channels" in text
    assert "each under its title" in text


def _checkpoint(path, columns: int = 2):
    model = AlexNet(num_classes=4, columns=columns)
    with torch.no_grad():                      # column A grey, column B coloured
        n = model.conv1.weight.shape[0] // columns
        model.conv1.weight[:n] = model.conv1.weight[:n, :1].expand(n, 3, 11, 11).clone()
    save_checkpoint(path, {"model": model.state_dict(), "classes": ["a", "b", "c", "d"],
                           "class_names": ["a", "b", "c", "d"], "mean_image": torch.zeros(256, 256, 3),
                           "config": {"recipe": "paper", "model": dataclasses.asdict(model.config),
                                      "train": {"mean_crop": "crop"}}})
    return path


def test_cli_kernels_writes_the_picture_and_json_scores(tmp_path):
    ckpt = _checkpoint(tmp_path / "two.pt")
    out = tmp_path / "pics" / "kernels.png"
    result = runner.invoke(app, ["kernels", str(ckpt), "--out", str(out), "--scale", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    check_documented_json("kernels", data)
    assert data["kernels"] == 96 and data["out"] == str(out)
    with Image.open(out) as img:
        assert list(img.size) == data["image_size"]
        bw, bh = _block_size(48, 2)
        assert img.size == (16 + bw, 8 + 2 * (_title_height(2) + bh + 8))
    a, b = data["columns"]
    assert (a["name"], a["kernels"], b["name"], b["kernels"]) == ("A", 48, "B", 48)
    assert a["color_score_mean"] < 1e-6 and 0.5 < b["color_score_mean"] < 0.8
    assert len(b["color_scores"]) == 48

    text = runner.invoke(app, ["kernels", str(ckpt)])
    assert text.exit_code == 0 and "colour specificity" in text.stdout and "--out" in text.stdout


def test_cli_kernels_one_column_and_bad_input(tmp_path):
    ckpt = _checkpoint(tmp_path / "one.pt", columns=1)
    result = runner.invoke(app, ["kernels", str(ckpt), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [c["name"] for c in data["columns"]] == ["A"] and data["kernels"] == 48 and data["out"] is None

    assert runner.invoke(app, ["kernels", str(tmp_path / "missing.pt")]).exit_code == 2
    assert runner.invoke(app, ["kernels", str(ckpt), "--scale", "0"]).exit_code == 2
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    bad = runner.invoke(app, ["kernels", str(junk)])
    assert bad.exit_code == 1 and "Error:" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_kernels_refuses_non_finite_weights_and_markup_is_not_interpreted(tmp_path):
    """F7: NaN weights gave NaN scores in --json (not JSON); F4: an --out with "[/x]" failed
    with MarkupError after the picture was written."""
    ckpt = _checkpoint(tmp_path / "nan.pt")
    data = torch.load(ckpt, weights_only=True)
    data["model"]["conv1.weight"][0, 0, 0, 0] = float("nan")
    save_checkpoint(ckpt, {k: v for k, v in data.items() if k not in ("format", "version")})
    bad = runner.invoke(app, ["kernels", str(ckpt), "--json"])
    assert bad.exit_code == 1 and bad.stdout == "" and "conv1.weight holds NaN" in bad.stderr, bad.output
    out = tmp_path / "a[/x]" / "[red]k.png"
    good = runner.invoke(app, ["kernels", str(_checkpoint(tmp_path / "ok.pt")), "--out", str(out)])
    assert good.exit_code == 0, good.output
    assert f"wrote {out}" in good.stdout.replace("\n", "") and out.exists()


@pytest.mark.parametrize("name", ["k.txt", "k.svg", "k"])
def test_cli_kernels_refuses_a_suffix_it_cannot_write_before_any_work(tmp_path, name):
    """The suffix names the format (as for `alexnet report`); .txt would get PNG bytes. The
    checkpoint is not even read: it is not one."""
    checkpoint = tmp_path / "not-yet-read.pt"
    checkpoint.write_text("never loaded")
    result = runner.invoke(app, ["kernels", str(checkpoint), "--out", str(tmp_path / name)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: --out {tmp_path / name}: the suffix names the format; use one of .bmp,")
    assert ".png" in lines[0] and not (tmp_path / name).exists()
