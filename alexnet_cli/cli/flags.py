"""The one table from the library's setting names to the command-line flags that set them.

Library errors name the setting they are about by its field or argument name and carry it
(`AlexnetError.field`, errors.py); the error boundary (cli/app.py) shows the flag instead:
`dropout must be in [0, 1), got 2` reaches the CLI user as `--dropout must be in [0, 1), got 2`.
A field missing here is shown by its own name. The names are the library's, shared by every
command that has the flag (`data_dir` is predict's --data: the other commands take DATA as an
argument and raise nothing about it by name; `batch_size` is --batch-size, the training batch
of `train` and the forward batch of `eval`, `features`, `neighbors` and `codes`, while
codes.make_codes' own `batch_size`, the auto-encoder's, is no flag and never reaches the CLI).
An error's `mentions` (other settings its message names, `name` in backticks) are shown by their
flags as well, and so are those of the notes the library prints through the CLI's reporter
(cli/common.py gives it `NAMES`). An on/off setting has two flags: FLAGS names the one that turns
it on, OFF_FLAGS the one that turns it off, which a message asking for the setting off writes
`name=False` (`train with `pca_aug=False`` reaches the CLI user as `train with --no-pca-aug`).
"""

from __future__ import annotations

FLAGS: dict[str, str] = {
    # ModelConfig (config.py) and summary/train/ablate's network options
    "num_classes": "--num-classes",
    "columns": "--columns",
    "activation": "--activation",
    "lrn": "--lrn",
    "lrn_alpha_over_n": "--lrn-alpha-over-n",
    "pool_kernel": "--pool",
    "dropout": "--dropout",
    "dropout_style": "--dropout-style",
    "conv1_order": "--conv1-order",
    "within_map_norm": "--within-map-norm",
    "conv1_padding": "--conv1-padding",
    "init_std_conv345": "--init-std-conv345",
    "bias_fill": "--bias-init",
    # TrainConfig (config.py) and train/ablate's recipe options
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "momentum": "--momentum",
    "weight_decay": "--weight-decay",
    "lr_schedule": "--lr-schedule",
    "plateau_patience": "--patience",
    "plateau_best": "--plateau-best",
    "code_epoch_base": "--code-epoch-base",
    "max_lr_drops": "--max-lr-drops",
    "bias_lr_mult": "--bias-lr-mult",
    "bias_weight_decay": "--bias-weight-decay",
    "pca_aug": "--pca-aug",
    "pca_scale": "--pca-scale",
    "aug_chunk": "--aug-chunk",
    "crop_offsets": "--crop-offsets",
    "mean_crop": "--mean-crop",
    "recipe": "--recipe",
    # RunOptions (train.py) and the running options
    "device": "--device",
    "parallel": "--parallel",
    "devices": "--devices",
    "seed": "--seed",
    "max_steps": "--max-steps",
    "save_every": "--save-every",
    "log_every": "--log-every",
    "compile": "--compile",
    "compile_mode": "--compile-mode",
    "lrn_kernel": "--lrn-kernel",
    "workers": "--workers",
    "decode": "--decode",
    "stuck_steps": "--stuck-steps",
    "tensorboard": "--tensorboard",
    "pca_file": "--pca",
    "resume": "--resume",
    # PrepOptions (prep.py) and the data layout (layouts.py)
    "format": "--format",
    "jpeg_quality": "--jpeg-quality",
    "shard_size": "--shard-size",
    "block_size": "--block-size",
    "limit_per_class": "--limit-per-class",
    "splits": "--splits",
    "val_labels": "--val-labels",
    "devkit_meta": "--devkit-meta",
    "val_synsets": "--val-synsets",
    # evaluation, prediction, ablations, reports, the demo
    "crops": "--crops",
    "split": "--split",
    "k": "--k",
    # pca and kernels
    "sample": "--sample",
    "scale": "--scale",
    # neighbors and codes (neighbors.py, codes.py)
    "queries": "--query",
    "codes": "--codes",
    "bits": "--bits",
    "rerank": "--rerank",
    "rerank_depth": "--rerank",
    "memory_mb": "--memory-mb",
    "features": "--features",
    "overwrite": "--overwrite",
    "data_dir": "--data",
    "variants": "--variants",
    "eval_batch_size": "--eval-batch-size",
    "out": "--out",
    "per_class": "--per-class",
    "predictions": "--predictions",
    "out_dir": "--out",
    "classes": "--classes",
}

# The spelling of an on/off flag that turns its setting off (FLAGS names the one that turns it on).
OFF_FLAGS: dict[str, str] = {
    "lrn": "--no-lrn",
    "lrn_alpha_over_n": "--lrn-alpha-as-written",
    "within_map_norm": "--no-within-map-norm",
    "bias_weight_decay": "--no-bias-weight-decay",
    "pca_aug": "--no-pca-aug",
}

# What a `name` in a library message becomes on the command line: a setting's flag, and `name=False`
# (the setting turned off) the flag that turns it off.
NAMES: dict[str, str] = {**FLAGS, **{f"{name}=False": flag for name, flag in OFF_FLAGS.items()}}


def flag_message(exc: Exception) -> str:
    """`exc`'s message, the setting it is about, and those it mentions, named by their flags."""
    if not hasattr(exc, "naming"):
        return str(exc)
    return exc.naming(FLAGS.get(exc.field), NAMES)
