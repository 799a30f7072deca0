"""`alexnet demo`: every step runs and leaves its artefacts; a second run in the same folder
reuses them; the output folder rules; the CLI's --json document.

The demo runs here at a tiny size (2 classes, a few images, 1 epoch, batch 4): it checks the
plumbing, not learning (the real demo's run is reported by hand).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alexnet_cli.cli.app import app
from alexnet_cli.demo import MARKER, DemoConfig, claim_out, run_demo
from alexnet_cli.errors import AlexnetError
from alexnet_cli.progress import NullReporter
from alexnet_cli.synth import ODD_FILES

# run_demo's steps in order: the names `on_step` gets and the keys of `timings`
STEPS = ("data", "prep", "pca", "train", "eval_1crop", "eval_10crop", "kernels", "neighbors", "predict")
TINY = DemoConfig(classes=2, train_per_class=6, val_per_class=2, epochs=1, batch_size=4, device="cpu")
TINY_FLAGS = ["--classes", "2", "--train-per-class", "6", "--val-per-class", "2", "--epochs", "1",
              "--batch-size", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    seen: list[str] = []
    said = _Said()
    result = run_demo(out, TINY, on_step=lambda name, r: seen.append(name), progress=said)
    assert not [m for m in said.lines if "nothing to resume" in m], said.lines   # a first run resumes nothing
    return out, result, seen


class _Said(NullReporter):
    """A reporter that keeps the lines logged."""

    def __init__(self):
        self.lines: list[str] = []

    def log(self, message: str, mentions: tuple[str, ...] = ()) -> None:
        self.lines.append(message)


def test_every_step_runs_and_leaves_its_artefacts(demo_run):
    out, r, seen = demo_run
    assert seen == list(STEPS)
    assert set(r.timings) == set(STEPS) and all(t >= 0 for t in r.timings.values())
    assert not r.reused
    data = out / "data"
    assert (data / "manifest.json").is_file() and (data / "pca.json").is_file()
    assert sorted(p.name for p in data.glob("train-*.h5")) and sorted(p.name for p in data.glob("val-*.h5"))
    assert (out / "run" / "checkpoints" / "last.pt").is_file() and r.checkpoint == out / "run/checkpoints/last.pt"
    for name in ("kernels.png", "neighbors.png", "predictions.png"):
        assert (out / name).stat().st_size > 0
    # prep: the odd files are converted or skipped, and reported
    kept = sum(1 for v in ODD_FILES.values() if v == "kept")
    assert r.prep.images == 2 * 6 + kept + 2 * 2
    assert sorted(Path(s["path"]).name for s in r.prep.manifest.skipped) == \
        sorted(k for k, v in ODD_FILES.items() if v != "kept")
    assert len(r.pca.eigenvalues) == 3 and r.pca.eigenvalues[0] >= r.pca.eigenvalues[2] >= 0
    assert [e["epoch"] for e in r.epochs] == [1] and "val_top1_error" in r.epochs[0]
    assert set(r.evals) == {1, 10} and r.evals[10].crops == 10 and r.evals[1].n == 4
    assert [c.name for c in r.kernels.columns] == ["A", "B"]
    assert len(r.neighbors) == 4 and all(len(q.neighbors) == TINY.k for q in r.neighbors)
    assert {Path(q.query).parent.name for q in r.neighbors} == set(r.prep.manifest.classes)  # one per class
    assert len(r.predictions) == 4 and r.chance_top1_error == 0.5


def test_cli_json_reuses_the_folder(demo_run):
    out, first, _ = demo_run
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--json", *TINY_FLAGS])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["reused"] is True and doc["prep"]["up_to_date"] is True
    assert set(doc["timings"]) == set(STEPS)
    assert set(doc["val_top1_error"]) == {"1", "10"}
    # the same checkpoint evaluated again: the same numbers
    assert doc["val_top1_error"]["1"] == first.evals[1].top1_error
    assert doc["val_top1_error"]["10"] == first.evals[10].top1_error
    assert doc["chance"]["top1_error"] == 0.5
    assert len(doc["train"]["epochs"]) == 1
    for key in ("checkpoint", "data", "run", "kernels", "neighbors", "predictions"):
        assert Path(doc["paths"][key]).exists(), key


def test_the_eval_lines_say_a_top5_error_of_two_classes_is_no_measure(demo_run):
    out, first, _ = demo_run
    assert first.trained
    res = CliRunner().invoke(app, ["demo", "--out", str(out), *TINY_FLAGS])
    assert res.exit_code == 0, res.output
    lines = [" ".join(line.split()) for line in res.stdout.splitlines() if line.lstrip().startswith("eval")]
    # as `eval` says it: the figure, "trivial"
    assert len(lines) == 2 and all("(chance 50%), top-5 error 0.0% (trivial: only 2 classes)," in line
                                   for line in lines), lines
    train = [line for line in res.stdout.splitlines() if line.lstrip().startswith("train:")]
    assert len(train) == 1 and "on cpu (already trained) (" in train[0], train    # a rerun trains nothing


def test_other_settings_clear_only_the_demos_own_files(tmp_path):
    out = tmp_path / "out"
    assert claim_out(out, TINY) is False
    (out / "run").mkdir()
    (out / "run" / "x").write_text("old")
    (out / "kernels.png").write_bytes(b"old")
    (out / "notes.txt").write_text("the user's")
    assert claim_out(out, TINY) is True                     # same settings: reuse, nothing deleted
    assert (out / "run" / "x").exists()
    other = DemoConfig(**{**TINY.key(), "epochs": 2})
    assert claim_out(out, other) is False
    assert not (out / "run").exists() and not (out / "kernels.png").exists()
    assert (out / "notes.txt").read_text() == "the user's"
    assert json.loads((out / MARKER).read_text())["config"]["epochs"] == 2


def test_never_touches_a_folder_it_did_not_create(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    with pytest.raises(AlexnetError, match="not empty"):
        claim_out(out, TINY)
    res = CliRunner().invoke(app, ["demo", "--out", str(out), *TINY_FLAGS])
    assert res.exit_code == 1
    assert "Error:" in res.output and "Traceback" not in res.output
    assert [p.name for p in out.iterdir()] == ["precious.txt"]


def test_bad_sizes_are_rejected():
    with pytest.raises(AlexnetError, match="fewer than one batch"):
        DemoConfig(classes=2, train_per_class=1, batch_size=16).check()
    res = CliRunner().invoke(app, ["demo", "--classes", "1"])
    assert res.exit_code == 2


@pytest.mark.parametrize("seed", ["-1", str(10**20)])
def test_a_seed_no_generator_takes_is_bad_usage_before_anything_is_written(tmp_path, seed):
    """F6: --seed -1 failed with internal text after the data, and a run's config.json, were written."""
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), *TINY_FLAGS, "--seed", seed])
    assert result.exit_code == 2 and "--seed must be a whole number" in result.stderr, result.output
    assert not out.exists()


def test_json_config_names_the_rate_trained_with_lr():
    """`demo --json`'s config gives the learning rate once, as `lr` (train's --lr, config.json's
    train.lr, metrics.jsonl's lr): it said `"lr": null` beside `"learning_rate": 0.0025`."""
    from alexnet_cli.demo import DemoResult

    config = DemoResult(Path("out"), TINY).to_json()["config"]
    assert config["lr"] == TINY.learning_rate == 2 * 0.01 * 4 / 128 and "learning_rate" not in config
    assert DemoResult(Path("out"), DemoConfig(lr=0.003)).to_json()["config"]["lr"] == 0.003
    assert config["lr"] == TINY.configs()[1].lr                       # what the run's config.json records


def test_cli_refuses_a_foreign_folder_before_printing_its_plan(tmp_path):
    """The plan paragraph ("alexnet demo into ...") was printed on stdout, then the error."""
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    refused = CliRunner().invoke(app, ["demo", "--out", str(foreign)])
    assert refused.exit_code == 1 and refused.stdout == "", refused.stdout
    assert refused.stderr.startswith("Error: --out ") and "holds no earlier demo" in refused.stderr
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
