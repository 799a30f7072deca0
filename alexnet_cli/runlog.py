"""A run folder (`alexnet train --out RUN`) and what it records: the paths (`RunFolder`:
config.json, metrics.jsonl, checkpoints/last.pt and best.pt), the rule for which folders a run
may use (`check_run_dir`) and for starting or resuming in one (`RunFolder.resuming`);
config.json (the resolved settings, written before anything else) and metrics.jsonl (one JSON
object per log interval and per epoch), optionally mirrored to TensorBoard; `RunLock`, the name
the lock (locks.CommandLock, RUN/.lock) that keeps a second `train` out of a folder in use had
before it locked more; and a failed checkpoint write
said in the user's terms (`save_error`). And what a path given as a checkpoint or a data folder
is when it is not one (`not_a_checkpoint`, `not_a_data_folder`): a run's folder among others.

Only rank 0 writes. On --resume the metrics file is cut back to the length it had when the
checkpoint was written, so a killed and resumed run logs each step exactly once.

Every JSON text the package writes goes through `json_text`: strict JSON, so a NaN or an
infinity is an error here rather than a file or an output other programs cannot parse.
"""

from __future__ import annotations

import errno
import itertools
import json
import shutil
import stat
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

from alexnet_cli.atomic import room_advice, write_atomic
from alexnet_cli.errors import AlexnetError, DataError, UsageError, shell_word
from alexnet_cli.images import special_kind
from alexnet_cli.layouts import looks_like_source
from alexnet_cli.locks import CommandLock
from alexnet_cli.paths import RUN_SUBFOLDERS, check_output_folder
from alexnet_cli.shards import MANIFEST

def json_text(data: Any, *, indent: int | None = None) -> str:
    """`data` as strict JSON (RFC 8259 has no NaN or Infinity, which json.dumps would write)."""
    try:
        return json.dumps(data, indent=indent, allow_nan=False)
    except ValueError:
        raise AlexnetError("the result holds NaN or infinite numbers, which JSON cannot carry; nothing written "
                           "(a network that diverged?)") from None


def write_json_atomic(path: Path, data: Any) -> None:
    write_atomic(path, (json_text(data, indent=2) + "\n").encode("utf-8"))


class RunFolder:
    """The files of one run folder (docs/formats.md)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.checkpoints = self.path / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.best = self.checkpoints / "best.pt"

    def resuming(self, resume: bool, note: Callable[[str], None]) -> bool:
        """Whether this start continues last.pt. Without --resume a folder that holds one is
        refused; a run stopped before its first checkpoint starts again from step 0, and so does
        --resume where there is nothing to resume (each with a `note`). A config.json missing or
        damaged beside last.pt is noted: resuming reads the settings from last.pt and writes it
        again (check_run_dir)."""
        if resume and self.last.exists():
            problem = config_problem(self.config)
            if problem is not None:
                note(f"Note: {self.config} {problem}: the run's settings are read from {self.last} instead, and "
                     "config.json is written again once this start's match them")
            return True
        if self.last.exists():
            raise AlexnetError(f"{self.path} already holds a run; pass `resume` to continue it or choose "
                               "another `out`", mentions=("resume", "out"))
        if self.best.exists():      # last.pt went missing: starting again would overwrite best.pt and the log
            raise DataError(f"{self.last} is missing but {self.best} exists: the run saved checkpoints, so it "
                            "cannot start again here; restore last.pt (best.pt holds no training state to continue "
                            "from, only the weights for eval and predict), or choose another `out` (a run of an "
                            "older version killed while writing its first checkpoints: delete best.pt to start "
                            "again)",
                            mentions=("out",))
        if self.config.exists():    # killed before its first checkpoint
            note(f"Note: the run in {self.path} stopped before its first checkpoint: starting it "
                 "again from step 0")
        elif resume:   # a requeued job's first start, or a mistyped --out: say which it was
            note(f"Note: {self.last} does not exist, so there is nothing to resume: starting a new run")
        return False

    def damaged_config(self, problem: str) -> DataError:
        """The error for a config.json that `problem` (config_problem) says is not a run's, in a
        folder that holds the run's checkpoints: what to do about it."""
        if self.last.is_file():
            return DataError(f"{self.config} {problem}: the run's settings are damaged or lost; {self.last} holds "
                             "them: continue the run with `resume` (and its other settings), which checks them against "
                             "it and writes config.json again, or choose another `out`", mentions=("resume", "out"))
        return DataError(f"{self.config} {problem}: the run's settings are damaged or lost, and so is {self.last}: "
                         "restore them, or choose another `out`", mentions=("out",))

    def write_config(self, config: dict[str, Any]) -> None:
        """config.json: first thing a new run writes (the folder is then a run's); a resumed
        run writes its own invocation's settings over the old ones."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.config, config)

    def write_checkpoints(self, payload: dict[str, Any], *, best: bool) -> None:
        """last.pt, and best.pt when `best`: first, so that a kill between the two leaves the
        older last.pt behind, and resuming redoes both. At the run's first save there is no older
        last.pt, and a best.pt alone would leave a folder that can neither resume nor start
        again (`resuming`): last.pt comes first then, and a kill between the two leaves last.pt,
        from which resuming writes best.pt again (Trainer._replace_lost_best: same weights).
        best.pt is for eval and the other tools: no velocities (half the size of last.pt)."""
        from alexnet_cli.checkpoint import save_checkpoint    # imports torch: not for the CLI's argument checks
        first = not self.last.exists()
        if best and not first:
            self.write_best(payload)
        save_checkpoint(self.last, payload)
        if best and first:
            self.write_best(payload)

    def write_best(self, payload: dict[str, Any]) -> None:
        """best.pt: last.pt's `payload` without the velocities."""
        from alexnet_cli.checkpoint import save_checkpoint
        save_checkpoint(self.best, {k: v for k, v in payload.items() if k != "optimizer"})


