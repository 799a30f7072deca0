"""Only the CLI knows flag names (STYLE.md): the library's messages and notes name a setting
in its own terms, `name` in backticks, and the CLI shows the flag from one table
(cli/flags.py NAMES). These tests keep a flag from creeping back into a library message and
check that every name the library writes has a flag to be shown as."""

from __future__ import annotations

import ast
import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from alexnet_cli import synth
from alexnet_cli.cli import common
from alexnet_cli.cli.flags import FLAGS, NAMES, OFF_FLAGS, flag_message
from alexnet_cli.errors import DataError
from alexnet_cli.layouts import LabelFiles, find_layout
from alexnet_cli.progress import ConsoleReporter, NullReporter

LIBRARY = sorted((Path(__file__).parent.parent / "alexnet_cli").glob("*.py"))      # not cli/
FLAG = re.compile(r"--[a-z]")
# A command line the message tells the user to run names the tool's own flags, the same advice
# for a Python user (errors.py): `alexnet ...` or `torchrun ...` in backticks, or an unquoted
# torchrun line that ends the message ("e.g. torchrun --nproc_per_node 8 -m alexnet_cli train ...").
COMMAND_LINE = re.compile(r"`(?:alexnet|torchrun) [^`]*`|\btorchrun --.*$", re.S)
MENTION = re.compile(r"`([A-Za-z_]\w*(?:=False)?)`")


def _message_texts(path: Path) -> list[tuple[int, str]]:
    """Every string the module writes (line, text), docstrings left out: a plain string as it
    is, an f-string as its source (placeholders included), each once."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    inside_fstrings = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
                       for inner in ast.walk(node) if inner is not node}
    texts = []
    for node in ast.walk(tree):
        if id(node) in docstrings or id(node) in inside_fstrings:
            continue
        if isinstance(node, ast.JoinedStr):
            texts.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            texts.append((node.lineno, node.value))
    return texts


def test_the_library_writes_no_flag_outside_a_command_line():
    offenders = [f"{path.name}:{line}: {text!r}" for path in LIBRARY for line, text in _message_texts(path)
                 if FLAG.search(COMMAND_LINE.sub("", text))]
    assert not offenders, ("a library message names a flag; write the setting as `name` and list it in "
                           "mentions (errors.py):\n" + "\n".join(offenders))


def test_the_scan_sees_flags_in_plain_strings_and_f_strings_but_not_in_command_lines(tmp_path):
    """The scan above would catch what this task removed, and lets through what it keeps."""
    module = tmp_path / "m.py"
    module.write_text('"""Docstrings may say --resume."""\n'
                      'A = "pass --resume to continue it"\n'
                      'B = f"fewer than --k {3}"\n'
                      'C = f"run `alexnet codes {1} --split {2}{chr(0) if 1 else f\' --features {3}\'}`"\n'
                      'D = "e.g. torchrun --nproc_per_node 8 -m alexnet_cli train DATA --out RUN"\n'
                      'E = "run `alexnet prep SRC OUT --verify`, or use --decode cpu"\n', encoding="utf-8")
    flagged = [line for line, text in _message_texts(module) if FLAG.search(COMMAND_LINE.sub("", text))]
    assert sorted(flagged) == [2, 3, 6]


def test_every_name_the_library_writes_or_mentions_has_a_flag():
    """Each `name` in a library message, and each name an error or a note lists in `mentions=`,
    is shown by the CLI as a flag (a name missing from NAMES would reach the user in backticks)."""
    written, listed = {}, {}
    for path in LIBRARY:
        for line, text in _message_texts(path):
            for name in MENTION.findall(text):
                written.setdefault(name, f"{path.name}:{line}")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "mentions" and isinstance(node.value, ast.Tuple):
                for item in node.value.elts:
                    if isinstance(item, ast.Constant):
                        listed.setdefault(item.value, f"{path.name}:{node.value.lineno}")
    written.pop("name", None)             # errors.py's own message about the rule: "must write them as `name`"
    assert {"out", "resume", "k", "val_synsets", "pca_aug=False"} <= written.keys() & listed.keys()
    missing = {name: where for name, where in {**written, **listed}.items() if name not in NAMES}
    assert not missing, f"names with no flag in cli/flags.py: {missing}"


def test_every_name_of_the_table_is_shown_as_a_flag_of_a_command():
    import typer.main

    from alexnet_cli.cli.app import app

    group = typer.main.get_command(app)
    flags = {opt for cmd in group.commands.values() for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
    assert set(NAMES.values()) <= flags, set(NAMES.values()) - flags
    assert set(OFF_FLAGS) <= set(FLAGS)                  # an off spelling belongs to a setting with a flag
    assert NAMES["pca_aug=False"] == "--no-pca-aug" and NAMES["pca_aug"] == "--pca-aug"
    assert common.setting_text("pca_aug", False) == "--no-pca-aug"


def _printed(reporter_names=None):
    console = Console(file=io.StringIO(), width=200)
    reporter = ConsoleReporter(console, interactive=False, names=reporter_names)
    reporter.log("Note: 'val' holds 3 images, fewer than `k` 5: all of them are shown", mentions=("k",))
    reporter.log("plain note, no setting")                              # log(message) as before
    return console.file.getvalue().splitlines()


def test_a_note_names_its_setting_by_flag_for_the_cli_and_by_name_for_python():
    assert _printed(NAMES) == ["Note: 'val' holds 3 images, fewer than --k 5: all of them are shown",
                               "plain note, no setting"]
    assert _printed() == ["Note: 'val' holds 3 images, fewer than `k` 5: all of them are shown",
                          "plain note, no setting"]
    assert common.reporter().names is NAMES                              # the reporter every command uses
    note = "stops at the next log step (`log_every`)"
    assert common.reporter().named(note, ("log_every",)) == "stops at the next log step (--log-every)"
    assert NullReporter().named(note, ("log_every",)) == note
    for reporter in (NullReporter(), ConsoleReporter(Console(file=io.StringIO()), names=NAMES)):
        with pytest.raises(ValueError, match="must write them as `name`"):   # a mention not written `k`: a bug
            reporter.log("fewer than k 5", mentions=("k",))


def test_an_unused_label_file_is_named_by_its_setting(tmp_path):
    """layouts keeps which setting gave the file; prep's note (test_prep checks the CLI's line)
    shows its flag through the CLI's reporter."""
    root = synth.make_tree(tmp_path / "src", classes=2, train_per_class=1, val_per_class=1)
    labels = tmp_path / "labels.csv"
    labels.write_text("junk")
    layout = find_layout(root, labels=LabelFiles(val_labels=labels, val_synsets=labels))
    assert [u.setting for u in layout.unused] == ["val_labels", "val_synsets"]
    assert str(layout.unused[0]) == (f"`val_labels` {labels} is not used: val/ is in class folders, which give "
                                     "the labels")
    cli_lines = [common.reporter().named(str(u), (u.setting,)) for u in layout.unused]
    assert cli_lines[1] == f"--val-synsets {labels} is not used: no split is labelled by the devkit's ground truth"


def test_an_error_names_an_off_setting_by_the_flag_that_turns_it_off(tmp_path):
    from alexnet_cli.pca import read_pca

    with pytest.raises(DataError) as missing:
        read_pca(tmp_path)
    assert str(missing.value).endswith("first (or train with `pca_aug=False`)")
    assert flag_message(missing.value).endswith("first (or train with --no-pca-aug)")
