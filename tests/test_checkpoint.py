"""alexnet_cli/checkpoint.py: the format CLI.md promises, loaded with weights_only=True only.

A full checkpoint is about 240 MB (fc6 alone holds 37 M weights), so the round trip writes one
and removes it; the other tests save state_dicts whose tensors are stride-0 views of a single
number, which torch.save stores in a few kilobytes and load_state_dict expands to full size.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from alexnet_cli.checkpoint import FORMAT, VERSION, all_finite, load_checkpoint, load_model, save_checkpoint
from alexnet_cli.cli.app import app
from alexnet_cli.config import resolve_model_config, resolve_train_config, to_dict
from alexnet_cli.errors import CheckpointError
from alexnet_cli.model import AlexNet
from alexnet_cli.shards import read_mean_image

CLASSES = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475"]


def compact_state_dict(model: AlexNet, value: float = 0.5) -> dict[str, torch.Tensor]:
    """The model's layout, every tensor a stride-0 view of one number: tiny on disk."""
    return {k: torch.full((1,), value).expand(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def one_column_net() -> AlexNet:
    return AlexNet(num_classes=7, columns=1)


@pytest.fixture(scope="module")
def two_column_net() -> AlexNet:
    return AlexNet(num_classes=5)


def test_round_trip(tmp_path, two_column_net):
    torch.manual_seed(0)
    model = AlexNet(num_classes=5, recipe="code", dropout=0.3)
    mean = torch.rand(256, 256, 3) * 255
    config = {"recipe": "code", "model": to_dict(model.config), "train": to_dict(resolve_train_config("code"))}
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    try:
        save_checkpoint(path, {"model": model.state_dict(), "classes": CLASSES, "class_names": list("abcde"),
                               "mean_image": mean, "config": config})
        assert [p.name for p in path.parent.iterdir()] == ["last.pt"]           # no temporary left behind
        raw = torch.load(path, weights_only=True)                               # plain data only
        assert (raw["format"], raw["version"]) == (FORMAT, VERSION)
        loaded = load_model(path)
    finally:
        path.unlink(missing_ok=True)
    assert loaded.model.config == model.config and not loaded.model.training
    assert loaded.model.config.conv1_order == "code" and loaded.model.config.dropout == 0.3
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    assert loaded.classes == CLASSES and loaded.class_names == list("abcde")
    assert loaded.mean_image.dtype == torch.float32 and torch.equal(loaded.mean_image, mean)
    assert loaded.config == config and loaded.path == path


def test_save_replaces_atomically(tmp_path, two_column_net):
    path = tmp_path / "ckpt.pt"
    for value in (0.25, 0.75):
        save_checkpoint(path, {"model": compact_state_dict(two_column_net, value), "classes": CLASSES})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
    assert torch.all(load_model(path).model.fc8.bias == 0.75)


@pytest.mark.parametrize("fixture, classes, columns", [("two_column_net", 5, 2), ("one_column_net", 7, 1)])
def test_bare_state_dict_infers_classes_and_columns(tmp_path, request, fixture, classes, columns):
    net = request.getfixturevalue(fixture)
    path = tmp_path / "bare.pt"
    torch.save(compact_state_dict(net), path)
    loaded = load_model(path)
    assert loaded.model.config.num_classes == classes and loaded.model.config.columns == columns
    assert loaded.model.conv1.out_channels == (96 if columns == 2 else 48)
    assert loaded.classes == [str(i) for i in range(classes)] and loaded.class_names == loaded.classes
    assert loaded.mean_image is None and loaded.config == {}
    assert torch.all(loaded.model.fc6.weight == 0.5)


class _Payload:
    """Unpickling this calls open(marker, "w"): code run by merely loading the file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused(tmp_path, two_column_net):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": compact_state_dict(two_column_net), "classes": CLASSES, "extra": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_model(path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_the_malicious_payload_really_runs_code_when_unpickled(tmp_path):
    # control for the test above: without weights_only the same kind of file does create its marker
    marker = tmp_path / "pwned-control"
    path = tmp_path / "evil-control.pt"
    torch.save({"extra": _Payload(marker)}, path)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_plain_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": _Payload(marker)}, protocol=2))
    with pytest.raises(CheckpointError):
        load_model(path)
    assert not marker.exists()


def test_truncated_file(tmp_path, two_column_net):
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": compact_state_dict(two_column_net), "classes": CLASSES})
    data = good.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 30):
        bad = tmp_path / f"cut{cut}.pt"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=str(bad.name)):
            load_model(bad)


def test_what_is_not_a_checkpoint_file_is_named(tmp_path):
    """The audit's `predict /dev/null ...` said "no such checkpoint file", and an empty file
    "(EOFError)"; a FIFO must not block torch.load."""
    (tmp_path / "empty.pt").write_bytes(b"")
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    for path, reason in ((Path(os.devnull), "not a regular file (a device)"), (fifo, "not a regular file (a FIFO)"),
                         (tmp_path / "empty.pt", "not a readable checkpoint (an empty file)"),
                         (tmp_path / "absent.pt", "no such checkpoint file")):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert str(info.value) == f"{path}: {reason}"


GARBAGE = [b"not a checkpoint at all\n", bytes(range(256)) * 8]


@pytest.mark.parametrize("content", GARBAGE, ids=["text", "binary"])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_model(path)


@pytest.mark.parametrize("content", GARBAGE, ids=["text", "binary"])
def test_corrupt_file_is_not_called_malicious(tmp_path, content):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert "refused" not in str(info.value) and "Python objects" not in str(info.value)


def test_missing_file_and_wrong_contents(tmp_path, two_column_net):
    with pytest.raises(CheckpointError, match="no such"):
        load_model(tmp_path / "absent.pt")
    not_dict = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_dict)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_model(not_dict)
    no_weights = tmp_path / "empty.pt"
    torch.save({"classes": CLASSES}, no_weights)
    with pytest.raises(CheckpointError, match="no AlexNet weights"):
        load_model(no_weights)


def test_inconsistent_checkpoints(tmp_path, two_column_net):
    state = compact_state_dict(two_column_net)
    wrong_classes = tmp_path / "classes.pt"
    save_checkpoint(wrong_classes, {"model": state, "classes": CLASSES[:3]})
    with pytest.raises(CheckpointError, match="3 classes"):
        load_model(wrong_classes)
    wrong_config = tmp_path / "config.pt"
    model_config = to_dict(resolve_model_config("paper", num_classes=5, columns=1))
    save_checkpoint(wrong_config, {"model": state, "classes": CLASSES, "config": {"model": model_config}})
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(wrong_config)
    bad_value = tmp_path / "value.pt"   # a setting this version refuses: the file's fault (exit 1), not usage
    save_checkpoint(bad_value, {"model": state, "classes": CLASSES,
                                "config": {"model": {**to_dict(resolve_model_config("paper", num_classes=4)),
                                                     "pool_kernel": 5}}})
    with pytest.raises(CheckpointError, match="value.pt: its network settings are not valid here.*pool"):
        load_model(bad_value)


@pytest.fixture(scope="module")
def trained_checkpoint(tiny_data, tmp_path_factory) -> Path:
    """RUN/checkpoints/last.pt of one training step by `alexnet train` (a few seconds on the CPU)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    result = CliRunner().invoke(app, ["train", str(tiny_data), "--out", str(run), "--max-steps", "1",
                                      "--device", "cpu", "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    return run / "checkpoints" / "last.pt"


@pytest.mark.parametrize("source", ["alexnet train", "make_checkpoint", "make_checkpoint without data"])
def test_mean_image_is_float32_256x256x3(source, tiny_data, make_checkpoint, tmp_path, request):
    data = None if source.endswith("without data") else tiny_data
    if source == "alexnet train":
        path = request.getfixturevalue("trained_checkpoint")
    else:
        path = make_checkpoint(tmp_path / "made.pt", data)
    mean = torch.load(path, weights_only=True)["mean_image"]
    assert isinstance(mean, torch.Tensor) and mean.dtype == torch.float32 and mean.shape == (256, 256, 3)
    # the training mean in 0-255 units that was subtracted (zeros when make_checkpoint has no data)
    expected = torch.from_numpy(read_mean_image(data)) if data else torch.zeros(256, 256, 3)
    assert torch.equal(mean, expected)


def test_a_checkpoint_from_a_newer_format_is_refused(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({"format": FORMAT, "version": VERSION + 1, "model": AlexNet(num_classes=4).state_dict()}, path)
    with pytest.raises(CheckpointError, match="upgrade"):
        load_checkpoint(path)


def test_a_network_setting_from_a_newer_version_says_to_upgrade(tmp_path, two_column_net):
    """A model setting this version does not know: the file is probably newer than the tool."""
    path = tmp_path / "newer.pt"
    model = {**to_dict(resolve_model_config("paper", num_classes=5)), "conv6": True}
    save_checkpoint(path, {"model": compact_state_dict(two_column_net), "classes": CLASSES,
                           "config": {"model": model}})
    with pytest.raises(CheckpointError, match=r"settings this version does not know \(conv6\).*upgrade alexnet-cli"):
        load_model(path)


def test_a_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello\nworld\n")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_checkpoints_are_readable_as_the_umask_allows(tmp_path, monkeypatch):
    from alexnet_cli import atomic

    mask = os.umask(0)
    os.umask(mask)
    assert atomic._umask.__wrapped__() == mask                    # the real one, read back
    state = {"model": AlexNet(num_classes=4).state_dict()}
    for umask, mode in ((0o022, 0o644), (0o077, 0o600)):
        monkeypatch.setattr(atomic, "_umask", lambda: umask)
        save_checkpoint(tmp_path / "a.pt", state)
        assert (tmp_path / "a.pt").stat().st_mode & 0o777 == mode

    def refuse(fd, mode):                    # vfat and some network mounts have no modes
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", refuse)
    save_checkpoint(tmp_path / "b.pt", state)
    assert load_checkpoint(tmp_path / "b.pt")["model"].keys() == state["model"].keys()
    assert not list(tmp_path.glob(".*.tmp"))


# ---------------------------------------------------------------- hostile checkpoints (issue 21)


class _Getpid:
    """A pickle whose loading calls os.getpid (harmless, but code: what weights_only refuses)."""

    def __reduce__(self):
        return (os.getpid, ())


def test_a_malicious_pickle_is_refused_in_the_current_torch_wording(tmp_path, two_column_net):
    """F18: torch >= 2.6 says "unsupported GLOBAL posix.getpid whose module posix is blocked"."""
    path = tmp_path / "evil.pt"
    torch.save({"model": compact_state_dict(two_column_net), "extra": _Getpid()}, path)
    with pytest.raises(CheckpointError, match=r"refused: it holds Python objects \((posix|os)\.getpid\)"):
        load_checkpoint(path)


def test_a_plain_pickle_is_refused_without_torchs_warning(tmp_path, two_column_net):
    """F18: torch warns about the pickle protocol before refusing; the warning must not come
    before the Error line."""
    import warnings

    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"model": {"conv1.weight": [1.0]}}, protocol=4))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match="not a readable checkpoint.*plain pickle"):
            load_checkpoint(path)
    assert seen == []
    result = CliRunner().invoke(app, ["kernels", str(path)])
    assert result.exit_code == 1 and result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_weights_of_another_float_type_load_as_float32(tmp_path, two_column_net, dtype):
    """float16 weights used to fail in the first convolution (Input type (float) and bias type
    (c10::Half) should be the same); the network computes in float32, so they are converted."""
    path = tmp_path / "half.pt"
    save_checkpoint(path, {"model": {k: v.to(dtype) for k, v in compact_state_dict(two_column_net, 0.01).items()},
                           "classes": CLASSES})
    model = load_model(path).model
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 5)