def check_run_dir(out: Path, *, resume: bool = False) -> None:
    """`--out` must be new, empty (hidden files aside), or a run's folder: its config.json is a
    run's (a run writes it before anything else; other files may have been added since, e.g.
    eval's outputs). A folder of other files is refused, never overwritten. A folder with a
    run's checkpoints whose config.json is missing or damaged is a run's: continued with
    `resume` from last.pt (which holds the settings; resuming checks them and writes config.json
    again), else refused with what to do. A folder inside a data folder or another run's folder
    is refused (paths.check_output_folder), unless it already holds a run (made there by an
    older version, which did not refuse it: it is resumed, not stranded)."""
    folder = RunFolder(out)
    problem = config_problem(folder.config) if out.is_dir() else "is missing"
    holds_run = out.is_dir() and (folder.last.is_file() or folder.best.is_file() or problem is None)
    in_ablation = (out.parent / "ablations.json").is_file()   # ablate checked its folder (check_ablation_dir)
    if not (holds_run or in_ablation):
        check_output_folder(out, "out")
    if not out.is_dir():
        parent = out
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise UsageError(f"out {out}: {parent} is a file, not a folder", field="out", value=out)
        return
    if problem is None:
        return
    if folder.last.is_file() or folder.best.is_file():
        if resume and folder.last.is_file():
            return
        raise folder.damaged_config(problem)
    # hidden files (.DS_Store, .gitkeep, our .tmp files) and a fresh volume's lost+found are no one's;
    # an empty checkpoints/ or tensorboard/ (often a link to scratch space, made ahead) is the run's to fill
    others = sorted(p.name for p in out.iterdir() if p.name != "lost+found" and not p.name.startswith(".")
                    and not _empty_run_folder(p))
    if others or folder.config.exists():
        what = f"it holds {', '.join(others[:3])}{', ...' if len(others) > 3 else ''}" if others else \
            "its config.json is not a run's"
        raise AlexnetError(f"{out} is not a training run's folder ({what}): choose another `out`",
                           mentions=("out",))


def _empty_run_folder(path: Path) -> bool:
    """Whether `path` is an empty checkpoints/ or tensorboard/ folder (or a link to one)."""
    try:
        return path.name in RUN_SUBFOLDERS and path.is_dir() and not any(path.iterdir())
    except OSError:
        return False


CONFIG_SECTIONS = ("model", "train", "run")     # config.json's settings, each a JSON object


def config_problem(path: Path, *, optional: tuple[str, ...] = ()) -> str | None:
    """What is wrong with a run's config.json, said after its name (`is missing`, `is not JSON
    (...)`, `has no "run"`, ...), or None. Its shape only: `train` writes its own settings over
    it, and `report` checks the values it reads. `optional`: sections the reader can do without."""
    return read_config_json(path, optional=optional)[1]


MAX_CONFIG_BYTES = 1 << 20     # a run's config.json is about 2 KB


