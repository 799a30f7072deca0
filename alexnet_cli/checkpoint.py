"""Checkpoints: what `alexnet train` writes and every other command reads (docs/public-surface.md).

A checkpoint is a plain dict saved with `torch.save` and read back with
`torch.load(..., weights_only=True)`: tensors, numbers, strings, lists and dicts only, so
loading one never runs code. Keys:

- "format": "alexnet-cli/checkpoint", "version": 1
- "model": the single-device state_dict (`conv1.weight` .. `fc8.bias`), whatever parallel
  mode trained it
- "classes": the wnids; "class_names": readable names (may equal the wnids)
- "mean_image": float32 tensor (256, 256, 3), the training mean that was subtracted
- "config": {"recipe": str, "model": ModelConfig fields, "train": TrainConfig fields, ...}
- training state, only in checkpoints written by `train`: "optimizer" (velocities by
  parameter name), "trainer" (epoch, step, next batch, schedule, partial epoch statistics)

A bare state_dict in the same layout also loads (`load_model`): the network is then
inferred from its shapes, with the paper's defaults for everything else.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alexnet_cli.atomic import replacing
from alexnet_cli.augment import MEAN_CROPS, test_crops
from alexnet_cli.config import LEGACY_MODEL_FIELDS, ModelConfig, model_config_from_dict, resolve_model_config
from alexnet_cli.errors import AlexnetError, CheckpointError, UsageError
from alexnet_cli.images import not_regular, user_image
from alexnet_cli.model import AlexNet
from alexnet_cli.progress import Reporter, plural
from alexnet_cli.shards import read_mean_image

FORMAT = "alexnet-cli/checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically (`atomic.replacing`: a temporary file in the same folder, renamed over `path`).

    A write that fails (a full disk, a lost mount) raises the OSError behind it, naming `path`:
    torch.save reports such a failure as its own RuntimeError ("unexpected pos ..."), with the
    OSError only in its context."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with replacing(path) as fd, os.fdopen(fd, "wb", closefd=False) as f:
            torch.save({"format": FORMAT, "version": VERSION, **payload}, f)
            f.flush()
    except BaseException as exc:
        cause = _os_error(exc)
        if cause is None or isinstance(exc, KeyboardInterrupt):
            raise
        raise OSError(cause.errno, cause.strerror or os.strerror(cause.errno or errno.EIO), str(path)) from exc


def _os_error(exc: BaseException | None) -> OSError | None:
    """The OSError in `exc`'s chain (itself, its cause or its context), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint or a bare state_dict with weights_only=True; never unpickles code."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    if not path.is_file():        # a FIFO would block torch.load forever
        try:
            why = not_regular(path.stat().st_mode)
        except OSError:
            why = "no such checkpoint file"
        raise CheckpointError(f"{path}: {why}")
    return _checked(path, _unpickled(path, map_location))


def _unpickled(path: Path, map_location: str | torch.device) -> Any:
    """torch.load with weights_only=True, each way it fails as one CheckpointError."""
    try:
        with warnings.catch_warnings():        # torch warns about a plain pickle's protocol before refusing it
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch >= 2.6: "Trying to load unsupported GLOBAL posix.system whose module ..."; older:
        # "Unsupported global: GLOBAL posix.system was not an allowed global"
        found = re.search(r"unsupported (?:global: )?GLOBAL ([\w.]+)", str(exc), re.IGNORECASE)
        if not found:
            raise CheckpointError(f"{path}: not a readable checkpoint (corrupt, or not a torch.save file: a plain "
                                  f"pickle?){_restore(path)}") from None
        raise CheckpointError(f"{path}: refused: it holds Python objects ({found.group(1)}) that only "
                              "unpickling code could load; alexnet loads weights only (weights_only=True)") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        # garbage reaches torch's legacy (non-zip) reader, which fails in any of these ways
        reason = _first_sentence(str(exc)) or type(exc).__name__
        if isinstance(exc, (KeyError, IndexError, TypeError, AttributeError)):
            reason = "not a torch.save file"                 # the legacy reader's KeyError: 101 says nothing
        elif isinstance(exc, EOFError):                     # the legacy reader ran out of bytes
            reason = "an empty file" if path.stat().st_size == 0 else "it ends too soon: truncated?"
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason}){_restore(path)}") from None
    return data


def _restore(path: Path) -> str:
    """What to do about a damaged run's last.pt, for the end of its error line ("" for another
    file): only a copy continues the run, best.pt holding the weights but no training state."""
    if path.name != "last.pt" or path.parent.name != "checkpoints":
        return ""
    return (": restore it from a copy to continue the run, or train anew into another run folder (best.pt holds "
            "the weights, not the state to continue from)")


