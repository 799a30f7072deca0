"""`alexnet ablate`: the paper's ablations as one resumable command.

The full network and each variant the paper reports train in a run folder of their own under
DIR (`DIR/full`, `DIR/no-lrn`, ...), one after the other, with the same recipe, data, seed and
training options; then each final network (`checkpoints/last.pt`) is evaluated on the
validation split and set beside the full network, with the paper's differences:

- no-lrn       section 4.3: LRN lowers top-1 / top-5 error by 1.4 / 1.2 points
- pool2        section 4.4: overlapping pooling (3/2 against 2/2) by 0.4 / 0.3
- one-column   section 4.2: two columns against one with half the kernels, by 1.7 / 1.2
- no-dropout   section 5.2: without dropout the network overfits substantially (the column
               "val − train": the last epoch's validation minus training top-1 error)
- no-pca-aug   section 5.1: the PCA colour noise lowers top-1 error by over 1 point
- tanh         section 4.1, figure 1: ReLUs reach 25% training error about 6 times faster

Resumable as a whole: every run trains with `train --resume` semantics (train.py), so a rerun
continues the unfinished run and trains nothing in a finished one; each evaluation is kept in
DIR/ablations.json with the step and checkpoint it measured, and a rerun reuses it while the
run has not changed. DIR/ablations.md holds the table, DIR/curves.png the learning curves.
Ctrl-C or SIGTERM stops the whole: the run in training saves and stops (train.py); otherwise the
run's last save or the evaluation in progress finishes and no other starts (`Interrupted`,
naming the runs trained and evaluated; docs/training.md).
Under torchrun (`--parallel data`) every process trains each variant in turn, data parallel;
process 0 alone evaluates and writes the files.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from alexnet_cli.atomic import write_atomic
from alexnet_cli.config import ModelConfig, TrainConfig, recipe_of, recorded_settings, top5_is_trivial, top5_note
from alexnet_cli.distributed import launched_by_torchrun
from alexnet_cli.errors import AlexnetError, Interrupted, UsageError
from alexnet_cli.evaluate import check_crops, evaluate
from alexnet_cli.paths import check_output_folder
from alexnet_cli.pca import read_pca
from alexnet_cli.progress import NullReporter, Reporter, plural
from alexnet_cli.report import RunReport, plot_runs, read_run
from alexnet_cli.runlog import RunFolder, write_json_atomic
from alexnet_cli.shards import data_key, read_manifest
from alexnet_cli.stopping import StopRequests, signal_name
from alexnet_cli.train import RunOptions, fit_classes, train
from alexnet_cli.variants import FULL, FULL_VARIANT, VARIANTS, Variant

PAPER_TANH_RATIO = 6.0     # figure 1: "six times faster than an equivalent network with tanh neurons"


@dataclass(frozen=True)
class _Plan:
    """What every run of one `ablate` shares: the runs, where they live, what they train with
    and how they are evaluated, and what an earlier ablate in the same folder recorded."""

    names: tuple[str, ...]         # the runs: FULL, then the variants asked for in the paper's order
    data_dir: Path
    out_dir: Path                  # DIR: a run folder per name, ablations.json, .md, curves.png
    model_cfg: ModelConfig         # the full network's; each variant changes a few (variant_configs)
    train_cfg: TrainConfig
    run: RunOptions
    recipe: str
    crops: int                     # the evaluation's
    eval_batch_size: int
    previous: dict[str, Any]       # DIR/ablations.json of an earlier ablate ({} if none)


def parse_variants(names: str | Sequence[str] | None) -> list[str]:
    """The variants asked for, in the paper's order; None: all of them."""
    if names is None:
        return list(VARIANTS)
    if isinstance(names, str):
        names = names.split(",")
    asked = [n.strip() for n in names if n.strip()]
    unknown = [n for n in asked if n not in VARIANTS and n != FULL]
    if unknown or not asked:
        what = f"unknown variant {', '.join(map(repr, unknown))}" if unknown else "none given"
        raise UsageError(f"variants: {what}; choose among {', '.join(VARIANTS)}", field="variants", value=names)
    return [n for n in VARIANTS if n in asked]


