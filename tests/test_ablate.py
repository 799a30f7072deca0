"""`alexnet ablate`: every variant a run folder, the table beside the paper's differences, the
files; a rerun trains nothing; an interrupted ablate continues; bad input is one Error line."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alexnet_cli.ablate import FULL, VARIANTS, ablate, figure1_line, markdown
from alexnet_cli.checkpoint import load_checkpoint
from alexnet_cli.cli.app import app
from alexnet_cli.config import resolve_model_config, resolve_train_config
from alexnet_cli.progress import NullReporter
from alexnet_cli.runlog import read_metrics
from alexnet_cli.train import RunOptions

runner = CliRunner()
TINY = ["--max-steps", "1", "--batch-size", "4", "--crops", "1", "--device", "cpu", "--log-every", "1",
        "--workers", "1", "--eval-batch-size", "16"]


def _error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error: "), result.output
    assert sum(line.startswith("Error") for line in lines) == 1 and "Traceback" not in result.output
    return lines[-1]


def _stamps(out: Path) -> dict[str, tuple[int, int]]:
    files = [*out.glob("*/checkpoints/last.pt"), *out.glob("*/metrics.jsonl")]
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in files}


def test_ablate_two_variants_then_a_rerun_trains_nothing(tiny_data, tmp_path):
    out = tmp_path / "ablations"
    result = runner.invoke(app, ["ablate", str(tiny_data), "--out", str(out), "--variants", "tanh,no-lrn", *TINY,
                                 "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc == json.loads((out / "ablations.json").read_text()) and doc["complete"]
    rows = {v["name"]: v for v in doc["variants"]}
    assert list(rows) == [FULL, "no-lrn", "tanh"]                       # the paper's order, full first
    for name, changed in ((FULL, {}), ("no-lrn", {"lrn": False}), ("tanh", {"activation": "tanh"})):
        config = load_checkpoint(out / name / "checkpoints" / "last.pt")["config"]
        assert {k: config["model"][k] for k in changed} == changed and rows[name]["changed"] == changed
        assert config["model"]["lrn"] == (name != "no-lrn") and rows[name]["step"] == 1
        assert rows[name]["state"] == "stopped" and rows[name]["eval"]["n"] == 16
        assert rows[name]["delta_top1"] == pytest.approx(rows[name]["top1_error"] - rows[FULL]["top1_error"])
    assert rows["no-lrn"]["paper_delta_top1"] == 0.014 and rows["no-lrn"]["paper_delta_top5"] == 0.012
    # the settings recorded are those the full network trained with: fc8 sized to the data's 4 classes
    full_config = json.loads((out / FULL / "config.json").read_text())
    assert doc["model"]["num_classes"] == full_config["model"]["num_classes"] == 4
    assert doc["model"] == full_config["model"]
    assert doc["figure1"]["relu"] is None and doc["figure1"]["paper_ratio"] == 6.0   # no epoch done yet
    assert doc["figure1"]["threshold"] == 0.25                       # the default: the paper's 25% (figure 1)
    assert "training top-1 error down to 25%:" in figure1_line(doc)
    md = (out / "ablations.md").read_text()
    assert md == markdown(doc) and "| no-lrn | no response normalisation |" in md and "+1.4 / +1.2" in md
    assert (out / "curves.png").stat().st_size > 10_000
    # the rerun: nothing trained, nothing evaluated again, the same table
    before = _stamps(out)
    again = runner.invoke(app, ["ablate", str(tiny_data), "--out", str(out), "--variants", "no-lrn,tanh", *TINY])
    assert again.exit_code == 0, again.output
    assert _stamps(out) == before and "evaluating" not in again.stderr
    for i, name in enumerate((FULL, "no-lrn", "tanh"), 1):             # said, not only done
        assert f"run {i} of 3 in {out / name}: finished before, skipped" in " ".join(again.stderr.split())
    assert "no-lrn" in again.stdout and "+1.4" in again.stdout and "Figure 1" in again.stdout
    assert "[dim]" not in again.stdout and "[/]" not in again.stdout      # styles, not markup printed as text
    assert json.loads((out / "ablations.json").read_text())["variants"] == doc["variants"]
    # other training settings for the same folder: refused, naming the variant
    other = runner.invoke(app, ["ablate", str(tiny_data), "--out", str(out), "--variants", "no-lrn", *TINY,
                                "--lr", "0.02"])
    assert other.exit_code == 1 and "ablate, variant full:" in _error_line(other) and "lr" in _error_line(other)
    assert _stamps(out) == before


class _Interrupt:
    """A reporter that raises KeyboardInterrupt (a Ctrl-C) at the `after`-th training step."""

    def __init__(self, after: int):
        self.after, self.steps = after, 0

    @contextmanager
    def task(self, description, total, unit="it", done=0):
        yield self

    def advance(self, n=1, **info):
        if "loss" in info:                        # a training step (log_every 1); evaluation has none
            self.steps += 1
            if self.steps == self.after:
                raise KeyboardInterrupt

    def log(self, message, mentions=()):
        pass


def test_an_interrupted_ablate_continues_where_it_stopped(tiny_data, tmp_path):
    out = tmp_path / "ablations"
    args = dict(data_dir=tiny_data, out_dir=out, model_cfg=resolve_model_config("paper"),
                train_cfg=resolve_train_config("paper", batch_size=4),
                run=RunOptions(device="cpu", max_steps=2, save_every=1, log_every=1, workers=1),
                variants=["no-pca-aug"], crops=1, eval_batch_size=16)
    with pytest.raises(KeyboardInterrupt):   # the full network's 2 steps, the variant's first, Ctrl-C in its second
        ablate(**args, progress=_Interrupt(after=4))
    assert not (out / "ablations.json").exists()
    full_last, full_log = _stamps(out)[str(out / FULL / "checkpoints" / "last.pt")], read_metrics(out / FULL)
    variant_last = out / "no-pca-aug" / "checkpoints" / "last.pt"
    assert load_checkpoint(variant_last)["trainer"]["step"] == 1            # saved at step 1 (--save-every 1)
    assert [r["step"] for r in read_metrics(out / "no-pca-aug") if r["kind"] == "train"] == [1, 2]
    doc = ablate(**args, progress=NullReporter())
    assert _stamps(out)[str(out / FULL / "checkpoints" / "last.pt")] == full_last    # not trained again
    assert read_metrics(out / FULL) == full_log
    assert [r["step"] for r in read_metrics(out / "no-pca-aug") if r["kind"] == "train"] == [1, 2]   # once each
    assert load_checkpoint(variant_last)["trainer"]["step"] == 2
    assert [v["step"] for v in doc["variants"]] == [2, 2] and doc["complete"]
    assert load_checkpoint(out / "no-pca-aug" / "checkpoints" / "last.pt")["config"]["train"]["pca_aug"] is False


def test_the_variants_carry_the_papers_differences():
    """The paper's reported error increases (top-1, top-5), as SPEC.md quotes them: LRN off 4.3
    +1.4 / +1.2; non-overlapping pooling 4.4 +0.4 / +0.3; one column 4.2 +1.7 / +1.2; PCA colour
    noise off 5.1 +1 top-1 (no top-5 given); dropout and tanh: no number (overfitting; 6x slower)."""
    paper = {"no-lrn": (0.014, 0.012, "4.3"), "pool2": (0.004, 0.003, "4.4"), "one-column": (0.017, 0.012, "4.2"),
             "no-dropout": (None, None, "5.2"), "no-pca-aug": (0.01, None, "5.1"), "tanh": (None, None, "4.1")}
    assert list(VARIANTS) == list(paper)
    for name, (top1, top5, section) in paper.items():
        v = VARIANTS[name]
        assert (v.paper_top1, v.paper_top5, v.section) == (top1, top5, section), name
        if top1 is not None:                                         # the words say the same numbers
            assert v.paper.startswith(f"+{100 * top1:g}"), (name, v.paper)
        if top5 is not None:
            assert f"/ +{100 * top5:g}" in v.paper, (name, v.paper)
    assert VARIANTS["pool2"].model == {"pool_kernel": 2, "pool_stride": 2}
    assert VARIANTS["one-column"].model == {"columns": 1} and VARIANTS["no-pca-aug"].train == {"pca_aug": False}


def test_figure1_ratio_and_its_sentence():
    doc = {"figure1": {"threshold": 0.25, "relu": {"epoch": 2, "step": 20}, "tanh": {"epoch": 12, "step": 120},
                       "epochs": {FULL: 20, "tanh": 20}, "ratio_epochs": 6.0, "ratio_steps": 6.0, "paper_ratio": 6.0}}
    line = figure1_line(doc)
    assert "ReLU epoch 2 (step 20)" in line and "tanh epoch 12 (step 120)" in line and "6.0x the epochs" in line
    doc["figure1"].update(tanh=None, ratio_epochs=None, ratio_steps=None)
    assert "tanh not within 20 epochs" in figure1_line(doc) and "more than 10.0x" in figure1_line(doc)
    assert figure1_line({}) is None


@pytest.mark.parametrize("extra, code, words", [
    (["--variants", "no-lrn,dropout"], 2, "unknown variant 'dropout'; choose among no-lrn"),
    (["--crops", "3"], 2, "--crops must be 1"),
    (["--figure1-error", "0"], 2, "--figure1-error"),
])


def test_bad_options_are_one_error_line_before_any_training(tiny_data, tmp_path, extra, code, words):
    out = tmp_path / "ablations"
    result = runner.invoke(app, ["ablate", str(tiny_data), "--out", str(out), *extra])
    assert result.exit_code == code and words in _error_line(result)
    assert not out.exists()


def test_every_run_gets_trains_recipe_network_and_running_options(tiny_data, tmp_path, monkeypatch):
    """ablate passes train's options on to the library's ablate(), which gives them to every run."""
    seen = {}
    monkeypatch.setattr("alexnet_cli.ablate.ablate", lambda data, out, model_cfg, train_cfg, run, **kw: seen.update(
        model=model_cfg, train=train_cfg, run=run, **kw))
    result = runner.invoke(app, ["ablate", str(tiny_data), "--out", str(tmp_path / "a"), "--variants", "tanh",
                                 "--pca-scale", "code", "--aug-chunk", "8", "--mean-crop", "center",
                                 "--code-epoch-base", "1", "--bias-lr-mult", "2", "--no-bias-weight-decay",
                                 "--lrn-alpha-over-n", "--conv1-order", "code", "--within-map-norm",
                                 "--conv1-padding", "code", "--init-std-conv345", "0.03", "--lrn-kernel", "reference",
                                 "--compile", "--compile-mode", "max-autotune", "--no-channels-last",
                                 "--stuck-steps", "7", "--tensorboard", "--figure1-error", "30"])
    assert result.exit_code == 0, result.output
    t, m, r = seen["train"], seen["model"], seen["run"]
    assert (t.pca_scale, t.aug_chunk, t.mean_crop, t.code_epoch_base, t.bias_lr_mult, t.bias_weight_decay) == (
        "code", 8, "center", 1, 2.0, False)
    assert (m.lrn_alpha_over_n, m.conv1_order, m.within_map_norm, m.conv1_padding, m.init_std_conv345) == (
        True, "code", True, "code", 0.03)
    assert (r.lrn_kernel, r.compile, r.compile_mode, r.channels_last, r.stuck_steps, r.tensorboard) == (
        "reference", True, "max-autotune", False, 7, True)
    assert seen["variants"] == ["tanh"] and seen["figure1_error"] == pytest.approx(0.3)


def test_train_and_ablate_share_each_option():
    """An option of both commands is one definition: the same help, default and panel."""
    import typer.main

    commands = typer.main.get_command(app).commands
    options = {name: {p.opts[0]: p for p in commands[name].params} for name in ("train", "ablate")}
    shared = options["train"].keys() & options["ablate"].keys()
    assert {"--pca-scale", "--aug-chunk", "--mean-crop", "--lrn-kernel", "--compile-mode", "--seed"} <= shared
    for flag in shared - {"--out"}:
        a, b = options["train"][flag], options["ablate"][flag]
        assert (a.help, a.default, a.secondary_opts, a.rich_help_panel) == (b.help, b.default, b.secondary_opts,
                                                                             b.rich_help_panel), flag


def test_a_run_folder_is_not_an_ablation_folder(tiny_data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"recipe": "paper", "model": {}, "train": {}, "run": {}}))
    result = runner.invoke(app, ["ablate", str(tiny_data), "--out", str(run)])
    assert result.exit_code == 1 and "a folder of its own" in _error_line(result)


@pytest.mark.parametrize("n, crops, words", [(1, 1, "(1 image, 1 crop)"), (2, 10, "(2 images, 10 crops)")])
def test_the_title_counts_in_words_that_agree(n, crops, words):
    from alexnet_cli.ablate import title

    doc = {"recipe": "paper", "split": "val", "crops": crops, "variants": [{"eval": {"n": n}}]}
    assert words in title(doc)


def test_the_overfitting_column_is_named_for_what_it_holds():
    """The column "train-val gap" held val - train (-4.17 when the validation error was the lower)."""
    import io

    from rich.console import Console

    from alexnet_cli.cli.ablate import table

    def variant(name, gap):
        return {"name": name, "what": name, "top1_error": 0.5, "top5_error": 0.2, "delta_top1": 0.01,
                "delta_top5": 0.0, "paper": "overfits (see val − train)", "train_val_gap": gap, "epochs_done": 2,
                "epochs": 2, "state": "finished", "eval": {"n": 16}}
    doc = {"recipe": "paper", "split": "val", "crops": 1, "variants": [variant(FULL, -0.0417), variant("no-dropout", 0.1)]}
    md = markdown(doc)
    header = md.splitlines()[2]
    assert "| val − train |" in header and "gap" not in header and "| -4.17 |" in md and "| +10.00 |" in md
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(table(doc))
    shown = console.export_text()
    assert "val − train" in shown and "gap" not in shown and "-4.17" in shown


def test_a_record_from_before_a_setting_existed_counts_at_the_value_it_had_then(tmp_path):
    """An ablations.json written before `dropout_style` and `crop_offsets` existed lacks both:
    its runs trained with inverted dropout and offsets 0..32, so a rerun given those values finds
    them done (nothing loaded or evaluated again), and one with the paper's values does not."""
    from alexnet_cli.ablate import _checkpoint_id, _done_before
    from alexnet_cli.config import to_dict

    run_dir = tmp_path / "full"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"weights")
    settings = {"recipe": "paper", "max_steps": None,
                "model": to_dict(resolve_model_config("paper", dropout_style="inverted")),
                "train": to_dict(resolve_train_config("paper", crop_offsets=33))}
    old = json.loads(json.dumps(settings))
    del old["model"]["dropout_style"], old["train"]["crop_offsets"]
    trained = {"step": 10, "finished": True}
    old["variants"] = [{"name": "full", "trained": trained, "eval": {"checkpoint": _checkpoint_id(run_dir)}}]
    assert _done_before(old, settings, run_dir) == trained
    for part, key, value in (("model", "dropout_style", "paper"), ("train", "crop_offsets", 32)):
        now = {**settings, part: {**settings[part], key: value}}
        assert _done_before(old, now, run_dir) is None