def read_config_json(path: Path, *, optional: tuple[str, ...] = ()) -> tuple[dict[str, Any] | None, str | None]:
    """A run's config.json and None, or None and what is wrong with it (`config_problem`). Only
    a regular file of at most MAX_CONFIG_BYTES is read (a link to /dev/zero, a FIFO or a huge
    file would take all memory or block)."""
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            return None, "is a folder, not a file"
        if not stat.S_ISREG(st.st_mode):
            return None, f"is not a regular file but {special_kind(st.st_mode)}"
        if st.st_size > MAX_CONFIG_BYTES:
            return None, f"is {st.st_size:,} bytes, not a run's settings (at most {MAX_CONFIG_BYTES:,})"
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "is missing"
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    except ValueError as exc:                   # a UnicodeDecodeError too
        return None, f"is not JSON ({exc})"
    if not isinstance(config, dict):
        return None, f"is not a JSON object but {_json_kind(config)}"
    if not isinstance(config.get("recipe"), str):
        return None, ('has no "recipe"' if "recipe" not in config
                      else f'has "recipe": {_shown(config["recipe"])}, not text')
    for name in CONFIG_SECTIONS:
        if name not in config and name not in optional:
            return None, f'has no "{name}" settings'
        if name in config and not isinstance(config[name], dict):
            return None, f'has "{name}": {_shown(config[name])}, not a JSON object of settings'
    return config, None


PREPPED = "a data folder made by `alexnet prep`"
SOURCE = "a folder of images to prepare (train/, val/)"
CHECKPOINT_SUFFIXES = (".pt", ".pth")


def what_is(path: Path) -> str:
    """What an existing `path` is, in words: a data folder, a training run's folder, a
    checkpoint (a .pt file, or any torch.save zip), another folder or another file."""
    if path.is_dir():
        if (path / MANIFEST).is_file():
            return PREPPED
        if RunFolder(path).config.is_file():
            return "a training run's folder"
        return SOURCE if looks_like_source(path) else "a folder"
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return f"a path that cannot be read ({exc.strerror or exc})"
    if not stat.S_ISREG(mode):            # never opened: reading a FIFO blocks until someone writes
        return special_kind(mode)
    try:
        checkpoint = path.suffix.lower() in CHECKPOINT_SUFFIXES or zipfile.is_zipfile(path)
    except OSError:
        checkpoint = False
    return "a checkpoint" if checkpoint else "a file"


def not_a_checkpoint(path: Path) -> str | None:
    """Why an existing `path` given as a checkpoint is not one (a folder), with the file to
    give instead in a run's folder, or a FIFO, a device; None for a file (load_checkpoint reads it).
    In a run's folder that is last.pt, the final network (the one to compare with the paper:
    best.pt was chosen on the validation error it would be measured on), best.pt the alternative."""
    if not path.is_dir():
        what = what_is(path)
        return None if what in ("a checkpoint", "a file") else f"{path} is {what}, not a checkpoint"
    message = f"{path} is {what_is(path)}, not a checkpoint"
    run = RunFolder(path)                    # the run's folder, or its checkpoints/ folder
    folder = next((f for f in (run.checkpoints, path)
                   if (f / run.last.name).is_file() or (f / run.best.name).is_file()), None)
    if folder is None:
        return message
    last, best = folder / run.last.name, folder / run.best.name
    if not last.is_file():
        return f"{message}: give {shell_word(best)}"
    if not best.is_file():
        return f"{message}: give {shell_word(last)} (the final network)"
    return (f"{message}: give {shell_word(last)} (the final network, to compare with the paper) or "
            f"{shell_word(best)} (the lowest validation error, chosen on the validation images)")


def not_a_data_folder(path: Path) -> str | None:
    """Why an existing `path` given as a prepared data folder is not one (a file, a run's folder),
    or None (a folder read_manifest reads, or says what is missing in)."""
    what = what_is(path)
    if what in ("a folder", PREPPED):
        return None
    if what == SOURCE:
        return f"{path} is {what}, not {PREPPED}: prepare it with `alexnet prep {shell_word(path)} OUT`, then give OUT"
    return f"{path} is {what}, not {PREPPED}"


FULL_DISK_BYTES = 64 << 20   # less free than this after a failed save: the disk is called full


def save_error(exc: Exception, folder: Path, step: int, saved_step: int | None) -> Exception:
    """A failed checkpoint write in the user's terms: which file, why (a full disk said so),
    and that nothing is lost but the steps since the last checkpoint. An error without an
    OSError behind it (torch.save's own RuntimeError) is called a full disk when the disk is."""
    if isinstance(exc, OSError):
        full, reason, name = exc.errno in (errno.ENOSPC, errno.EDQUOT), exc.strerror or str(exc), exc.filename
        if exc.errno == errno.EFBIG:     # a file-size limit (`ulimit -f`, FAT32): said with how to lift it
            reason, remedy = room_advice(Path(name or folder), errno.EFBIG)
            reason = f"{reason}: {remedy}"
    elif isinstance(exc, RuntimeError):
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            return exc
        if free >= FULL_DISK_BYTES:
            return exc
        full, reason, name = True, f"{free / 2**20:.1f} MiB free", folder
    else:
        return exc
    if full:
        reason, then = f"the disk is full ({reason})", "free some space, then continue with `resume`"
    else:
        then = "continue with `resume` once it can be written"
    kept = (f"the checkpoint of step {saved_step} is kept" if saved_step is not None
            else "no checkpoint was written yet")
    return AlexnetError(f"could not write the checkpoint {name or ''} at step {step}: {reason}; {kept}: {then}",
                        mentions=("resume",))


