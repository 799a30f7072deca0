"""Every number of the recipe in one place: the paper's defaults, each with its section,
and the authors' released code (cuda-convnet, layers-145.cfg / layer-params-145.cfg) as a
second preset.

Section numbers are those of the CACM reprint (the 2017 Communications of the ACM version; the NIPS
2012 version numbers every section one lower).

A recipe is a named preset of plain config fields (`RECIPES`); every field stays its own
option, so `resolve_model_config("code", lrn_alpha_over_n=False)` is the code's network
with the paper's LRN. The resolved configs are written into every run folder and every
checkpoint, and the network is rebuilt from them alone.

The settings of the other commands that their options show as defaults or choices (test crops,
neighbours, binary codes, the demo) are here too: this module imports no torch, so the `alexnet`
command starts without it (docs/performance.md, start-up).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Collection

from alexnet_cli.errors import AlexnetError, UsageError

RECIPE_NAMES = ("paper", "code")
MEAN_CROPS = ("crop", "center", "channel")   # TrainConfig.mean_crop: augment.py says what each subtracts
PCA_SCALES = ("paper", "code")

# How dropout scales (paper 5.2): "paper" zeroes outputs while training and multiplies them all by
# 1 - p at test time (the paper and the released code's `hs` layers); "inverted" multiplies the kept
# outputs by 1 / (1 - p) while training and does nothing at test time (torch, Caffe).
DROPOUT_STYLES = ("paper", "inverted")

# The value a ModelConfig field had in files written before the field existed: checkpoints and
# run folders without `dropout_style` in their config (written before the paper's dropout landed) were
# trained with torch's inverted dropout.
LEGACY_MODEL_FIELDS: dict[str, Any] = {"dropout_style": "inverted"}
# The same for TrainConfig: runs without `crop_offsets` (written before the paper's 32 landed)
# drew their crops at offsets 0..32.
LEGACY_TRAIN_FIELDS: dict[str, Any] = {"crop_offsets": 33}

# Crop positions per axis of a training patch (paper 5.1): 32, offsets 0..31, gives the paper's
# "factor of 2048" (32 x 32 x 2 mirrors); 33, offsets 0..32, is what the released code draws
# (randint(0, 2 * border + 1)) and reaches the test-time corner crops at 32 (256 - 224).
CROP_OFFSETS = (32, 33)

# What a plateau epoch must beat to count as an improvement (paper 6: "stopped improving with the
# current learning rate", schedule.py): "run", the best validation error of the whole run so far;
# "since-drop", the best since the last drop (the epochs at the current rate).
PLATEAU_BESTS = ("run", "since-drop")


@dataclass(frozen=True)
class ModelConfig:
    """The network (paper section 4). Defaults are the paper's text."""

    num_classes: int = 1000           # ILSVRC's 1000 classes; user data sets often have fewer
    columns: int = 2                  # 4.2: two GPU columns = groups=2; 1 = one column, half the kernels
    activation: str = "relu"          # 4.1: ReLU; "tanh" for the figure-1 comparison
    lrn: bool = True                  # 4.3: response normalisation after conv1 and conv2
    lrn_size: int = 5                 # 4.3: n = 5 adjacent kernel maps
    lrn_k: float = 2.0                # 4.3: k = 2
    lrn_alpha: float = 1e-4           # 4.3: alpha = 1e-4
    lrn_beta: float = 0.75            # 4.3: beta = 0.75
    lrn_alpha_over_n: bool = False    # paper: alpha used as written; code (and torch/Caffe): alpha / n
    pool_kernel: int = 3              # 4.4: overlapping pooling, z = 3
    pool_stride: int = 2              # 4.4: s = 2 ("--pool 2" gives the non-overlapping 2/2)
    dropout: float = 0.5              # 5.2: dropout 0.5 on fc6 and fc7
    dropout_style: str = "paper"      # 5.2 and code: mask only while training, x (1-p) at test; "inverted": torch/Caffe
    conv1_order: str = "paper"        # paper: conv, ReLU, LRN, pool; code: conv, LRN, pool, ReLU
    within_map_norm: bool = False     # code only: 5x5 within-map normalisation after conv2's LRN
    conv1_padding: str = "paper"      # paper: pad 2 all round; code: none, 3-pixel right/bottom overhang
    init_std: float = 0.01            # 6: weights N(0, 0.01)
    init_std_conv345: float = 0.01    # code: 0.03 in conv3-conv5
    bias_fill: float = 1.0            # 6: biases 1 in conv2, conv4, conv5, fc6, fc7 (Caffe uses 0.1)

    def __post_init__(self) -> None:
        check_field_types(self)
        check_choice("activation", self.activation, ("relu", "tanh"))
        check_choice("conv1_order", self.conv1_order, ("paper", "code"))
        check_choice("conv1_padding", self.conv1_padding, ("paper", "code"))
        check_choice("columns", self.columns, (1, 2))
        check_choice("dropout_style", self.dropout_style, DROPOUT_STYLES)
        if self.num_classes < 2:
            raise _bad(self, "num_classes", "must be at least 2")
        if not 0.0 <= self.dropout < 1.0:
            raise _bad(self, "dropout", "must be in [0, 1)")
        if (self.pool_kernel, self.pool_stride) not in ((3, 2), (2, 2)):
            raise UsageError(f"pool_kernel: pooling must be 3/2 (overlapping, the paper's) or 2/2 (the ablation), "
                             f"got {self.pool_kernel}/{self.pool_stride}", field="pool_kernel", value=self.pool_kernel)
        if not 1 <= self.lrn_size <= 256:                    # n adjacent maps of at most 256 (conv2)
            raise _bad(self, "lrn_size", "must be between 1 and 256")
        for name in ("init_std", "init_std_conv345", "lrn_alpha", "lrn_beta"):
            if not getattr(self, name) >= 0:                  # NaN fails too
                raise _bad(self, name, "must be at least 0")
        if not self.lrn_k > 0:                                 # k + alpha*sum is raised to -beta
            raise _bad(self, "lrn_k", "must be positive")


