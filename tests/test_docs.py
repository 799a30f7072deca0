"""docs/cli.md against the code and against the public surface (docs/public-surface.md).

docs/cli.md is generated from the typer app by docs/generate_cli_reference.py; these tests fail
when someone changes a command or an option without regenerating it, and when the app lacks a
subcommand or a flag that the public surface promises.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import typer
import typer.main

from alexnet_cli.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
CLI_MD = ROOT / "docs" / "cli.md"
SURFACE_MD = ROOT / "docs" / "public-surface.md"   # the public-surface promise
PROMISED = {"prep", "pca", "train", "eval", "kernels", "neighbors", "predict", "summary", "demo"}


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