def variant_configs(variant: Variant, model_cfg: ModelConfig,
                    train_cfg: TrainConfig) -> tuple[ModelConfig, TrainConfig]:
    """The full network's settings with the variant's changes."""
    return dataclasses.replace(model_cfg, **variant.model), dataclasses.replace(train_cfg, **variant.train)


def check_ablation_dir(out_dir: Path) -> None:
    """DIR holds run folders; a run folder itself (or a file) is not a place for them, nor a folder
    inside a data folder or a run's folder (paths.check_output_folder)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"out_dir {out_dir} is a file; give a folder for the runs", field="out_dir", value=out_dir)
    if (out_dir / "config.json").exists():
        raise AlexnetError(f"{out_dir} is a training run's folder; give ablate a folder of its own "
                           "(it makes one run folder per variant in it)")
    if not (out_dir / "ablations.json").is_file():   # one an older version made there is rerun, not stranded
        check_output_folder(out_dir, "out_dir")      # not inside a data folder or a run's folder


def ablate(data_dir: str | Path, out_dir: str | Path, model_cfg: ModelConfig, train_cfg: TrainConfig,
           run: RunOptions = RunOptions(), *, recipe: str | None = None, variants: Sequence[str] | None = None,
           crops: int = 10, figure1_error: float = 0.25, eval_batch_size: int = 128,
           progress: Reporter = NullReporter()) -> dict[str, Any] | None:
    """Train (or continue) the full network and each variant under `out_dir`, evaluate each,
    write ablations.json, ablations.md and curves.png; returns the ablations.json document
    (None in processes other than torchrun's rank 0). `recipe`: as train's (None: the one the
    base configs were resolved from, config.recipe_of), recorded with every variant's run."""
    recipe = recipe_of(model_cfg, train_cfg, recipe)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    names = [FULL, *parse_variants(variants)]
    _check_evaluation_options(crops, figure1_error, eval_batch_size)
    check_ablation_dir(out_dir)
    created = not out_dir.exists()
    try:
        return _ablate(data_dir, out_dir, model_cfg, train_cfg, run, recipe, names, crops, figure1_error,
                       eval_batch_size, progress)
    finally:                   # as train's: an ablate that failed before any run wrote a file leaves no folder
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            try:
                out_dir.rmdir()
            except OSError:    # another process (torchrun) wrote in it meanwhile
                pass


def _ablate(data_dir: Path, out_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig, run: RunOptions,
            recipe: str, names: list[str], crops: int, figure1_error: float, eval_batch_size: int,
            progress: Reporter) -> dict[str, Any] | None:
    """`ablate` once its options are checked."""
    settings = _settings(data_dir, model_cfg, train_cfg, run, recipe)    # what the training of each run depends on
    plan = _Plan(names=tuple(names), data_dir=data_dir, out_dir=out_dir, model_cfg=model_cfg, train_cfg=train_cfg,
                 run=run, recipe=recipe, crops=crops, eval_batch_size=eval_batch_size, previous=_previous(out_dir))
    # Ctrl-C or SIGTERM: each run's training stops after its step, saved (train.py); between
    # runs and evaluations, ablate starts no other (_check_stop)
    with StopRequests("ablate", "before its next step or evaluation") as stop:
        trained = _train_all(plan, settings, stop, progress)
        if trained[FULL]["rank"] != 0:                              # under torchrun, process 0 alone reports
            return None
        settings = {**settings, "crops": crops, "figure1_error": figure1_error}   # ablations.json records these too
        results = _evaluate_all(plan, settings, trained, stop, progress)
        if stop.signum is not None:                                 # during an evaluation
            progress.log(f"Note: the {signal_name(stop.signum)} came during an evaluation, with nothing left "
                         "to stop: ablate ends as usual")
    return _write_results(out_dir, settings, names, results, figure1_error, recipe)


def _check_evaluation_options(crops: int, figure1_error: float, eval_batch_size: int) -> None:
    """ablate's own settings, checked before any training."""
    check_crops(crops)
    if not 0 < figure1_error < 1:
        raise UsageError(f"figure1_error must be a fraction in (0, 1), got {figure1_error:g}", field="figure1_error",
                         value=figure1_error)
    if eval_batch_size < 1:
        raise UsageError(f"eval_batch_size must be at least 1, got {eval_batch_size}", field="eval_batch_size",
                         value=eval_batch_size)


def _settings(data_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig, run: RunOptions,
              recipe: str) -> dict[str, Any]:
    """What every run is trained with, as ablations.json records it: an earlier record counts
    for a run only while these are the same (_done_before)."""
    manifest = read_manifest(data_dir)
    # the data by content (train.data_key): a folder prepared again at the same path is other data
    data_keys = {split: data_key(manifest, split) for split in ("train", run.val_split)}   # no split: an error now
    trained_model = fit_classes(model_cfg, len(manifest.classes))     # fc8 sized to the data, as train does
    return {"recipe": recipe, "data": str(data_dir), "data_keys": data_keys, "split": run.val_split,
            "seed": run.seed, "max_steps": run.max_steps, "model": dataclasses.asdict(trained_model),
            "train": dataclasses.asdict(train_cfg), "pca": _pca(data_dir, train_cfg, run)}


def _pca(data_dir: Path, train_cfg: TrainConfig, run: RunOptions) -> dict[str, Any] | None:
    """The PCA of the colour noise the runs train with (DATA/pca.json or --pca FILE) by its
    values, so that one made again (`pca --overwrite`, another --pca) is not taken for the one
    the finished runs used; None without colour noise."""
    if not train_cfg.pca_aug:
        return None
    stats = read_pca(data_dir, run.pca_file)
    return {"eigenvalues": [float(v) for v in stats.eigenvalues],
            "eigenvectors": [[float(v) for v in row] for row in stats.eigenvectors]}


def _train_all(plan: _Plan, settings: dict[str, Any], stop: StopRequests,
               progress: Reporter) -> dict[str, dict[str, Any]]:
    """Each run in turn trained to its end, or skipped when an earlier ablate recorded it
    complete with the same `settings`; what train said of each (step, epochs, finished,
    parallel, rank). A stop before, during or just after a run's training raises `Interrupted`,
    naming the runs trained."""
    names, out_dir = plan.names, plan.out_dir
    trained: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names, 1):
        variant = VARIANTS.get(name, FULL_VARIANT)
        if not launched_by_torchrun():     # under torchrun the run's training stops, all ranks together
            _check_stop(stop, f"before training {name}", names, trained, {})
        done = _done_before(plan.previous, settings, out_dir / name)
        if not done:
            _check_same_pca(plan.previous, settings, variant, out_dir / name)
        progress.log(f"ablate: {name} ({variant.what}), run {i} of {len(names)} in {out_dir / name}"
                     + (": finished before, skipped" if done else ""))
        try:
            trained[name] = done or _train_variant(plan, variant, out_dir / name, progress)
        except Interrupted as exc:
            said = str(exc).removeprefix(f"{signal_name(exc.signum)}: ").removeprefix("stopped ")
            raise _stopped(exc.signum, f"while training {name}, {said}", names, trained, {}) from None
        late = trained[name].pop("stop_signal", None)    # came after its last step: the run is complete, saved
        if late:
            _check_stop(late, f"after training {name} (step {trained[name]['step']}, saved in "
                        f"{RunFolder(out_dir / name).last})", names, trained, {})
        if trained[name]["rank"] != 0:                  # under torchrun, process 0 alone reports
            progress = NullReporter()
    return trained