def _checked(path: Path, data: Any) -> dict[str, Any]:
    """A loaded checkpoint as alexnet reads it (a bare state_dict becomes {"model": ...}), or
    a CheckpointError saying what it is instead."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a checkpoint (a {type(data).__name__}, expected a dict)")
    if "format" in data and data["format"] != FORMAT:
        raise CheckpointError(f"{path}: not an alexnet checkpoint (format {data['format']!r}, expected {FORMAT!r})")
    if data.get("format") == FORMAT and not (isinstance(data.get("version"), int) and data["version"] <= VERSION):
        raise CheckpointError(f"{path}: checkpoint format version {data.get('version')!r}; this alexnet reads "
                              f"version {VERSION} and older: upgrade alexnet_cli")
    if "model" not in data and "conv1.weight" in data:
        data = {"model": data}
    if not isinstance(data.get("model"), dict) or "conv1.weight" not in data["model"]:
        raise CheckpointError(f"{path}: no AlexNet weights in it (expected keys conv1.weight .. fc8.bias)")
    data["model"] = _checked_weights(path, data["model"])
    mean = data.get("mean_image")
    if mean is not None and not (isinstance(mean, torch.Tensor) and mean.is_floating_point()
                                 and all_finite(mean)):
        raise CheckpointError(f"{path}: its mean_image is not an image of finite numbers")
    config = data.get("config")
    if config is not None and not (isinstance(config, dict) and
                                   all(isinstance(config.get(part, {}), dict) for part in ("model", "train", "run"))):
        raise CheckpointError(f"{path}: its config is not a mapping of settings (a {type(config).__name__}"
                              f"{'' if not isinstance(config, dict) else ' with a part that is not'}); "
                              "it was not written by alexnet train")
    return data


def _first_sentence(message: str, limit: int = 200) -> str:
    """The first line, first sentence of an exception's message, on one line and at most `limit`
    characters, cut between words ("...") if it must be: torch's zip reader goes on for four
    sentences after "failed finding central directory"."""
    line = next((ln.strip() for ln in message.splitlines() if ln.strip()), "")
    sentence = re.split(r"(?<=[.!?])\s+(?=[A-Z])", line, maxsplit=1)[0].strip()
    sentence = " ".join(sentence.split()).removesuffix(".")
    if len(sentence) <= limit:
        return sentence
    return sentence[:limit - 3].rsplit(" ", 1)[0].rstrip(" ,;:") + "..."


def all_finite(t: torch.Tensor) -> bool:
    """Whether every value of the floating-point tensor `t` is finite. A sum first: one NaN or
    infinity anywhere makes it NaN or infinite, and it allocates nothing, where isfinite(t)
    makes a bool tensor of t's size (on the CPU 10-25x slower for fc6's 38 M weights). Only a
    non-finite sum, which large finite values can also give, is settled value by value."""
    if t.element_size() == 1:        # float8: no sum or isfinite kernels; small enough to widen
        return bool(torch.isfinite(t.float()).all())
    total = t.sum(dtype=torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else None)
    return bool(torch.isfinite(total)) or bool(torch.isfinite(t).all())


def _checked_weights(path: Path, state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Every weight a finite floating-point tensor, as float32 (the network's dtype: float16,
    bfloat16 and float64 weights are converted). NaN or infinite weights are refused here, so
    no command reports numbers, or JSON with NaN, for a network that diverged."""
    out = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            kind = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(f"{path}: weight {name} is {kind}, not floating-point numbers")
        if not all_finite(value):
            raise CheckpointError(f"{path}: weight {name} holds NaN or infinite values (the training diverged?); "
                                  "this network cannot be used")
        out[name] = value.float()
    return out


def infer_model_config(state_dict: dict[str, torch.Tensor]) -> ModelConfig:
    """The paper's network sized to a bare state_dict: classes from fc8, columns from conv1.
    Its dropout is taken as inverted: the convention of torchvision's and Caffe's weights, and of
    this tool's before `dropout_style` existed (a bare state_dict does not say how it was trained)."""
    num_classes = state_dict["fc8.weight"].shape[0]
    columns = 2 if state_dict["conv1.weight"].shape[0] == 96 else 1
    return resolve_model_config("paper", num_classes=num_classes, columns=columns,
                                **LEGACY_MODEL_FIELDS)