@dataclass(frozen=True)
class TrainConfig:
    """The learning recipe (paper sections 5 and 6). Defaults are the paper's text."""

    epochs: int = 90                  # 6: "roughly 90 cycles"
    batch_size: int = 128             # 6: batch 128
    lr: float = 0.01                  # 6: 0.01 for all layers
    momentum: float = 0.9             # 6: momentum 0.9
    weight_decay: float = 5e-4        # 6: weight decay 0.0005
    lr_schedule: str = "plateau"      # 6: divide by 10 when validation error stops improving; "code": fixed drops
    plateau_patience: int = 2         # epochs without a better validation top-1 before a drop (paper: unstated)
    plateau_best: str = "run"         # improving: on the run's best; "since-drop": on the best at the current rate
    code_epoch_base: int = 0          # code schedules: the notes' "epoch 25" is 0-based (26th epoch) or 1-based (25th)
    max_lr_drops: int = 3             # 6: "reduced three times prior to termination"
    bias_lr_mult: float = 1.0         # code: biases learn at 2x the weights' initial rate
    bias_weight_decay: bool = True    # code: no weight decay on biases
    pca_aug: bool = True              # 5.1: PCA colour augmentation
    pca_std: float = 0.1              # 5.1: alpha ~ N(0, 0.1)
    pca_scale: str = "paper"          # paper: lambda of [0,1] pixels; code: sqrt(lambda_255) * 0.1, then / 1.1
    aug_chunk: int = 1                # 5.1: per image; code: one crop offset and flip per 32 images
    crop_offsets: int = 32            # 5.1: offsets 0..31 on each axis ("a factor of 2048"); code: 0..32
    mean_crop: str = "crop"           # 3: crop of (image - mean); code: "center" (mean's centre); "channel": mean_rgb

    def __post_init__(self) -> None:
        check_field_types(self)
        check_choice("lr_schedule", self.lr_schedule, ("plateau", "code", "code2010"))
        check_choice("plateau_best", self.plateau_best, PLATEAU_BESTS)
        check_choice("pca_scale", self.pca_scale, PCA_SCALES)
        check_choice("mean_crop", self.mean_crop, MEAN_CROPS)
        check_choice("code_epoch_base", self.code_epoch_base, (0, 1))
        check_choice("crop_offsets", self.crop_offsets, CROP_OFFSETS)
        for name in ("epochs", "batch_size", "aug_chunk", "plateau_patience"):
            if getattr(self, name) < 1:
                raise _bad(self, name, "must be at least 1")
        if not self.lr > 0:
            raise _bad(self, "lr", "must be positive")
        if not 0.0 <= self.momentum < 1.0:
            raise _bad(self, "momentum", "must be in [0, 1)")
        for name in ("weight_decay", "bias_lr_mult", "pca_std", "max_lr_drops"):
            if not getattr(self, name) >= 0:
                raise _bad(self, name, "must not be negative")


