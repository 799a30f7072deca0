"""Top-1 / top-5 counting (alexnet_cli.metrics) against hand computations, and the figure helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_cli.figures import BAR, BAR_HIGHLIGHT, grid, hbar_chart, hstack, labeled_tile
from alexnet_cli.metrics import TopKMeter

# 4 images, 7 classes, no ties. Ranking of each row, most probable first:
#   row 0: 2 6 0 1 3 5 4     label 2 -> top-1 hit, top-5 hit
#   row 1: 0 1 2 3 4 5 6     label 4 -> top-1 miss, top-5 hit (5th)
#   row 2: 6 5 4 3 2 1 0     label 1 -> top-1 miss, top-5 miss (6th)
#   row 3: 3 0 5 4 1 6 2     label 2 -> top-1 miss, top-5 miss (7th)
LOGITS = torch.tensor([
    [5.0, 4.0, 9.0, 3.0, 1.0, 2.0, 6.0],
    [7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0],
    [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
    [6.0, 3.0, 1.0, 7.0, 4.0, 5.0, 2.0],
])
LABELS = torch.tensor([2, 4, 1, 2])


def _hits(k: int) -> list[bool]:
    """Per image: is its label among its k highest scores? A meter for each image alone."""
    hits = []
    for i in range(len(LABELS)):
        meter = TopKMeter(7, k=k)
        meter.update(LOGITS[i:i + 1], LABELS[i:i + 1])
        hits.append(bool(meter.result().top5.sum()))
    return hits


def test_top_k_hits_match_hand_computation():
    assert _hits(1) == [True, False, False, False]
    assert _hits(5) == [True, True, False, False]
    assert _hits(6) == [True, True, True, False]


def test_meter_errors_and_per_class_counts():
    meter = TopKMeter(7)
    meter.update(LOGITS, LABELS)
    counts = meter.result()
    assert counts.total == 4 and counts.k == 5
    assert counts.top1_error == pytest.approx(3 / 4)
    assert counts.top5_error == pytest.approx(2 / 4)
    # class 2: rows 0 (top-1 and top-5 hit) and 3 (both miss); class 4: row 1; class 1: row 2
    assert counts.n.tolist() == [0, 1, 2, 0, 1, 0, 0]
    assert counts.top1.tolist() == [0, 0, 1, 0, 0, 0, 0]
    assert counts.top5.tolist() == [0, 0, 1, 0, 1, 0, 0]
    top1_err, top5_err = counts.class_errors()
    assert top1_err[2] == pytest.approx(0.5) and top5_err[4] == pytest.approx(0.0) and top5_err[1] == 1.0
    assert np.isnan(top1_err[0])  # a class with no images has no error, not 0


def test_meter_accumulates_batches_and_ignores_monotone_transforms():
    whole = TopKMeter(7)
    whole.update(LOGITS, LABELS)
    parts = TopKMeter(7)
    parts.update(LOGITS[:1].softmax(1), LABELS[:1])   # probabilities rank like logits
    parts.update(LOGITS[1:].softmax(1), LABELS[1:])
    a, b = whole.result(), parts.result()
    assert (a.n == b.n).all() and (a.top1 == b.top1).all() and (a.top5 == b.top5).all()


def test_k_is_clipped_to_the_number_of_classes():
    meter = TopKMeter(3)
    meter.update(torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]]), torch.tensor([0, 1]))
    counts = meter.result()
    assert counts.k == 3 and counts.top5_error == 0.0 and counts.top1_error == 1.0


def test_figure_helpers_draw_and_compose():
    img = np.full((40, 60, 3), 200, np.uint8)
    tile = labeled_tile(img, "a caption far too long to fit in the tile at all", size=50)
    assert tile.size[0] == 50 and tile.size[1] > 50
    chart = hbar_chart(["cat", "dog", "car"], [0.7, 0.2, 0.1], width=200, bar_height=16, highlight=1)
    colours = {c for _, c in chart.getcolors(maxcolors=100000)}
    assert BAR in colours and BAR_HIGHLIGHT in colours
    # the first bar (0.7) is longer than the third (0.1): count bar-coloured pixels per row band
    arr = np.asarray(chart)
    band = lambda i: int((arr[4 + i * 20:4 + i * 20 + 16] == BAR).all(-1).sum())  # noqa: E731
    assert band(0) > 3 * band(2) > 0
    row = hstack([tile, chart], pad=5)
    assert row.size == (50 + 5 + 200, max(tile.height, chart.height))
    sheet = grid([row, row, row], cols=2, pad=3)
    assert sheet.size == (3 + 2 * (row.width + 3), 3 + 2 * (row.height + 3))
    assert isinstance(sheet, Image.Image) and sheet.mode == "RGB"


def test_all_reduce_without_a_process_group_is_an_error():
    """A loader slice's counts summed over no ranks would be a quiet partial result."""
    from alexnet_cli.errors import AlexnetError

    meter = TopKMeter(4)
    meter.update(torch.eye(4), torch.arange(4))
    with pytest.raises(AlexnetError, match="not initialised"):
        meter.all_reduce()


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".jpg", b"\xff\xd8"), (".webp", b"RIFF"),
                                           (".psd", b"\x89PNG"), (".xyz", b"\x89PNG")])
def test_pictures_take_the_format_their_suffix_names(tmp_path, suffix, magic):
    """.psd is a format PIL reads but cannot write: PNG, like any unknown suffix."""
    from alexnet_cli.figures import save_picture

    path = save_picture(Image.new("RGB", (20, 10), (200, 30, 30)), tmp_path / "sub" / f"fig{suffix}")
    assert path.read_bytes().startswith(magic)
    with Image.open(path) as img:
        assert img.size == (20, 10)