def _check_same_pca(previous: dict[str, Any], settings: dict[str, Any], variant: Variant, run_dir: Path) -> None:
    """A run begun or finished with another PCA than this ablate's cannot go on with it (its
    resume refuses another colour noise): said before any training, in ablate's terms."""
    uses_pca = variant.train.get("pca_aug", True) and settings["pca"] is not None
    if uses_pca and "pca" in previous and previous["pca"] != settings["pca"] and RunFolder(run_dir).last.is_file():
        raise AlexnetError(f"{run_dir} was trained with another PCA than this one (`pca_file`, or DATA's pca.json "
                           f"made again since): delete {run_dir} to train it again with this one, or choose another "
                           "`out`", mentions=("pca_file", "out"))


def _evaluate_all(plan: _Plan, settings: dict[str, Any], trained: dict[str, dict[str, Any]], stop: StopRequests,
                  progress: Reporter) -> dict[str, dict[str, Any]]:
    """Each run's final network evaluated on the validation split, or its earlier evaluation
    reused while it measured the same checkpoint in the same way; ablations.json (not yet
    complete, with `settings`) rewritten after each new one, so that a kill keeps what was
    measured. A stop raises `Interrupted` before the next evaluation."""
    names, out_dir, crops, split = plan.names, plan.out_dir, plan.crops, plan.run.val_split
    results: dict[str, dict[str, Any]] = {}
    cached = {v["name"]: v for v in plan.previous.get("variants", [])
              if plan.previous.get("data_keys") == settings["data_keys"]}
    for name in names:
        if _still_valid(cached.get(name), out_dir / name, trained[name], crops, split):
            results[name] = {**cached[name], "trained": trained[name]}
            continue
        _check_stop(stop, f"before evaluating {name}", names, trained, results)
        progress.log(f"ablate: evaluating {name} ({crops} crop{'s' if crops > 1 else ''}, {split})")
        results[name] = _evaluate(plan, out_dir / name, trained[name], progress)
        write_json_atomic(out_dir / "ablations.json",           # a kill keeps what was measured
                          {"complete": False, **settings, "variants": list(results.values())})
    return results


