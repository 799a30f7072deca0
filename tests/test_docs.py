"""docs/cli.md against the code and against the public surface (docs/public-surface.md).

docs/cli.md is generated from the typer app by docs/generate_cli_reference.py; these tests fail
when someone changes a command or an option without regenerating it, when the app lacks a
subcommand or a flag that the public surface promises, and when a command's `--json` document
has other keys than public-surface.md's skeleton of it (`check_documented_json`, which the
tests that run a command with --json call on the document it printed).
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main

from alexnet_cli import __version__
from alexnet_cli.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
CLI_MD = ROOT / "docs" / "cli.md"
SURFACE_MD = ROOT / "docs" / "public-surface.md"   # the public-surface promise
PROMISED = {"prep", "pca", "train", "eval", "kernels", "neighbors", "predict", "summary", "demo", "features"}
# the commands whose --json document public-surface.md shows key by key
JSON_DOCUMENTED = {"summary", "prep", "pca", "train", "eval", "predict", "kernels", "features", "neighbors", "codes"}


def _load_generator():
    spec = importlib.util.spec_from_file_location("generate_cli_reference", ROOT / "docs" / "generate_cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


@pytest.fixture(scope="module")
def generated() -> str:
    return gen.render(app)


@pytest.fixture(scope="module")
def surface() -> str:
    if not SURFACE_MD.is_file():
        pytest.skip(f"the public-surface promise is not at {SURFACE_MD}")
    return SURFACE_MD.read_text(encoding="utf-8")


def _section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}[^\n]*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"public-surface.md has no '## {title}' section"
    return match.group(1)


def promised_flags(surface_text: str) -> dict[str, set[str]]:
    """{subcommand: flags} from public-surface.md's `alexnet <cmd> ...` bullets (every backticked --flag in the bullet)."""
    promised: dict[str, set[str]] = {}
    for bullet in re.split(r"^- ", _section(surface_text, "Subcommands"), flags=re.M):
        head = re.match(r"`alexnet ([a-z][a-z0-9-]*)", bullet)
        if not head:
            continue  # a bullet about something else (checkpoints, the network's input)
        spans = re.findall(r"`([^`]*)`", bullet)
        flags = {f for span in spans for f in re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", span)}
        promised.setdefault(head.group(1), set()).update(flags)
    return promised


def promised_commands(surface_text: str) -> set[str]:
    """The subcommands public-surface.md names: `alexnet --help` lists at least ..., and each subcommand bullet."""
    listed = re.search(r"lists at least:(.*?)\.\n", surface_text, re.S)
    assert listed, "public-surface.md no longer says what `alexnet --help` 'lists at least:'"
    names = {n for n in re.findall(r"`([^`]*)`", listed.group(1)) if re.fullmatch(r"[a-z][a-z0-9-]*", n)}
    return names | set(promised_flags(surface_text))


def _commands() -> tuple[dict, typer.Context]:
    root = typer.main.get_command(app)
    ctx = typer.Context(root, info_name="alexnet", **(root.context_settings or {}))
    return {name: root.get_command(ctx, name) for name in root.list_commands(ctx)}, ctx


def test_cli_md_is_generated_from_the_app(generated):
    committed = CLI_MD.read_text(encoding="utf-8") if CLI_MD.exists() else ""
    assert committed == generated, (
        f"docs/cli.md is stale: the typer app's commands or options changed. Run `{gen.REGENERATE}` "
        "and commit docs/cli.md.")


def test_reference_does_not_depend_on_the_terminal(generated, monkeypatch):
    monkeypatch.setenv("COLUMNS", "33")
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert gen.render(app) == generated
    assert "\x1b" not in generated and "╭" not in generated  # no ANSI, no rich boxes


def test_reference_lists_every_option_spelling_and_panel(generated):
    commands, ctx = _commands()
    for name, cmd in commands.items():
        section = generated.split(f"## `alexnet {name}`\n", 1)[1].split("\n## ", 1)[0]
        sub_ctx = typer.Context(cmd, info_name=name, parent=ctx)
        assert f"alexnet {name} [OPTIONS]" in section  # the usage line
        for param in cmd.get_params(sub_ctx):
            if param.param_type_name == "option" and "--help" not in param.opts:
                for spelling in [*param.opts, *param.secondary_opts]:
                    assert f"`{spelling}" in section, f"{spelling} of `alexnet {name}` missing"
            if param.rich_help_panel:
                assert f"### {param.rich_help_panel}\n" in section
    train = generated.split("## `alexnet train`\n", 1)[1]
    assert "| `--bf16` / `--no-bf16` | flag | `--bf16` |" in train  # a pair, its default spelled as typed


def test_check_reports_a_stale_file_and_the_command_to_run(tmp_path, capsys, generated):
    path = tmp_path / "cli.md"
    path.write_text(generated.replace("--max-steps", "--max-stepz"), encoding="utf-8")
    assert gen.check(path, generated) == 1
    err = capsys.readouterr().err
    assert "stale" in err and gen.REGENERATE in err and "--max-stepz" in err
    path.write_text(generated, encoding="utf-8")
    assert gen.check(path, generated) == 0


def test_every_promised_subcommand_is_documented(surface, generated):
    promised = promised_commands(surface)
    assert PROMISED <= promised, f"could not read public-surface.md's subcommands (found {sorted(promised)})"
    commands, _ = _commands()
    for name in sorted(promised):
        assert name in commands, f"public-surface.md promises `alexnet {name}`, the app has no such command"
        assert f"\n## `alexnet {name}`\n" in generated, f"`alexnet {name}` missing from docs/cli.md"
        assert f"[`{name}`](#alexnet-{name})" in generated  # in the index of commands


def test_every_promised_flag_exists(surface):
    promised = promised_flags(surface)
    assert {"--no-lrn", "--resume", "--out", "--devices"} <= promised["train"]  # the parse saw the bullet
    assert promised["neighbors"] >= {"--query", "--k", "--split", "--out", "--json"}
    commands, ctx = _commands()
    missing = []
    for name, flags in sorted(promised.items()):
        cmd = commands[name]
        have = {o for p in cmd.get_params(typer.Context(cmd, info_name=name, parent=ctx))
                for o in [*p.opts, *p.secondary_opts]}
        missing += [f"alexnet {name} {flag}" for flag in sorted(flags - have)]
    assert not missing, "public-surface.md promises flags the app lacks: " + ", ".join(missing)


# ---------------------------------------------------------------------------- the --json documents

# public-surface.md's skeletons: `{"key": value, "key", <varying>: value}`, `[item, ...]`, values
# are types or words (`int`, `f|null`, `"raw"|"jpeg"`, `<total int>`); only the keys are checked.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|<[^>]*>|[{}\[\]:,]|[^\s{}\[\]:,"<]+')


@dataclass
class Obj:
    """A documented object: its keys and each one's shape; `varying`: it has a `<name>` key, every
    key it has not named then takes `any_value`'s shape."""

    keys: dict[str, Any] = field(default_factory=dict)
    varying: bool = False
    any_value: Any = None


@dataclass
class Seq:
    item: Any = None          # every element's shape


class _Skeleton:
    def __init__(self, text: str):
        self.tokens, self.i = _TOKEN.findall(text), 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise ValueError("the skeleton ends inside a { or [")
        self.i += 1
        return tok

    def value(self) -> Any:
        """Up to the next , } or ] of its level: its first object or list is its shape (`[w, h]|null`
        is a list); anything else is a leaf (None)."""
        shape = None
        while self.peek() not in (",", "}", "]", None):
            tok = self.take()
            part = self.obj() if tok == "{" else self.seq() if tok == "[" else None
            shape = part if shape is None else shape
        return shape

    def obj(self) -> Obj:
        shape = Obj()
        while (key := self.take()) != "}":
            if key == ",":
                continue
            value = None
            if self.peek() == ":":
                self.take()
                value = self.value()
            if key.startswith('"'):
                shape.keys[json.loads(key)] = value
            elif key != "...":
                shape.varying, shape.any_value = True, value
        return shape

    def seq(self) -> Seq:
        shape = Seq()
        while self.peek() != "]":
            if self.peek() == ",":
                self.take()
                continue
            part = self.value()
            shape.item = part if shape.item is None else shape.item
        self.take()
        return shape


def parse_skeleton(text: str) -> Obj | Seq:
    parser = _Skeleton(text)
    first = parser.take()
    assert first in ("{", "["), f"a JSON skeleton starts with {{ or [: {text!r}"
    shape = parser.obj() if first == "{" else parser.seq()
    assert parser.peek() is None, f"text after the skeleton: {text!r}"
    return shape


def documented_json(command: str, surface_text: str | None = None) -> Obj | Seq:
    """The skeleton of `alexnet COMMAND --json` in public-surface.md's bullet of that command."""
    text = surface_text if surface_text is not None else SURFACE_MD.read_text(encoding="utf-8")
    for bullet in re.split(r"^- ", _section(text, "Subcommands"), flags=re.M):
        if re.match(rf"`alexnet {re.escape(command)}[ `]", bullet):
            found = re.search(r"JSON:\s*`([^`]*)`", bullet)
            assert found, f"public-surface.md's bullet of `alexnet {command}` shows no JSON skeleton"
            return parse_skeleton(found.group(1))
    raise AssertionError(f"public-surface.md has no bullet for `alexnet {command}`")


def check_shape(real: Any, shape: Any, where: str) -> None:
    if shape is None or real is None:          # a leaf, or a documented `|null`
        return
    if isinstance(shape, Seq):
        assert isinstance(real, list), f"{where}: documented as a list, the output has {real!r}"
        for i, item in enumerate(real):
            check_shape(item, shape.item, f"{where}[{i}]")
        return
    assert isinstance(real, dict), f"{where}: documented as an object, the output has {real!r}"
    if not shape.varying:
        missing, extra = sorted(set(shape.keys) - set(real)), sorted(set(real) - set(shape.keys))
        assert not missing and not extra, (f"{where}: documented, not in the output: {missing}; in the output, "
                                           f"not documented: {extra} (docs/public-surface.md)")
    for key, value in real.items():
        check_shape(value, shape.keys.get(key, shape.any_value), f"{where}.{key}")


def check_documented_json(command: str, document: Any) -> None:
    """`alexnet COMMAND --json`'s `document` has exactly the keys public-surface.md documents."""
    check_shape(document, documented_json(command), f"`alexnet {command} --json`")


def test_every_json_skeleton_parses(surface):
    shapes = {command: documented_json(command, surface) for command in sorted(JSON_DOCUMENTED)}
    prep, kernels, predict = shapes["prep"], shapes["kernels"], shapes["predict"]
    assert prep.keys["splits"].varying and set(prep.keys["splits"].any_value.keys) == {"count", "shards"}
    assert isinstance(kernels.keys["image_size"], Seq) and set(kernels.keys["columns"].item.keys) >= {"name", "color_scores"}
    assert set(predict.item.keys) == {"image", "top", "true_class"} and set(predict.item.keys["top"].item.keys) == {"class", "name", "index", "prob"}
    assert set(shapes["summary"].keys["layers"].item.keys) >= {"name", "output_shape", "neurons", "params"}


def test_check_shape_names_the_keys_that_differ():
    shape = parse_skeleton('{"a": int, "b": [{"c": f, "d": str|null}, ...], "m": {<split>: {"n"}}}')
    check_shape({"a": 1, "b": [{"c": 0.5, "d": None}], "m": {"train": {"n": 1}, "val": {"n": 2}}}, shape, "doc")
    with pytest.raises(AssertionError, match=r"doc\.b\[0\]: .*not in the output: \['d'\].*not documented: \['e'\]"):
        check_shape({"a": 1, "b": [{"c": 0.5, "e": 1}], "m": {}}, shape, "doc")
    with pytest.raises(AssertionError, match=r"doc\.m\.val: .*not documented: \['x'\]"):
        check_shape({"a": 1, "b": [], "m": {"val": {"n": 1, "x": 2}}}, shape, "doc")
    with pytest.raises(AssertionError, match="documented as a list"):
        check_shape({"a": 1, "b": {"c": 1}, "m": {}}, shape, "doc")


def test_every_json_document_is_checked_against_real_output():
    """Each documented --json document is compared with the output of a run that a test already
    makes (no run of its own here): the test calls check_documented_json on it."""
    sources = " ".join(path.read_text(encoding="utf-8") for path in (ROOT / "tests").glob("test_*.py"))
    checked = set(re.findall(r'check_documented_json\("([a-z]+)"', sources))
    assert JSON_DOCUMENTED <= checked, f"no test checks the --json of: {sorted(JSON_DOCUMENTED - checked)}"


# A release named in prose ("alexnet-cli 0.2", "before 0.2"): only the version the package has
# (pyproject, __init__) exists; nothing else has been released. Durations (0.2 s) are not versions.
_RELEASE = re.compile(r"\b(?:alexnet(?:-cli)?|before|since|until|after)\s+v?(\d+\.\d+(?:\.\d+)?)"
                      r"(?![\d.]|\s*(?:s|ms|%|x|GB|MB|epochs?|steps?)\b)", re.I)


def test_no_text_names_a_release_that_does_not_exist():
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "alexnet_cli").rglob("*.py")]
    named = [f"{path.relative_to(ROOT)}: {m.group(0)!r}" for path in files
             for m in _RELEASE.finditer(path.read_text(encoding="utf-8")) if m.group(1) != __version__]
    assert not named, ("these name a release other than this version, " + __version__ + ", and nothing else "
                       "has been released; say what distinguishes those files instead: " + "; ".join(named))
    assert _RELEASE.search("checkpoints before 0.2 load") and not _RELEASE.search("tries again after 0.2 s")