def test_weights_that_are_not_numbers_or_not_finite_are_refused(tmp_path, two_column_net):
    state = compact_state_dict(two_column_net)
    for name, value, words in (("nan.pt", float("nan"), "NaN or infinite"), ("inf.pt", float("inf"), "NaN or infinite")):
        poisoned = {**state, "fc7.bias": torch.full(state["fc7.bias"].shape, value)}
        save_checkpoint(tmp_path / name, {"model": poisoned, "classes": CLASSES})
        with pytest.raises(CheckpointError, match=f"weight fc7.bias holds {words}"):
            load_model(tmp_path / name)
    save_checkpoint(tmp_path / "int.pt", {"model": {**state, "fc8.bias": torch.zeros(5, dtype=torch.int64)},
                                          "classes": CLASSES})
    with pytest.raises(CheckpointError, match="fc8.bias is torch.int64"):
        load_model(tmp_path / "int.pt")


def test_config_values_of_the_wrong_kind_are_checkpoint_errors(tmp_path, two_column_net):
    """F5 and the "twelve more": a config that is a list, lrn_size 1e9, mean_crop "bogus":
    exit 1 in the file's terms, never a usage error naming a flag, nor a raw exception."""
    state = compact_state_dict(two_column_net)
    model = to_dict(resolve_model_config("paper", num_classes=5))
    cases = {"list": ([1, 2], "its config is not a mapping"),
             "lrn-float": ({"model": {**model, "lrn_size": 1e9}}, "lrn_size must be a whole number"),
             "lrn-huge": ({"model": {**model, "lrn_size": 10**9}}, "lrn_size must be between 1 and 256"),
             "mean-crop": ({"model": model, "train": {"mean_crop": "bogus"}}, "its config has mean_crop 'bogus'"),
             "train-list": ({"model": model, "train": ["x"]}, "its config is not a mapping")}
    for name, (config, words) in cases.items():
        path = tmp_path / f"{name}.pt"
        save_checkpoint(path, {"model": state, "classes": CLASSES, "mean_image": torch.zeros(256, 256, 3),
                               "config": config})
        if name == "mean-crop":                      # read when the network is used: predict
            image = tmp_path / "x.png"
            Image.new("RGB", (300, 260), (120, 30, 200)).save(image)
            result = CliRunner().invoke(app, ["predict", str(path), str(image), "--device", "cpu"])
        else:
            result = CliRunner().invoke(app, ["kernels", str(path)])
        assert result.exit_code == 1, (name, result.output)
        assert words in result.stderr and "--" not in result.stderr, (name, result.stderr)
        assert result.stderr.count("\n") == 1, (name, result.stderr)