def _write_results(out_dir: Path, settings: dict[str, Any], names: list[str], results: dict[str, dict[str, Any]],
                   figure1_error: float, recipe: str) -> dict[str, Any]:
    """Finish: the complete ablations.json, the table (ablations.md) and the learning curves
    (curves.png), from the evaluations and the runs' logs; the ablations.json document."""
    runs = {name: read_run(out_dir / name, name) for name in names}
    doc = _document(settings, names, results, runs, figure1_error)
    write_json_atomic(out_dir / "ablations.json", doc)
    write_atomic(out_dir / "ablations.md", markdown(doc).encode("utf-8"))
    plot_runs(list(runs.values()), out_dir / "curves.png", title=f"Ablations ({recipe} recipe): {', '.join(names)}")
    return doc


def _check_stop(stop: StopRequests | int, where: str, names: Sequence[str], trained: dict[str, Any],
                results: dict[str, Any]) -> None:
    """Stop here (`Interrupted`) if a Ctrl-C or SIGTERM asked to (`stop`: the requests, or a
    run's signal)."""
    signum = stop.signum if isinstance(stop, StopRequests) else stop
    if signum:
        raise _stopped(signum, where, names, trained, results)


def _stopped(signum: int, where: str, names: Sequence[str], trained: dict[str, Any],
             results: dict[str, Any]) -> Interrupted:
    """ablate's stop, in words: where, and which runs are trained and evaluated."""
    def which(done) -> str:
        done = [n for n in names if n in done]
        return f"{', '.join(done)} ({len(done)} of {len(names)})" if done else f"none of {len(names)}"
    return Interrupted(f"{signal_name(signum)}: ablate stopped {where}; runs trained: {which(trained)}; "
                       f"evaluated: {which(results)}", signum)


def _train_variant(plan: _Plan, variant: Variant, run_dir: Path, progress: Reporter) -> dict[str, Any]:
    """Train the variant's run to its end (or --max-steps), continuing what is there."""
    m, t = variant_configs(variant, plan.model_cfg, plan.train_cfg)
    resume = RunFolder(run_dir).last.exists()
    try:
        result = train(plan.data_dir, run_dir, m, t, dataclasses.replace(plan.run, resume=resume), recipe=plan.recipe,
                       progress=progress)
    except Interrupted:
        raise                                                      # ablate says where it stopped
    except AlexnetError as exc:
        raise exc.within(f"ablate, variant {variant.name}") from None
    return {k: result.get(k) for k in ("step", "epochs", "finished", "parallel", "rank", "stop_signal")}


def _done_before(previous: dict[str, Any], settings: dict[str, Any], run_dir: Path) -> dict[str, Any] | None:
    """What an earlier `ablate` with the same settings recorded for this run, when the run is
    complete (finished, or at --max-steps) and its checkpoint unchanged since: nothing to train,
    not even a checkpoint to load. Under torchrun every process trains (train decides)."""
    entry = next((v for v in previous.get("variants", []) if v.get("name") == run_dir.name), None)
    if launched_by_torchrun() or entry is None or "trained" not in entry or "eval" not in entry:
        return None
    if any(_recorded(previous, k) != v for k, v in settings.items() if k in previous or k not in _NEWER_SETTINGS):
        return None
    done = entry["trained"]
    complete = done.get("finished") or (settings["max_steps"] is not None and done.get("step") == settings["max_steps"])
    if not complete or entry["eval"].get("checkpoint") != _checkpoint_id(run_dir):
        return None
    return done