@dataclass
class LoadedModel:
    model: AlexNet
    classes: list[str]
    class_names: list[str]
    mean_image: torch.Tensor | None   # (256, 256, 3) float32, None for a bare state_dict
    config: dict[str, Any]             # the checkpoint's "config" (empty for a bare state_dict)
    path: Path
    lists_classes: bool = True         # False: the file has no class list ("0", "1", ... stand in for it)

    @property
    def mean_crop(self) -> str:
        """How the run subtracted the mean image (TrainConfig.mean_crop; "crop" if unrecorded)."""
        value = (self.config.get("train") or {}).get("mean_crop", "crop")
        if value not in MEAN_CROPS:        # the file's fault: not a usage error naming --mean-crop
            raise CheckpointError(f"{self.path}: its config has mean_crop {value!r}; this alexnet knows "
                                  f"{', '.join(MEAN_CROPS)}")
        return value

    def tell_assumptions(self, progress: Reporter) -> None:
        """For a network inferred from its weights' shapes (a bare state_dict: infer_model_config),
        a note on `progress` of what was taken for granted. Commands call it once their checks of
        the network have passed, so that an error about it stays the only line."""
        if "model" in self.config:
            return
        net = self.model.config
        progress.log(f"Note: {self.path} holds no network settings (a bare state_dict?): taken as the paper's "
                     f"network with {plural(net.num_classes, 'class', 'classes')} and "
                     f"{plural(net.columns, 'column')}, read from its shapes, trained with inverted dropout "
                     "(docs/formats.md, Loading)")

    def mean_or_data(self, data_dir: str | Path | None) -> torch.Tensor | None:
        """The mean image to subtract, float32 (256, 256, 3): the checkpoint's, or for a bare
        state_dict the prepared data's (None without `data_dir`)."""
        mean = self.mean_image
        if mean is None and data_dir is not None:
            mean = torch.from_numpy(np.asarray(read_mean_image(data_dir), dtype=np.float32))
        if mean is not None and tuple(mean.shape) != (256, 256, 3):
            raise CheckpointError(f"{self.path}: mean_image has shape {tuple(mean.shape)}, expected (256, 256, 3)")
        return mean

    def needed_mean(self, data_dir: str | Path | None) -> torch.Tensor:
        """mean_or_data's mean image, or a UsageError when there is none: the caller lacks what
        this checkpoint needs, as a missing argument would."""
        mean = self.mean_or_data(data_dir)
        if mean is None:
            raise UsageError(f"data_dir is needed: {self.path} holds no mean image (a bare state_dict?); give "
                             "the prepared data folder it was trained on", field="data_dir", value=None)
        return mean

    def preprocess(self, image: str | Path | Any, data_dir: str | Path | None = None) -> torch.Tensor:
        """One image of your own as the network's input, float32 (1, 3, 224, 224) on its device:
        what `predict` feeds it with one crop. `image`: a path, a PIL image or a uint8 (H, W, 3)
        array, read as predict reads it (images.user_image: EXIF orientation, RGB, 256x256), then
        the centre crop minus the mean image the way this network was trained (`mean_crop`).
        `data_dir`: the prepared data whose mean image a bare state_dict needs."""
        mean = self.needed_mean(data_dir)
        device = next(self.model.parameters()).device
        pixels = torch.from_numpy(user_image(image))[None].to(device)                 # (1, 256, 256, 3) uint8
        return next(test_crops(pixels, mean.to(device, torch.float32), 1, mean_crop=self.mean_crop))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the network a checkpoint was trained with, from the file alone, in eval mode."""
    data = load_checkpoint(path)
    state = data["model"]
    config = data.get("config") or {}
    try:
        model_config = (model_config_from_dict(config["model"]) if "model" in config
                        else infer_model_config(state))
        with torch.device("meta"):                 # no random init of 60 M weights to overwrite
            model = AlexNet(config=model_config)
        misfit = _misfit(model, state)
        if misfit:
            raise RuntimeError(misfit)          # named here: torch's message starts with a header line
        model.load_state_dict(state, assign=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit the network they describe ({str(exc).splitlines()[0]})") from None
    except AlexnetError as exc:   # a config value this version does not accept: the file's fault, not usage
        raise CheckpointError(f"{path}: its network settings are not valid here ({exc})") from None
    n = model_config.num_classes
    classes = list(data.get("classes") or [str(i) for i in range(n)])
    if len(classes) != n:
        raise CheckpointError(f"{path}: lists {plural(len(classes), 'class', 'classes')} but its last layer has {n} outputs")
    names = list(data.get("class_names") or classes)
    _check_class_list(path, "classes", classes, unique=True)
    _check_class_list(path, "class_names", names, unique=False, count=n)
    mean = data.get("mean_image")
    return LoadedModel(model.to(device).eval(), classes, names, None if mean is None else mean.float(), config,
                       Path(path), lists_classes=bool(data.get("classes")))


def _misfit(model: AlexNet, state: dict[str, torch.Tensor]) -> str:
    """What keeps `state` from loading into `model`, named ("fc8.bias missing; conv1.weight is
    (96, 3, 11, 11), the network's (48, 3, 11, 11)"), or "" when it fits."""
    wanted = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = [name for name in wanted if name not in state]
    extra = [name for name in state if name not in wanted]
    shapes = [f"{name} is {tuple(state[name].shape)}, the network's {shape}" for name, shape in wanted.items()
              if name in state and tuple(state[name].shape) != shape]
    problems = ([f"{', '.join(missing)} missing"] if missing else []) + \
        ([f"unexpected {', '.join(extra)}"] if extra else []) + shapes
    return "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")


def _check_class_list(path: str | Path, key: str, values: list, *, unique: bool, count: int | None = None) -> None:
    """`classes` are distinct wnid strings; `class_names` strings, one per class."""
    odd = [v for v in values if not isinstance(v, str)]
    if odd:
        raise CheckpointError(f"{path}: its {key} are not all strings (e.g. {odd[0]!r})")
    if count is not None and len(values) != count:
        raise CheckpointError(f"{path}: lists {len(values)} {key} for {plural(count, 'class', 'classes')}")
    if unique and len(set(values)) != len(values):
        twice = next(v for v in values if values.count(v) > 1)
        raise CheckpointError(f"{path}: its {key} list {twice!r} more than once")
