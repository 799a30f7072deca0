"""`alexnet eval` (alexnet_cli.evaluate): crops, ensembles, checkpoints, per-class and per-image
output, the JSON shape, and the counts of several ranks under torch.distributed."""

from __future__ import annotations

import csv
import dataclasses
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
import torch
from torch import nn
from typer.testing import CliRunner

from alexnet_cli.checkpoint import LoadedModel, load_checkpoint, load_model, save_checkpoint
from alexnet_cli.cli.app import app
from alexnet_cli.errors import CheckpointError, DataError
from alexnet_cli.evaluate import EvalResult, Member, check_classes, evaluate, evaluate_model, evaluate_models
from alexnet_cli.loader import ShardLoader
from alexnet_cli.metrics import TOP_K, TopKCounts
from alexnet_cli.model import AlexNet
from alexnet_cli.prep import PrepOptions, prepare
from alexnet_cli.progress import NullReporter
from alexnet_cli.shards import open_shard, read_images, read_manifest, read_mean_image, read_split_index
from test_docs import check_documented_json

runner = CliRunner()

# (top, left, mirrored): the four corners, the centre, then the same five mirrored (paper 5.1)
EXPECTED_TEN = [(0, 0, False), (0, 32, False), (32, 0, False), (32, 32, False), (16, 16, False),
                (0, 0, True), (0, 32, True), (32, 0, True), (32, 32, True), (16, 16, True)]


# ---------------------------------------------------------------------------- stubs, no data folder

@dataclass
class _Batch:
    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor


class ListLoader:
    """The part of ShardLoader's interface that evaluation uses, over tensors in memory."""

    device = torch.device("cpu")
    world_size = 1

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int):
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.num_images = len(labels)

    def epoch(self, epoch: int, start_batch: int = 0):
        for s in range(start_batch * self.batch_size, self.num_images, self.batch_size):
            sl = slice(s, s + self.batch_size)
            yield _Batch(self.images[sl], self.labels[sl], torch.arange(self.num_images)[sl])


class CornerNet(nn.Module):
    """Logits = scale * the first C values of the crop's top-left 2x2 corner (channel-major):
    they differ between crop positions and mirrors. Records every input it sees."""

    def __init__(self, num_classes: int, scale: float):
        super().__init__()
        self.num_classes, self.scale, self.inputs = num_classes, scale, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        return self.scale * x[:, :, :2, :2].reshape(len(x), -1)[:, :self.num_classes]


def _manual_crop(images: torch.Tensor, mean: torch.Tensor, top: int, left: int, flip: bool) -> torch.Tensor:
    diff = images.float() - mean                                   # (B, 256, 256, 3)
    x = diff[:, top:top + 224, left:left + 224].permute(0, 3, 1, 2)  # (B, 3, 224, 224)
    return x.flip(-1) if flip else x


@pytest.fixture(scope="module")
def stub_data():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 256, 256, 3), dtype=torch.uint8, generator=g)
    mean = torch.rand(256, 256, 3, generator=g) * 255
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    return images, mean, labels


@pytest.mark.parametrize("crops", [1, 10])
def test_the_network_sees_the_paper_test_crops(stub_data, crops):
    images, mean, labels = stub_data
    net = CornerNet(5, 0.01)
    evaluate_model(net, ListLoader(images, labels, batch_size=4), mean, crops=crops)
    positions = EXPECTED_TEN if crops == 10 else [(16, 16, False)]
    assert len(net.inputs) == 2 * len(positions)                   # 2 batches
    for i, (top, left, flip) in enumerate(positions):
        torch.testing.assert_close(net.inputs[i], _manual_crop(images[:4], mean, top, left, flip))
        torch.testing.assert_close(net.inputs[len(positions) + i], _manual_crop(images[4:], mean, top, left, flip))