RunLock = CommandLock        # its name before it locked more than run folders (Python API)


class MetricsLog:
    """Appends JSON lines to RUN/metrics.jsonl (and TensorBoard scalars when asked)."""

    def __init__(self, run_dir: Path, *, enabled: bool = True, tensorboard: bool = False):
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise AlexnetError("tensorboard needs the tensorboard package: "
                                   "pip install 'alexnet-cli[tensorboard]'", field="tensorboard", value=True) from None
            self._tb = SummaryWriter(str(run_dir / "tensorboard"))

    def offset(self) -> int:
        return self.path.stat().st_size if self.enabled and self.path.exists() else 0

    def truncate(self, offset: int) -> None:
        """Forget what was logged after a checkpoint (called on resume): `offset` is the log's
        size when the checkpoint was saved. The log must still begin with those whole records; a
        log cut or edited since is an error, since cutting it there would pad it with NULs or
        splice two records (a log moved away is fine: the run continues a new one)."""
        if not (self.enabled and self.path.exists()):
            return
        with open(self.path, "r+b") as f:
            head = f.read(offset)
            if len(head) < offset or (offset and not head.endswith(b"\n")) or not _json_lines(head):
                raise DataError(f"{self.path} no longer begins with the {offset:,} bytes of records it held when "
                                "the checkpoint was saved (cut or edited since): restore it, or move it away to "
                                "continue the run without its earlier records")
            f.truncate(offset)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json_text(record) + "\n")
        if self._tb is not None:
            step = record.get("step", 0)
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self._tb.add_scalar(f"{record.get('kind', 'train')}/{key}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _json_lines(text: bytes) -> bool:
    """Whether every non-empty line of `text` is a JSON object."""
    try:
        return all(isinstance(json.loads(line), dict) for line in text.split(b"\n") if line.strip())
    except ValueError:
        return False


# metrics.jsonl's records (docs/formats.md): the fields each kind always has, and what each holds;
# an epoch's validation figures only where the data has a validation split. Records of other
# kinds, and fields not named here (a newer version's), are read as they are.
WHOLE, NUMBER, FRACTION, FLAG, TEXT = "a whole number", "a number", "a fraction in [0, 1]", "true or false", "text"
RECORD_FIELDS: dict[str, dict[str, str]] = {
    "train": {"step": WHOLE, "epoch": WHOLE, "loss": NUMBER, "lr": NUMBER, "images_per_s": NUMBER},
    "epoch": {"epoch": WHOLE, "step": WHOLE, "train_top1_error": FRACTION, "train_top5_error": FRACTION,
              "lr": NUMBER, "time_s": NUMBER, "lr_dropped": FLAG},
    "warning": {"step": WHOLE, "message": TEXT},
    "diverged": {"step": WHOLE},
}
VALIDATION_FIELDS = {"val_top1_error": FRACTION, "val_top5_error": FRACTION, "val_n": WHOLE}


def _is(value: Any, what: str) -> bool:
    """Whether a JSON value is `what` (one of WHOLE, NUMBER, ...); true and false are no numbers."""
    if what == FLAG:
        return isinstance(value, bool)
    if what == TEXT:
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if what == WHOLE:
        return isinstance(value, int) and value >= 0
    return what == NUMBER or 0 <= value <= 1


def record_problem(record: Any) -> str | None:
    """What is wrong with one parsed line of metrics.jsonl, in words; None when nothing is."""
    if not isinstance(record, dict):
        return f"not a JSON object but {_json_kind(record)}"
    kind = record.get("kind")
    if not isinstance(kind, str):
        return 'a record without its "kind"' if kind is None else f'"kind" is {_shown(kind)}, not text'
    fields = RECORD_FIELDS.get(kind, {"step": WHOLE} if "step" in record else {})
    if kind == "epoch":
        fields = {**fields, **{k: v for k, v in VALIDATION_FIELDS.items() if k in record}}
    for name, what in fields.items():
        if name not in record:
            return f'the {kind} record has no "{name}"'
        if not _is(record[name], what):
            return f'the {kind} record\'s "{name}" is {_shown(record[name])}, not {what}'
    return None


def _json_kind(value: Any) -> str:
    return {list: "a list", str: "a string", bool: "true or false", type(None): "null"}.get(type(value), "a number")


def _shown(value: Any) -> str:
    """A JSON value as written in the file, cut short."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Order:
    """The order `train` logs in, checked record by record: steps never go back, a training
    record's step and an epoch's number are logged once, and an epoch's record comes after its
    last step's. A resumed run cuts the log back to its checkpoint (MetricsLog.truncate), so its
    own log never repeats a step: a log that does was edited, or two logs were joined, and no
    count taken from it could be trusted."""

    def __init__(self) -> None:
        self.step = (0, 0)              # (the highest step so far, its line)
        self.train_step = (-1, 0)       # (the last training record's step, its line)
        self.epoch = (0, 0)             # (the last epoch record's epoch, its line)
        self.epoch_step = -1            # the step the last epoch record ended at

    def problem(self, record: dict[str, Any], line: int) -> str | None:
        step, kind = record.get("step"), record["kind"]
        if isinstance(step, int) and step < self.step[0]:
            return f"step {step} comes after step {self.step[0]} (line {self.step[1]})"
        if kind == "train" and step == self.train_step[0]:
            return f"step {step} is logged twice (lines {self.train_step[1]} and {line})"
        if kind == "train" and step == self.epoch_step:
            return f"step {step} comes after the record of epoch {self.epoch[0]} that it ended (line {self.epoch[1]})"
        if kind == "epoch" and record["epoch"] <= self.epoch[0]:
            again = "logged twice" if record["epoch"] == self.epoch[0] else f"comes after epoch {self.epoch[0]}"
            return f"epoch {record['epoch']} {again} (line {self.epoch[1]})"
        if isinstance(step, int):
            self.step = (step, line)
        if kind == "train":
            self.train_step = (step, line)
        elif kind == "epoch":
            self.epoch, self.epoch_step = (record["epoch"], line), step
        return None


# The longest line read_metrics takes: a record is a few hundred bytes (a few KB at most); a
# longer line is damage (a file of zeros, a log joined with some binary file), never read whole.
MAX_RECORD_LINE = 2**20


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of RUN/metrics.jsonl, read line by line. A last line without its newline is
    being written by a run in progress and is left out. Any other line that is not JSON, a
    line over MAX_RECORD_LINE bytes, a record whose fields are missing or of the wrong type
    (RECORD_FIELDS), and records repeated or out of order (`_Order`) are errors naming the file
    and the line; so is a metrics.jsonl that is no regular file (a link to /dev/zero, a FIFO:
    read whole, it filled the memory or waited for ever)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    records, order = [], _Order()
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise DataError(f"{path}: not a regular file but {special_kind(mode)}: a run writes its log as a file")
        with open(path, "rb") as log:
            for number, line in _log_lines(path, log):
                if line.strip():
                    records.append(_record(path, number, line, order))
    except OSError as exc:
        raise AlexnetError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return records


def _log_lines(path: Path, log) -> Iterator[tuple[int, str]]:
    """The numbered, whole (newline-ended) lines of the open log `log`, as text; a line too long
    or not UTF-8 is a DataError."""
    offset = 0
    for number in itertools.count(1):
        raw = log.readline(MAX_RECORD_LINE + 1)
        if not raw.endswith(b"\n"):
            if len(raw) > MAX_RECORD_LINE:
                raise DataError(f"{path}: line {number} is longer than {MAX_RECORD_LINE // 2**20} MiB, "
                                "while a record is a few hundred bytes: the log is damaged")
            return                                  # the end, or a partial line being written
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not text (byte {offset + exc.start:,} is not UTF-8): the log is damaged") from None
        yield number, text
        offset += len(raw)


def _record(path: Path, number: int, line: str, order: _Order) -> dict[str, Any]:
    """Line `number` of the log `path` as a record, checked (read_metrics)."""
    try:
        record = json.loads(line)
    except ValueError:
        raise AlexnetError(f"{path}: line {number} is not JSON ({line[:60]!r})") from None
    problem = record_problem(record)
    if problem is not None:
        raise DataError(f"{path}: line {number}: {problem}")
    problem = order.problem(record, number)
    if problem is not None:
        raise DataError(f"{path}: line {number}: {problem}: records repeated or out of order, while a run "
                        "logs each step once and in order (a resumed one cuts the log back to its checkpoint): "
                        "the log was edited, or two logs were joined")
    return record