def test_a_finished_run_counts_only_with_the_pca_it_trained_with(tmp_path):
    """`pca --overwrite` or another `--pca FILE` changes the colour noise: the finished runs of an
    earlier ablate no longer count as done (they are not reported beside runs of the other PCA).
    A record that predates the setting trained with the PCA there is."""
    from alexnet_cli.ablate import _checkpoint_id, _done_before

    run_dir = tmp_path / "full"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"weights")
    pca = {"eigenvalues": [3.0, 2.0, 1.0], "eigenvectors": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]}
    settings = {"recipe": "paper", "max_steps": None, "pca": pca}
    trained = {"step": 10, "finished": True}
    record = {**json.loads(json.dumps(settings)),
              "variants": [{"name": "full", "trained": trained, "eval": {"checkpoint": _checkpoint_id(run_dir)}}]}
    assert _done_before(record, settings, run_dir) == trained
    other = {**settings, "pca": {**pca, "eigenvalues": [3.0, 2.0, 0.5]}}
    assert _done_before(record, other, run_dir) is None
    older = {k: v for k, v in record.items() if k != "pca"}
    assert _done_before(older, other, run_dir) == trained


def test_a_rerun_with_another_pca_says_which_run_to_delete(tiny_data, tmp_path):
    """The runs that trained with colour noise cannot go on with another PCA: said before any
    training, naming the run; the run without colour noise is not in the way."""
    import shutil

    from alexnet_cli.pca import read_pca, write_pca

    data, out = tmp_path / "data", tmp_path / "ablations"
    shutil.copytree(tiny_data, data)
    args = ["ablate", str(data), "--out", str(out), "--variants", "no-pca-aug", *TINY]
    assert runner.invoke(app, args).exit_code == 0
    stats = read_pca(data)
    stats.eigenvalues = stats.eigenvalues / 2
    write_pca(data, stats, overwrite=True)
    before = _stamps(out)
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and _error_line(again) == (
        f"Error: {out / FULL} was trained with another PCA than this one (--pca, or DATA's pca.json made again since): "
        f"delete {out / FULL} to train it again with this one, or choose another --out"), again.output
    assert _stamps(out) == before