def test_ensemble_averages_softmax_over_models_and_crops(stub_data):
    images, mean, labels = stub_data
    mean2 = mean.flip(0)                                           # each member its own mean image
    a, b = CornerNet(5, 0.02), CornerNet(5, -0.03)
    result = evaluate_models([Member(a, mean), Member(b, mean2)], ListLoader(images, labels, 4),
                             crops=10, keep_predictions=True)
    expected = torch.zeros(6, 5)
    for net, m in ((a, mean), (b, mean2)):
        for top, left, flip in EXPECTED_TEN:
            x = _manual_crop(images, m, top, left, flip)
            expected += (net.scale * x[:, :, :2, :2].reshape(6, -1)[:, :5]).softmax(1)
    expected /= 20
    p = result.predictions
    assert p.indices.tolist() == list(range(6)) and p.labels.tolist() == labels.tolist()
    np.testing.assert_allclose(p.probs, expected.topk(5, 1).values.numpy(), rtol=1e-5, atol=1e-6)
    assert p.top.tolist() == expected.topk(5, 1).indices.tolist()
    assert result.top1_error == pytest.approx(float((expected.argmax(1) != labels).float().mean()))
    assert result.n == 6 and result.crops == 10 and result.top5_error == 0.0  # 5 classes: top-5 is all