# The released code's choices (docs/paper-vs-code.md); every other
# field keeps the paper's default.
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"model": {}, "train": {}},
    "code": {
        "model": {
            "lrn_alpha_over_n": True,
            "conv1_order": "code",
            "within_map_norm": True,
            "conv1_padding": "code",
            "init_std_conv345": 0.03,
        },
        "train": {
            "lr_schedule": "code",                 # 91 epochs: SCHEDULE_EPOCHS
            "bias_lr_mult": 2.0,
            "bias_weight_decay": False,
            "pca_scale": "code",
            "aug_chunk": 32,
            "crop_offsets": 33,
            "mean_crop": "center",
        },
    },
}


def _bad(config, name: str, rule: str) -> UsageError:
    """`name must ..., got value`: the error about one field of `config`."""
    value = getattr(config, name)
    return UsageError(f"{name} {rule}, got {value}", field=name, value=value)


def check_field_types(config) -> None:
    """Every field of the type it is declared with, and every number finite: a value read from a
    file (a checkpoint's config) can be anything, and one `inf` learning rate makes every weight
    NaN in one step."""
    for f in fields(config):
        value, name = getattr(config, f.name), f.name
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = {"bool": isinstance(value, bool), "str": isinstance(value, str),
              "int": number and isinstance(value, int),
              "float": number and math.isfinite(value)}.get(str(f.type), True)
        if not ok:
            what = {"bool": "true or false", "str": "a string", "int": "a whole number",
                    "float": "a finite number"}[str(f.type)]
            raise UsageError(f"{name} must be {what}, got {value!r}", field=name, value=value)


def check_choice(name: str, value: Any, choices: tuple) -> None:
    """`value` of the setting `name` (a field or argument) must be one of `choices`."""
    if value not in choices:
        raise UsageError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}",
                         field=name, value=value)


SEED_MAX = 2**63 - 1   # torch's and NumPy's generators take any seed in [0, 2**63)


def check_seed(seed: int) -> None:
    """A seed every generator accepts (NumPy's refuses negative ones, torch's ones beyond 64
    bits): the one range of every command's --seed, checked before anything is written."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise UsageError(f"seed must be a whole number from 0 to {SEED_MAX}, got {seed!r}", field="seed", value=seed)


def _resolve(cls, recipe: str, part: str, overrides: dict[str, Any]):
    check_choice("recipe", recipe, RECIPE_NAMES)
    known = [f.name for f in fields(cls)]
    unknown = set(overrides) - set(known)
    if unknown:
        names = ", ".join(_with_suggestion(name, known) for name in sorted(unknown))
        raise UsageError(f"unknown {part} option(s): {names}")
    values = {**RECIPES[recipe][part], **{k: v for k, v in overrides.items() if v is not None}}
    return cls(**values)


def _with_suggestion(name: str, known: list[str]) -> str:
    """`name`, and the known options it may be a slip for, closest first, ties in field order
    (`pool`: pool_kernel or pool_stride). Cutoff 0.5, not difflib's 0.6: `pool` scores 0.53."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    if not close:
        return name
    close.sort(key=lambda k: (-difflib.SequenceMatcher(None, k, name).ratio(), known.index(k)))
    names = close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}"
    return f"{name} (did you mean {names}?)"


def resolve_model_config(recipe: str = "paper", **overrides: Any) -> ModelConfig:
    """The recipe's network, with `overrides` (None means: keep the recipe's value)."""
    return _resolve(ModelConfig, recipe, "model", overrides)


def changed_settings(config: ModelConfig, recipe: str) -> dict[str, Any]:
    """The fields of `config` that differ from `recipe`'s network (the ablations asked for)."""
    return settings_changed(recipe, to_dict(config))