def test_a_truncated_checkpoint_is_one_short_line_cut_at_a_sentence(tmp_path):
    """torch's message runs on for several sentences; the Error line keeps its first, whole."""
    path = tmp_path / "trunc.pt"
    torch.save({"model": AlexNet(num_classes=4).state_dict()}, path)
    path.write_bytes(path.read_bytes()[:4096])
    result = CliRunner().invoke(app, ["kernels", str(path)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: not a readable checkpoint ("), result.stderr
    reason = lines[0].split("not a readable checkpoint (", 1)[1]
    assert reason.endswith(")") and len(reason) <= 200
    assert "central directory" in reason and "If you are seeing" not in reason      # the first sentence only


@pytest.mark.parametrize("message, first", [
    ("A failed. This is why. More here.", "A failed"),
    ("one line\nsecond line", "one line"),
    ("file model.pt is bad: read 3 of 7 bytes", "file model.pt is bad: read 3 of 7 bytes"),
    ("word " * 60, None),
])


def test_the_reason_of_an_unreadable_checkpoint_ends_at_a_boundary(message, first):
    from alexnet_cli.checkpoint import _first_sentence

    reason = _first_sentence(message)
    if first is not None:
        assert reason == first
    else:                                       # one endless sentence: cut between words, marked
        assert len(reason) <= 200 and reason.endswith("...") and reason[:-3].split() == ["word"] * len(reason[:-3].split())
        assert reason[:-3].endswith("word")


@pytest.mark.parametrize("names, words", [(["a"], "lists 1 class but"), (["a", "b", "c"], "lists 3 classes but")])
def test_a_class_list_that_does_not_fit_fc8_is_named_in_words_that_agree(tmp_path, names, words):
    path = tmp_path / "odd.pt"
    torch.save({"model": AlexNet(num_classes=2).state_dict(), "classes": names}, path)
    with pytest.raises(CheckpointError, match=words):
        load_model(path)


def test_weights_that_do_not_fit_are_named_by_key_and_shape(tmp_path, two_column_net):
    """Not torch's header line ("Error(s) in loading state_dict for AlexNet:") but what differs."""
    state = compact_state_dict(two_column_net)
    one_column = to_dict(resolve_model_config("paper", num_classes=5, columns=1))
    path = tmp_path / "columns.pt"
    save_checkpoint(path, {"model": state, "classes": CLASSES, "config": {"model": one_column}})
    with pytest.raises(CheckpointError, match=r"conv1\.weight is \(96, 3, 11, 11\), the network's \(48, 3, 11, 11\)"):
        load_model(path)
    path = tmp_path / "missing.pt"
    paper = to_dict(resolve_model_config("paper", num_classes=5))
    save_checkpoint(path, {"model": {k: v for k, v in state.items() if k != "fc8.bias"}, "classes": CLASSES,
                           "config": {"model": paper}})
    with pytest.raises(CheckpointError, match=r"do not fit the network they describe \(fc8\.bias missing\)$"):
        load_model(path)


@pytest.mark.parametrize("extra, words", [
    ({"classes": [0, 1, 2, 3, 4]}, "its classes are not all strings"),
    ({"classes": CLASSES[:4] + CLASSES[:1]}, "its classes list 'n01440764' more than once"),
    ({"classes": CLASSES, "class_names": ["tench"]}, "lists 1 class_names for 5 classes"),
    ({"classes": CLASSES, "format": "someone-else/checkpoint"}, "not an alexnet checkpoint"),
])


def test_class_lists_and_format_of_the_wrong_kind_are_refused(tmp_path, two_column_net, extra, words):
    path = tmp_path / "odd.pt"
    torch.save({"model": compact_state_dict(two_column_net), **extra}, path)
    with pytest.raises(CheckpointError, match=words):
        load_model(path)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_all_finite_is_isfinite_all_including_sums_that_overflow(dtype):
    big = torch.finfo(dtype).max
    x = torch.zeros(1000, dtype=dtype)
    assert all_finite(x)
    for i, value in ((0, float("nan")), (999, float("inf")), (500, -float("inf"))):
        y = x.clone()
        y[i] = value
        assert not all_finite(y)
    y = x.clone()
    y[3], y[7] = float("inf"), -float("inf")              # they sum to NaN: still caught
    assert not all_finite(y)
    y = torch.full((10,), big, dtype=dtype)                # finite values whose sum overflows
    assert torch.isinf(y.sum()) and all_finite(y)


@pytest.mark.parametrize("dtype", [torch.float8_e5m2, torch.float8_e4m3fn])
def test_all_finite_of_float8_weights(dtype):
    assert all_finite(torch.ones(8).to(dtype))
    assert not all_finite(torch.tensor([1.0, float("nan")]).to(dtype))