# Settings an older ablations.json lacks, not compared with its runs' (they trained with what DATA held)
_NEWER_SETTINGS = ("pca",)


def _recorded(previous: dict[str, Any], key: str) -> Any:
    """An earlier ablations.json's `key` of the settings; its "model" and "train" with every field
    it predates at the value it had then (config.recorded_settings), as resuming counts them."""
    value = previous.get(key)
    if key in ("model", "train") and isinstance(value, dict):
        return recorded_settings(value, ModelConfig() if key == "model" else TrainConfig())
    return value


def _previous(out_dir: Path) -> dict[str, Any]:
    path = out_dir / "ablations.json"
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}                      # written atomically: only a hand edit breaks it; measure again
    return doc if isinstance(doc, dict) else {}


def _checkpoint_id(run_dir: Path) -> dict[str, int] | None:
    """Which last.pt this is: a retrained or resumed run writes a new file."""
    path = RunFolder(run_dir).last
    if not path.exists():
        return None
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _still_valid(entry: dict[str, Any] | None, run_dir: Path, trained: dict[str, Any], crops: int,
                 split: str) -> bool:
    """An earlier evaluation measured this very checkpoint in the same way."""
    if not entry or "eval" not in entry:
        return False
    e = entry["eval"]
    return (e.get("step") == trained["step"] and e.get("crops") == crops and e.get("split") == split
            and e.get("checkpoint") == _checkpoint_id(run_dir))


def _evaluate(plan: _Plan, run_dir: Path, trained: dict[str, Any], progress: Reporter) -> dict[str, Any]:
    """The run's final network (last.pt) evaluated on the validation split, on the device it trained on."""
    run, crops = plan.run, plan.crops
    device = run.devices[0] if trained["parallel"] == "model" else run.device
    result = evaluate([RunFolder(run_dir).last], plan.data_dir, split=run.val_split, crops=crops,
                      batch_size=plan.eval_batch_size, device=device, bf16=run.bf16, workers=run.workers,
                      progress=progress)
    measured = {"top1_error": result.top1_error, "top5_error": result.top5_error, "n": result.n, "crops": crops,
                "split": run.val_split, "step": trained["step"], "checkpoint": _checkpoint_id(run_dir)}
    return {"name": run_dir.name, "trained": trained, "eval": measured}


def _first_below(run: RunReport, threshold: float) -> dict[str, int] | None:
    """Figure 1's measure: the first epoch (and its step) whose training top-1 error is at or
    below `threshold`."""
    for r in run.kind("epoch"):
        if r.get("train_top1_error", math.inf) <= threshold:
            return {"epoch": int(r["epoch"]), "step": int(r["step"])}
    return None


def _document(settings: dict[str, Any], names: list[str], results: dict[str, Any], runs: dict[str, RunReport],
              figure1_error: float) -> dict[str, Any]:
    full = results[FULL]["eval"]
    variants = []
    for name in names:
        v, e, r = VARIANTS.get(name, FULL_VARIANT), results[name]["eval"], runs[name]
        last = r.kind("epoch")[-1] if r.epochs_done else {}
        gap = (last["val_top1_error"] - last["train_top1_error"]
               if last.get("val_top1_error") is not None else None)
        variants.append({
            "name": name, "what": v.what, "section": v.section, "run": str(r.path), "changed": {**v.model, **v.train},
            "state": "finished" if results[name]["trained"]["finished"] else "stopped",
            "epochs_done": r.epochs_done, "epochs": r.epochs_total, "step": e["step"],
            "top1_error": e["top1_error"], "top5_error": e["top5_error"],
            "delta_top1": e["top1_error"] - full["top1_error"], "delta_top5": e["top5_error"] - full["top5_error"],
            "paper_delta_top1": v.paper_top1, "paper_delta_top5": v.paper_top5, "paper": v.paper,
            "train_top1_error": last.get("train_top1_error"), "val_top1_error": last.get("val_top1_error"),
            "train_val_gap": gap, "trained": results[name]["trained"], "eval": e})
    doc = {"complete": True, **settings, "variants": variants}
    if "tanh" in names:
        relu, tanh = _first_below(runs[FULL], figure1_error), _first_below(runs["tanh"], figure1_error)
        doc["figure1"] = {
            "threshold": figure1_error, "relu": relu, "tanh": tanh,
            "epochs": {FULL: runs[FULL].epochs_done, "tanh": runs["tanh"].epochs_done},
            "ratio_epochs": tanh["epoch"] / relu["epoch"] if relu and tanh else None,
            "ratio_steps": tanh["step"] / relu["step"] if relu and tanh else None,
            "paper_ratio": PAPER_TANH_RATIO}
    return doc