def settings_changed(recipe: str, model: dict[str, Any], train: dict[str, Any] | None = None, *,
                     leave: Collection[str] = ()) -> dict[str, Any]:
    """The model (and training) settings that differ from `recipe`'s, in field order, as plain
    data (a run's config.json, a checkpoint's): a field they predate counts at the value it had
    then (recorded_settings). `leave`: fields not counted (those a caller says otherwise)."""
    changed = {}
    for values, base in ((model, resolve_model_config(recipe)), (train, resolve_train_config(recipe))):
        if values is not None:
            saved = recorded_settings(values, base)
            changed.update((k, saved[k]) for k, v in to_dict(base).items() if k not in leave and saved[k] != v)
    return changed


# The fields a recipe sets (those whose value tells which recipe a config was resolved from).
RECIPE_FIELDS = {part: sorted({f for r in RECIPES.values() for f in r[part]}) for part in ("model", "train")}


def recipe_of(model_cfg: ModelConfig, train_cfg: TrainConfig, recipe: str | None = None) -> str:
    """The recipe `model_cfg` and `train_cfg` were resolved from (what a run records, and what
    `report` lists its changed settings against): `recipe` when given; else the recipe whose
    values the fewest recipe-dependent fields (those some recipe sets in RECIPES) lack, when it
    is clearly the nearest (fewer than half as many as any other): the paper's with
    `lr_schedule` changed is the paper's, that change listed as one. Configs about as far from
    two recipes (the code's network with the paper's training: 5 fields against 7) are a
    UsageError: the caller names the recipe."""
    if recipe is not None:
        check_choice("recipe", recipe, RECIPE_NAMES)
        return recipe
    differing = {}                          # recipe -> the recipe-dependent fields without its values
    for name in RECIPE_NAMES:
        model_base, train_base = resolve_model_config(name), resolve_train_config(name)
        differing[name] = ([f for f in RECIPE_FIELDS["model"] if getattr(model_cfg, f) != getattr(model_base, f)]
                           + [f for f in RECIPE_FIELDS["train"] if getattr(train_cfg, f) != getattr(train_base, f)])
    nearest, *others = sorted(RECIPE_NAMES, key=lambda name: len(differing[name]))
    if all(2 * len(differing[nearest]) < len(differing[other]) for other in others):
        return nearest
    why = "; ".join(f"not {name}'s: {', '.join(fields_)}" for name, fields_ in differing.items())
    raise UsageError(f"recipe cannot be told from the configs ({why}): give it, one of {', '.join(RECIPE_NAMES)}",
                     field="recipe", value=None)


# The length of each fixed schedule of the released code (layer-params-145.cfg's notes: the
# 2012 run stopped after 91 epochs, the 2010 run after 93). Choosing one of them without
# --epochs trains for its length; with --epochs its boundaries are scaled (schedule.py).
SCHEDULE_EPOCHS = {"code": 91, "code2010": 93}


def resolve_train_config(recipe: str = "paper", **overrides: Any) -> TrainConfig:
    """The recipe's training settings, with `overrides` (None means: keep the recipe's value).
    A fixed code schedule brings its own length unless `epochs` is given."""
    cfg = _resolve(TrainConfig, recipe, "train", overrides)
    if overrides.get("epochs") is None and cfg.lr_schedule in SCHEDULE_EPOCHS:
        cfg = dataclasses.replace(cfg, epochs=SCHEDULE_EPOCHS[cfg.lr_schedule])
    return cfg