def test_ensemble_vote_beats_each_member_on_a_hand_built_case():
    # Image 0 (label 0): A says 0 weakly, B says 1 strongly -> ensemble 1. Image 1 (label 1):
    # A says 0 strongly, B says 1 weakly -> ensemble 0. Hand-computed softmax averages below.
    class Fixed(nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = torch.tensor(logits)

        def forward(self, x):
            return self.logits[: len(x)]

    a = Fixed([[1.0, 0.0], [5.0, 0.0]])
    b = Fixed([[0.0, 4.0], [0.0, 0.5]])
    loader = ListLoader(torch.zeros(2, 256, 256, 3, dtype=torch.uint8), torch.tensor([0, 1]), 2)
    zero = torch.zeros(256, 256, 3)
    result = evaluate_models([Member(a, zero), Member(b, zero)], loader, keep_predictions=True)
    sa, sb = torch.tensor([[1.0, 0.0], [5.0, 0.0]]).softmax(1), torch.tensor([[0.0, 4.0], [0.0, 0.5]]).softmax(1)
    avg = (sa + sb) / 2                                            # [[0.4975, 0.5025], [0.6890, 0.3110]]
    assert result.predictions.top[:, 0].tolist() == [1, 0]
    np.testing.assert_allclose(result.predictions.probs[:, 0], avg.max(1).values.numpy(), rtol=1e-6)
    assert result.top1_error == 1.0
    # each member alone: A right on image 0 only, B on image 1 only (the paper's 1 CNN beside 5)
    assert [(c.top1_error, c.total) for c in result.members] == [(0.5, 2), (0.5, 2)]
    assert evaluate_models([Member(a, zero)], loader).members == []        # one model: no members to list


def test_evaluate_restores_training_mode(stub_data):
    images, mean, labels = stub_data
    net = CornerNet(5, 0.01).train()
    evaluate_model(net, ListLoader(images, labels, 6), mean)
    assert net.training


# ---------------------------------------------------------------------------- real checkpoints and data

def _save(path: Path, data_dir: Path, *, classes=None, seed=0, mean_crop="crop", columns=2) -> Path:
    torch.manual_seed(seed)
    model = AlexNet(num_classes=4, bias_fill=0.0, columns=columns)
    with torch.no_grad():              # a softmax neither flat nor saturated (see test_predict)
        w = model.fc8.weight
        w.sub_(w.mean(1, keepdim=True)).mul_(20)
    manifest = read_manifest(data_dir)
    save_checkpoint(path, {"model": model.state_dict(), "classes": classes or manifest.classes,
                           "class_names": manifest.class_names,
                           "mean_image": torch.from_numpy(read_mean_image(data_dir)),
                           "config": {"recipe": "paper", "model": dataclasses.asdict(model.config),
                                      "train": {"mean_crop": mean_crop}}})
    return path


@pytest.fixture(scope="module")
def ckpts(tiny_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    return _save(d / "a.pt", tiny_data, seed=1), _save(d / "b.pt", tiny_data, seed=2)


def _val_images(data_dir: Path) -> torch.Tensor:
    manifest = read_manifest(data_dir)
    parts = []
    for name in manifest.split("val").shards:
        with open_shard(manifest, name) as f:
            parts.append(read_images(f, 0, len(f["labels"])))
    return torch.from_numpy(np.concatenate(parts))


def test_centre_crop_error_matches_a_direct_forward_pass(tiny_data, ckpts):
    result = evaluate([ckpts[0]], tiny_data, crops=1, batch_size=5, device="cpu", keep_predictions=True)
    _, labels = read_split_index(tiny_data, "val")
    model = AlexNet(num_classes=4)
    model.load_state_dict(torch.load(ckpts[0], weights_only=True)["model"])
    mean = torch.from_numpy(read_mean_image(tiny_data))
    with torch.no_grad():
        probs = model.eval()(_manual_crop(_val_images(tiny_data), mean, 16, 16, False)).softmax(1)
    assert result.n == len(labels) == read_manifest(tiny_data).split("val").count
    assert result.top1_error == pytest.approx(float((probs.argmax(1).numpy() != labels).mean()))
    assert result.predictions.top[:, 0].tolist() == probs.argmax(1).tolist()
    assert result.top5_error == 0.0 and result.counts.k == 4      # 4 classes: the top "5" is all of them
    assert result.counts.n.sum() == result.n and result.classes == read_manifest(tiny_data).classes


def _loaded(classes, config=True) -> LoadedModel:
    return LoadedModel(model=nn.Identity(), classes=list(classes), class_names=list(classes), mean_image=None,
                       config={"recipe": "paper"} if config else {}, path=Path("m.pt"), lists_classes=config)


def test_mismatched_classes_are_refused(tiny_data, tmp_path):
    classes = read_manifest(tiny_data).classes
    check_classes(_loaded(classes), classes, tiny_data)                         # the same: fine
    check_classes(_loaded(["0", "1", "2", "3"], config=False), classes, tiny_data)  # bare: count only
    with pytest.raises(CheckpointError, match="another order"):
        check_classes(_loaded(classes[::-1]), classes, tiny_data)
    with pytest.raises(CheckpointError, match="not those of"):
        check_classes(_loaded(["n0", "n1", "n2", "n3"]), classes, tiny_data)
    with pytest.raises(CheckpointError, match="predicts 5 classes"):
        check_classes(_loaded(classes + ["n99"]), classes, tiny_data)
    with pytest.raises(CheckpointError, match="predicts 3 classes"):
        check_classes(_loaded(["0", "1", "2"], config=False), classes, tiny_data)
    # end to end: a checkpoint of the data's classes in another order gives an error, not a number
    reordered = _save(tmp_path / "r.pt", tiny_data, classes=classes[::-1])
    res = runner.invoke(app, ["eval", str(reordered), str(tiny_data), "--device", "cpu", "--json"])
    assert res.exit_code == 1 and "Error:" in res.output and "another order" in res.output
    assert "Traceback" not in res.output and "top1_error" not in res.output


def test_bare_state_dict_uses_the_data_mean(tiny_data, ckpts, tmp_path):
    """A bare state_dict borrows the data's mean image (and is taken as trained with inverted
    dropout: the same checkpoint with that style gives the same predictions)."""
    ckpt = torch.load(ckpts[0], weights_only=True)
    torch.save(ckpt["model"], tmp_path / "bare.pt")
    ckpt["config"]["model"]["dropout_style"] = "inverted"
    save_checkpoint(tmp_path / "full.pt", {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    full_notes, bare_notes = _Notes(), _Notes()
    full = evaluate([tmp_path / "full.pt"], tiny_data, device="cpu", keep_predictions=True, progress=full_notes)
    bare = evaluate([tmp_path / "bare.pt"], tiny_data, device="cpu", keep_predictions=True, progress=bare_notes)
    assert bare.top1_error == full.top1_error
    np.testing.assert_allclose(bare.predictions.probs, full.predictions.probs, rtol=1e-6)
    # the bare one is said to be taken so; the full checkpoint says how it was trained, no note
    assert full_notes.lines == [] and len(bare_notes.lines) == 1
    assert "bare state_dict" in bare_notes.lines[0] and "inverted dropout" in bare_notes.lines[0]


class _Notes(NullReporter):
    """A reporter that keeps the notes logged to it."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str, mentions: tuple[str, ...] = ()) -> None:
        self.lines.append(message)


class Evil:
    """Unpickling this would create `marker`: a checkpoint that runs code when loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_with_pickled_code_is_refused_and_never_run(tiny_data, ckpts, tmp_path):
    marker = tmp_path / "pwned"
    payload = torch.load(ckpts[0], weights_only=True)
    payload["extra"] = Evil(marker)
    torch.save(payload, tmp_path / "evil.pt")
    assert not marker.exists()
    res = runner.invoke(app, ["eval", str(tmp_path / "evil.pt"), str(tiny_data), "--device", "cpu"])
    assert res.exit_code == 1 and "refused" in res.output and "weights_only" in res.output
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        evaluate([tmp_path / "evil.pt"], tiny_data, device="cpu")
    assert not marker.exists()
    # the payload really is live: plain unpickling would have created the file
    pickle.loads(pickle.dumps(Evil(marker))).close()
    assert marker.exists()


def test_cli_json_ensemble_and_files(tiny_data, ckpts, tmp_path):
    # (10 crops are checked above on stubs and in test_predict: here 1 crop keeps the CPU time low)
    per_class, preds = tmp_path / "out" / "per_class.csv", tmp_path / "preds.csv"
    res = runner.invoke(app, ["eval", str(ckpts[0]), str(ckpts[1]), str(tiny_data), "--json",
                              "--device", "cpu", "--batch-size", "7", "--per-class", str(per_class),
                              "--predictions", str(preds)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    check_documented_json("eval", data)
    assert {"top1_error", "top5_error", "n", "crops"} <= set(data)
    assert isinstance(data["top1_error"], float) and isinstance(data["n"], int) and data["crops"] == 1
    assert 0.0 <= data["top1_error"] <= 1.0 and data["models"] == 2
    assert [m["checkpoint"] for m in data["members"]] == [str(ckpts[0]), str(ckpts[1])]
    for member, ckpt in zip(data["members"], ckpts):        # each as `eval` of it alone says
        alone = json.loads(runner.invoke(app, ["eval", str(ckpt), str(tiny_data), "--json", "--device", "cpu"]).stdout)
        assert (member["top1_error"], member["top5_error"]) == (alone["top1_error"], alone["top5_error"])
        assert alone["members"] == [{"checkpoint": str(ckpt), "top1_error": alone["top1_error"],
                                     "top5_error": alone["top5_error"]}]
    manifest = read_manifest(tiny_data)
    assert data["n"] == manifest.split("val").count
    with open(per_class) as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == manifest.classes and [r["name"] for r in rows] == manifest.class_names
    assert sum(int(r["n"]) for r in rows) == data["n"]
    n_wrong = sum(float(r["top1_error"]) * int(r["n"]) for r in rows)
    assert n_wrong == pytest.approx(data["top1_error"] * data["n"])
    with open(preds) as f:
        rows = list(csv.DictReader(f))
    paths, labels = read_split_index(tiny_data, "val")
    assert [r["path"] for r in rows] == paths
    assert [r["label"] for r in rows] == [manifest.classes[i] for i in labels]
    wrong = sum(r["class1"] != r["label"] for r in rows)
    assert wrong == round(data["top1_error"] * data["n"])
    assert all(float(r["prob1"]) >= float(r["prob2"]) for r in rows)


def test_cli_table_and_usage_errors(tiny_data, ckpts, tmp_path):
    res = runner.invoke(app, ["eval", str(ckpts[0]), str(tiny_data), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "top-1 error" in res.output and "this run" in res.output and "39.0%" in res.output
    assert runner.invoke(app, ["eval", str(ckpts[0]), str(tiny_data), "--crops", "5"]).exit_code == 2
    assert runner.invoke(app, ["eval", str(tiny_data)]).exit_code == 2
    assert runner.invoke(app, ["eval", str(tmp_path / "nope.pt"), str(tiny_data)]).exit_code == 2
    res = runner.invoke(app, ["eval", str(ckpts[0]), str(tiny_data), "--split", "test", "--device", "cpu"])
    assert res.exit_code == 1 and "no split 'test'" in res.output
    with pytest.raises(DataError):
        evaluate([ckpts[0]], tmp_path, device="cpu")              # not a prepared folder


# ---------------------------------------------------------------------------- torch.distributed

def _rank_main(rank: int, world: int, data_dir: str, init: str, out: str) -> None:
    import torch.distributed as dist

    from alexnet_cli.loader import ShardLoader
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        net = CornerNet(4, 0.05)
        loader = ShardLoader(data_dir, "val", 3, shuffle=False, rank=rank, world_size=world, workers=1)
        mean = torch.from_numpy(read_mean_image(data_dir))
        r = evaluate_model(net, loader, mean, keep_predictions=True, num_classes=4)
        seen = sum(len(x) for x in net.inputs)
        with open(f"{out}.{rank}", "w") as f:
            json.dump({"n": r.n, "top1": r.top1_error, "seen": seen, "idx": r.predictions.indices.tolist(),
                       "counts": r.counts.n.tolist()}, f)
    finally:
        dist.destroy_process_group()


def test_ranks_cover_the_split_exactly_once(tiny_data, tmp_path):
    import torch.multiprocessing as mp

    from alexnet_cli.loader import ShardLoader
    torch.manual_seed(0)
    loader = ShardLoader(tiny_data, "val", 3, shuffle=False, workers=1)
    single = evaluate_model(CornerNet(4, 0.05), loader, torch.from_numpy(read_mean_image(tiny_data)))
    out = str(tmp_path / "rank")
    mp.spawn(_rank_main, args=(2, str(tiny_data), f"file://{tmp_path / 'init'}", out), nprocs=2, join=True)
    results = [json.load(open(f"{out}.{r}")) for r in range(2)]
    for r in results:
        assert r["n"] == single.n and r["top1"] == pytest.approx(single.top1_error)
        assert r["idx"] == list(range(single.n)) and r["counts"] == single.counts.n.tolist()
    assert sum(r["seen"] for r in results) == single.n            # each image run once, on one rank


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_on_cuda_agrees_with_fp32(tiny_data, ckpts):
    fp32 = evaluate([ckpts[0]], tiny_data, crops=10, device="cuda", bf16=False, keep_predictions=True)
    bf16 = evaluate([ckpts[0]], tiny_data, crops=10, device="cuda", bf16=True, keep_predictions=True)
    cpu = evaluate([ckpts[0]], tiny_data, crops=10, device="cpu", keep_predictions=True)
    np.testing.assert_allclose(fp32.predictions.probs, cpu.predictions.probs, atol=1e-3)
    np.testing.assert_allclose(bf16.predictions.probs, fp32.predictions.probs, atol=0.05)
    assert bf16.n == fp32.n == cpu.n


def test_reference_rows_are_the_papers_results():
    """SPEC.md "Results to aim at" (paper section 7) and torchvision's single-GPU variant."""
    from alexnet_cli.cli.eval import REFERENCES

    rows = {name: (top1, top5) for name, _, _, top1, top5, _ in REFERENCES}
    assert rows == {
        "paper: 2012 val, 1 CNN": (40.7, 18.2),
        "paper: 2010 test, 1 CNN, 10 crops": (37.5, 17.0),
        "paper: 2010 test, 1 CNN, centre crop": (39.0, 18.3),
        "torchvision: 2012 val, centre crop": (43.48, 20.93),
        "paper: 2012 val, 5 CNNs averaged": (38.1, 16.4),
    }


@pytest.mark.parametrize("split, models, crops, shown, note", [
    ("val", 1, 10, ["paper: 2012 val, 1 CNN", "paper: 2010 test, 1 CNN, 10 crops"], None),
    ("val", 1, 1, ["paper: 2010 test, 1 CNN, centre crop", "torchvision: 2012 val, centre crop"], None),
    ("val", 5, 10, ["paper: 2012 val, 5 CNNs averaged"], None),
    ("val", 2, 10, [], "no paper figure for 2 models and 10 crops"),
    ("val", 5, 1, [], "no paper figure for 5 models and 1 crop"),
    ("train", 1, 10, [], "no paper figure for the train split"),
    ("train", 5, 10, [], "no paper figure for the train split"),
])
def test_the_table_sets_only_like_results_beside_the_papers(split, models, crops, shown, note):
    from alexnet_cli.cli.eval import REFERENCES, _table

    classes = 1000
    counts = TopKCounts(np.full(classes, 2), np.ones(classes, np.int64), np.full(classes, 2), TOP_K)
    result = EvalResult(0.5, 0.0, 2 * classes, crops, counts, checkpoints=[f"m{i}.pt" for i in range(models)],
                        split=split)
    console = Console(width=200, record=True)
    console.print(_table(result))
    text = console.export_text()
    assert ("this run" if models == 1 else "the ensemble") in text and "50.00%" in text
    assert [name for name, *_ in REFERENCES if name in text] == shown
    assert text.count("paper:") + text.count("torchvision:") == len(shown)
    assert (note is None and "no paper figure" not in text) or (note is not None and note in text)


@pytest.fixture(scope="module")
def small_val(tiny_tree, tmp_path_factory) -> tuple[Path, Path]:
    """tiny_tree's val split cut to 1 image per class (4 images), and a one-column network for
    it: 10 crops of the two-column net on tiny_data's 16 val images take 4-8 s per pass on 2
    CPU cores, here about one."""
    out = tmp_path_factory.mktemp("small_val")
    prepare(tiny_tree, out, PrepOptions(limit_per_class=1, splits=["val"], workers=1))
    return out, _save(out / "one_column.pt", out, seed=1, columns=1)


def test_cli_ten_crops_json_equals_the_library(small_val, tmp_path):
    data_dir, ckpt = small_val
    preds = tmp_path / "preds.jsonl"
    res = runner.invoke(app, ["eval", str(ckpt), str(data_dir), "--crops", "10", "--json", "--device", "cpu",
                              "--predictions", str(preds)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert {"top1_error", "top5_error", "n", "crops"} <= set(data)
    assert data["crops"] == 10 and isinstance(data["n"], int)
    assert data["n"] == read_manifest(data_dir).split("val").count == 4
    assert all(isinstance(data[k], float) and 0.0 <= data[k] <= 1.0 for k in ("top1_error", "top5_error"))
    # the same checkpoint and data through the library's in-memory route
    loaded = load_model(ckpt)
    loader = ShardLoader(data_dir, "val", 4, shuffle=False, workers=1)
    ten = evaluate_model(loaded.model, loader, loaded.mean_image, crops=10, keep_predictions=True)
    assert (data["top1_error"], data["top5_error"], data["n"]) == (ten.top1_error, ten.top5_error, ten.n)
    # image by image, the CLI's probabilities are the 10-crop average, not the centre crop's
    centre = evaluate_model(loaded.model, loader, loaded.mean_image, crops=1, keep_predictions=True)
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    cli_probs = np.array([[t["prob"] for t in r["top"]] for r in rows])
    assert [r["index"] for r in rows] == ten.predictions.indices.tolist()
    assert [[t["index"] for t in r["top"]] for r in rows] == ten.predictions.top.tolist()
    np.testing.assert_allclose(cli_probs, ten.predictions.probs, atol=2e-6)
    assert np.abs(cli_probs - centre.predictions.probs).max() > 1e-3


def test_a_network_with_non_finite_outputs_reports_no_error_rates(tiny_data, tmp_path):
    """F7: eval reported numbers for a network whose every output was NaN."""
    path = _save(tmp_path / "nan.pt", tiny_data)
    ckpt = load_checkpoint(path)
    ckpt["model"]["fc6.weight"] = ckpt["model"]["fc6.weight"] * 1e37        # finite, but the outputs overflow
    ckpt["model"]["fc7.weight"] = ckpt["model"]["fc7.weight"] * 1e37
    save_checkpoint(path, ckpt)
    result = CliRunner().invoke(app, ["eval", str(path), str(tiny_data), "--device", "cpu", "--json"])
    assert result.exit_code == 1 and result.stdout == "", result.output
    assert "outputs are NaN or infinite" in result.stderr


def test_a_split_the_data_lacks_says_what_to_pass_instead(tiny_tree, tiny_data, ckpts, tmp_path):
    """eval's default --split val on data prepared without validation images: the split there
    is to pass instead, and how to prepare a val split; another missing split: what to pass."""
    train_only = tmp_path / "train_only"
    prepare(tiny_tree, train_only, PrepOptions(workers=1, splits=["train"]))
    res = runner.invoke(app, ["eval", str(ckpts[0]), str(train_only), "--device", "cpu"])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 1 and len(lines) == 1, res.output
    assert lines[0].startswith(f"Error: {train_only}: no split 'val' in this data (splits: train): pass --split train "
                               "(measured on training images), or prepare the validation images too: "
                               "`alexnet prep` takes them from a val/ folder"), lines
    res = runner.invoke(app, ["eval", str(ckpts[0]), str(tiny_data), "--split", "test", "--device", "cpu"])
    assert res.exit_code == 1 and res.stderr.strip().endswith(
        "no split 'test' in this data (splits: train, val): pass one of them as --split"), res.output


@pytest.mark.parametrize("classes, trivial", [(4, True), (5, True), (6, False), (1000, False)])
def test_the_table_says_when_the_top5_error_is_trivial(classes, trivial):
    """With at most 5 classes every label is among the top 5: the figure is marked trivial and
    the caption says why (5 classes said nothing; the JSON keys stay as they are)."""
    from alexnet_cli.cli.eval import _table

    k = min(TOP_K, classes)
    counts = TopKCounts(np.full(classes, 2), np.ones(classes, np.int64), np.full(classes, 2), k)
    result = EvalResult(0.5, 0.0, 2 * classes, 1, counts, checkpoints=["m.pt"])
    console = Console(width=200, record=True)
    console.print(_table(result))
    text = " ".join(console.export_text().split())          # the caption wraps at the table's width
    assert ("0.00% (trivial)" in text) == trivial, text
    note = f"only {classes} classes: every label is among the top 5, so the top-5 error is 0 whatever the network"
    assert (note in text) == trivial, text
    assert set(result.to_json()) >= {"top1_error", "top5_error", "n", "crops"}


def test_channel_mean_is_computed_once_per_member_and_the_crops_are_bit_identical(stub_data, monkeypatch):
    """mean_crop "channel": the mean image's average colour was computed again for every crop of
    every batch (ten times a batch); now once per member (Member.mean_rgb), with the very bits
    of that old path (augment.crop given no mean_rgb)."""
    import alexnet_cli.augment as augment
    import alexnet_cli.evaluate as evaluate_module
    from alexnet_cli.evaluate import average_softmax

    images, mean, labels = stub_data
    real, calls = augment.channel_mean, []
    old = {b: [augment.crop(images[s], mean, top, left, flip, mean_crop="channel") for top, left, flip in EXPECTED_TEN]
           for b, s in enumerate([slice(0, 4), slice(4, 6)])}                 # before counting
    monkeypatch.setattr(augment, "channel_mean", lambda m: calls.append("augment") or real(m))
    monkeypatch.setattr(evaluate_module, "channel_mean", lambda m: calls.append("member") or real(m))
    net = CornerNet(5, 0.01)
    evaluate_models([Member(net, mean, "channel")], ListLoader(images, labels, 4), crops=10)
    assert calls == ["member"]                                      # 2 batches x 10 crops, one average
    assert len(net.inputs) == 20
    assert all(torch.equal(got, want) for got, want in zip(net.inputs, old[0] + old[1]))
    member, calls[:] = Member(net, mean, "channel"), []
    first, again = (average_softmax([member], images[:2]) for _ in range(2))
    assert calls == ["member"] and torch.equal(first, again)        # predict's loop: one Member, many batches
    average_softmax([Member(net, mean)], images[:2], crops=10)      # mean_crop "crop": no average colour at all
    assert calls == ["member"]