# ----------------------------------------------------------------------- the table
VAL_MINUS_TRAIN = "val − train"     # JSON train_val_gap: the last epoch's val minus train top-1 error, in points
HEADER = ["variant", "what", "top-1", "top-5", "Δ top-1", "Δ top-5", "paper Δ", VAL_MINUS_TRAIN, "epochs",
          "state"]


def _pct(x: float | None, sign: bool = False) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f}" if sign else f"{100 * x:.2f}%"


def trivial_top5(doc: dict[str, Any]) -> bool:
    """Whether the runs have at most TOP_K classes: their top-5 errors are 0 whatever the network,
    so the table marks them `(trivial)`, as `eval` and `report` do, and `top5_footnote` says why."""
    num_classes = doc.get("model", {}).get("num_classes")     # every ablations.json has it
    return isinstance(num_classes, int) and top5_is_trivial(num_classes)


def top5_footnote(doc: dict[str, Any]) -> str | None:
    """The line under the table on a trivial top-5 (as report's), or None."""
    return f"top-5 (trivial): {top5_note(doc['model']['num_classes'])}" if trivial_top5(doc) else None


def table_rows(doc: dict[str, Any]) -> list[list[str]]:
    """The table of `alexnet ablate` (and of ablations.md), one row per run, full network first."""
    rows = []
    trivial = trivial_top5(doc)
    for v in doc["variants"]:
        full = v["name"] == FULL
        mark = " (trivial)" if trivial else ""
        rows.append([v["name"], v["what"], _pct(v["top1_error"]), _pct(v["top5_error"]) + mark,
                     "" if full else _pct(v["delta_top1"], True),
                     "" if full else _pct(v["delta_top5"], True) + mark,
                     "reference" if full else v["paper"], _pct(v["train_val_gap"], True),
                     f"{v['epochs_done']}/{v['epochs']}", v["state"]])
    return rows


def figure1_line(doc: dict[str, Any]) -> str | None:
    """Figure 1's comparison in one sentence, or None without the tanh variant."""
    f = doc.get("figure1")
    if f is None:
        return None
    threshold = f"{100 * f['threshold']:g}%"

    def reached(name: str, at: dict[str, int] | None) -> str:
        n = f["epochs"][name]
        return f"epoch {at['epoch']} (step {at['step']:,})" if at else f"not within {n} epoch{'s' if n != 1 else ''}"

    if f["ratio_epochs"] is not None:
        ratio = f"tanh needs {f['ratio_epochs']:.1f}x the epochs ({f['ratio_steps']:.1f}x the steps)"
    elif f["relu"] and f["epochs"]["tanh"] > f["relu"]["epoch"]:
        ratio = f"tanh needs more than {f['epochs']['tanh'] / f['relu']['epoch']:.1f}x the epochs"
    else:
        ratio = "no ratio yet"
    return (f"Figure 1, training top-1 error down to {threshold}: ReLU {reached(FULL, f['relu'])}, tanh "
            f"{reached('tanh', f['tanh'])}; {ratio} (paper: about {f['paper_ratio']:g}x)")


def title(doc: dict[str, Any]) -> str:
    n = doc["variants"][0]["eval"]["n"] if doc["variants"] else 0
    crops = f"{doc['crops']} crop{'s' if doc['crops'] > 1 else ''}"
    return (f"Ablations ({doc['recipe']} recipe): error (%) of each final network on {doc['split']} "
            f"({plural(n, 'image')}, {crops}); Δ = variant - full, in points")


def markdown(doc: dict[str, Any]) -> str:
    lines = [f"# {title(doc)}", "", "| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(doc)]
    notes = [line for line in (top5_footnote(doc), figure1_line(doc)) if line]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"