def to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Rebuild a ModelConfig from a checkpoint's plain data (unknown keys are an error). A field
    the file predates takes the value it had then (LEGACY_MODEL_FIELDS), else its default."""
    unknown = unknown_settings(data, ModelConfig)
    if unknown:
        raise AlexnetError(f"checkpoint's model config has settings this version does not know "
                           f"({', '.join(unknown)}): it was probably written by a newer alexnet-cli; "
                           "upgrade alexnet-cli")
    return ModelConfig(**recorded_settings(data, ModelConfig()))


def unknown_settings(recorded: dict[str, Any], kind: type) -> list[str]:
    """The names in a file's "model" or "train" settings that `kind` (ModelConfig, TrainConfig)
    has no field for: settings of a newer version, which this one would drop."""
    return sorted(set(recorded) - {f.name for f in fields(kind)})


def recorded_settings(recorded: dict[str, Any], base: ModelConfig | TrainConfig) -> dict[str, Any]:
    """A file's "model" or "train" settings (`base`'s kind) as it recorded them, with every field:
    one the file predates at the value it had then (LEGACY_MODEL_FIELDS, LEGACY_TRAIN_FIELDS),
    else `base`'s (the defaults, or the recipe's: for the fields with no legacy value the two
    agree). What resuming, `report` and `ablate` compare."""
    legacy = LEGACY_MODEL_FIELDS if isinstance(base, ModelConfig) else LEGACY_TRAIN_FIELDS
    return {**to_dict(base), **legacy, **recorded}


# ---------------------------------------------------------------- the other commands' settings
# Their modules import them from here (`alexnet_cli.codes.BITS` is CODE_BITS).

TOP_K = 5  # paper section 3: top-5 error


def top5_is_trivial(num_classes: int) -> bool:
    """Whether every label is among the top 5 (at most TOP_K classes): the top-5 error is then 0
    whatever the network, and a line that shows it says so (`top5_note`)."""
    return num_classes <= TOP_K


def top5_note(num_classes: int) -> str:
    """What a line for people says instead of a trivial top-5 figure."""
    return f"only {num_classes} classes: every label is among the top 5, so the top-5 error is 0 whatever the network"


CROPS = (1, 10)  # paper 5.1: the centre crop, or the four corners + centre and their mirrors


def check_crops(crops: int) -> int:
    if crops not in CROPS:
        raise UsageError(f"crops must be 1 (centre crop) or 10 (the paper's ten crops), got {crops}", field="crops",
                         value=crops)
    return crops


NEIGHBORS_K = 6          # figure 4 (right): each query with six training images

CODE_BITS = (64, 128, 256)    # the code lengths made and searched (issue 19), in the CLI and the library alike
CODE_RERANK = 500             # re-ranking depth: 500 of 1.28 M rows re-read exactly stays cheap (docs/codes.md)
CODE_EPOCHS = 10              # the auto-encoder's epochs; its measurements in docs/codes.md used 10

DEMO_OUT = Path("alexnet-demo")


@dataclass(frozen=True)
class DemoConfig:
    """The demo's size and recipe; alexnet_cli/demo.py's module doc says why each differs from the paper."""

    classes: int = 4                  # synth families: red discs, green stripes, blue triangles, yellow checks
    train_per_class: int = 60
    val_per_class: int = 15
    epochs: int = 6
    batch_size: int = 16              # paper: 128
    lr: float | None = None           # None: twice the paper's 0.01 per 128 images, scaled: 2 x 0.01 x batch/128
    bias_fill: float = 0.1            # paper: 1; Caffe: 0.1
    dropout: float = 0.5              # paper: 0.5
    seed: int = 0
    queries: int = 4                  # validation images to find neighbours for (one per class first)
    k: int = 6                        # neighbours per query (figure 4 right shows six)
    device: str | None = None         # None: cuda when available, else cpu

    def check(self) -> None:
        if not 2 <= self.classes <= 64:
            raise UsageError(f"classes must be in 2..64, got {self.classes}", field="classes", value=self.classes)
        if self.train_per_class < 1 or self.val_per_class < 1:
            raise UsageError("the demo needs at least one training and one validation image per class")
        if self.classes * self.train_per_class < self.batch_size:
            raise AlexnetError(f"{self.classes * self.train_per_class} training images are fewer than one "
                               f"batch of {self.batch_size}")
        if self.epochs < 1 or self.batch_size < 1 or self.queries < 1 or self.k < 1:
            raise UsageError("epochs, batch size, queries and k must be positive")
        if self.lr is not None and self.lr <= 0:
            raise UsageError(f"lr must be positive, got {self.lr}", field="lr", value=self.lr)
        check_seed(self.seed)
        self.configs()          # every setting the trainer will check, checked before anything is written

    def configs(self) -> tuple[ModelConfig, TrainConfig]:
        """The network and the recipe the demo trains with."""
        return (resolve_model_config("paper", bias_fill=self.bias_fill, dropout=self.dropout),
                resolve_train_config("paper", epochs=self.epochs, batch_size=self.batch_size, lr=self.learning_rate))

    @property
    def learning_rate(self) -> float:
        paper = TrainConfig()                # the paper's rate per image: 0.01 at batch 128, x2 (demo.py's module doc)
        return self.lr if self.lr is not None else 2 * paper.lr * self.batch_size / paper.batch_size

    def key(self) -> dict[str, Any]:
        """What the results depend on (the device aside): the marker compares these."""
        data = dataclasses.asdict(self)
        data.pop("device")
        return data
