"""Write docs/cli.md, the reference of every `alexnet` command and option, from the typer app.

The reference is generated, never written by hand, so that it cannot drift from the code:
    python docs/generate_cli_reference.py            # rewrite docs/cli.md
    python docs/generate_cli_reference.py --check    # exit 1 if docs/cli.md is stale (CI)
tests/test_docs.py fails when docs/cli.md differs from what this script would write.

It reads the click command that typer builds (`typer.main.get_command(app)`; typer 0.29
vendors click as typer._click) and renders plain Markdown: the usage line, the help text and
one table per help panel, for the root and each subcommand in the order the app registers
them. Nothing depends on the terminal (no rich rendering, no width, no colour).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

import typer
import typer.main

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "cli.md"
REGENERATE = "python docs/generate_cli_reference.py"


def load_app() -> typer.Typer:
    """The `alexnet` typer app; works from a checkout that is not pip-installed too."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from alexnet_cli.cli.app import app
    return app


# -- Markdown text ---------------------------------------------------------------------------

def _escape(text: str, *, table: bool) -> str:
    """Escape Markdown in help text, leaving `code spans` as written (but for `|` in tables)."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no code spans at all
        parts = [text]
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:  # prose
            for ch in "\\*<":
                part = part.replace(ch, "\\" + ch)
        if table:
            part = part.replace("|", "\\|")
        out.append(part)
    return "`".join(out)


def _paragraphs(help_text: str | None) -> list[str]:
    """Click's help text as paragraphs, each on one line (click stops reading at a form feed)."""
    text = (help_text or "").split("\f")[0]
    paragraphs = []
    for block in text.strip().split("\n\n"):
        words = [w for w in block.split() if w != "\b"]  # "\b": click's no-rewrap marker
        if words:
            paragraphs.append(" ".join(words))
    return paragraphs


def _cell(text: str) -> str:
    return _escape(" ".join(text.split()), table=True)


def _code(text: str) -> str:
    return f"`{text}`".replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# -- One parameter ---------------------------------------------------------------------------

def _names(param) -> str:
    """All spellings, e.g. `--bf16` / `--no-bf16`, with the metavar if the option declares one."""
    if param.param_type_name == "argument":
        name = param.metavar or param.name
        return _code(name + ("..." if param.metavar is None and param.nargs != 1 else ""))
    opts = [_code(o) for o in param.opts]
    if param.metavar and not param.is_flag:
        opts = [_code(f"{o} {param.metavar}") for o in param.opts]
    return ", ".join(opts) + "".join(f" / {_code(o)}" for o in param.secondary_opts)


def _type(param, ctx: typer.Context) -> str:
    """What the user types: `flag`, a type (`int`, `dir`, ...), the choices, a range, repeats."""
    if param.param_type_name == "option" and (param.is_flag or param.count):
        return "count" if param.count else "flag"
    label = param.display_type(ctx).removeprefix("<").removesuffix(">")
    if label.startswith("list[") and label.endswith("]"):  # each value is one element
        label = label[len("list["):-1].lower()
    if getattr(param.type_descriptor, "is_choice", False):
        label = ", ".join(_code(c) for c in label.split("|"))
    else:
        label = _cell(label)
    if param.min is not None or param.max is not None:
        low = "" if param.min is None else f"{param.min}<="
        high = "" if param.max is None else f"<={param.max}"
        label = label.removesuffix(" range") + ", " + _code(f"{low}x{high}" if low and high else
                                                          f"x>={param.min}" if low else f"x<={param.max}")
    if param.param_type_name == "option" and param.multiple:
        label += ", repeatable"
    elif param.param_type_name == "argument" and param.nargs == -1:
        label += ", one or more" if param.required else ", any number"
    return label


def _default(param, ctx: typer.Context) -> str:
    """The default as the user would type it; blank when there is none worth showing."""
    if param.required:
        return "required"
    if isinstance(param.show_default, str):
        return _cell(param.show_default)
    if not param.show_default:
        return ""
    value = param.get_default(ctx, call=False)
    if callable(value):
        return "(dynamic)"
    if param.param_type_name == "option" and param.is_flag and not param.count:
        if param.secondary_opts and value is not None:  # a --x/--no-x pair: the spelling that is on
            return _code((param.opts if value else param.secondary_opts)[0])
        return ""  # a plain flag is off unless given
    if value is None or value == "" or value == [] or value == ():
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(_code(str(getattr(v, "value", v))) for v in value)
    return _code(str(getattr(value, "value", value)))


def _description(param) -> str:
    text = _cell(param.help or "")
    if param.envvar:
        names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar)
        text += " Environment: " + ", ".join(_code(n) for n in names) + "."
    return text.strip()


# -- One command -----------------------------------------------------------------------------

def _panels(command, ctx: typer.Context) -> list[tuple[str, list]]:
    """Parameters grouped as typer's help groups them: Arguments, Options, then named panels."""
    panels: dict[str, list] = {"Arguments": [], "Options": []}
    help_names = set(ctx.help_option_names)
    for param in command.get_params(ctx):
        if param.hidden or (param.param_type_name == "option" and set(param.opts) <= help_names):
            continue
        default_panel = "Arguments" if param.param_type_name == "argument" else "Options"
        panels.setdefault(param.rich_help_panel or default_panel, []).append(param)
    return [(title, params) for title, params in panels.items() if params]


def _render_params(command, ctx: typer.Context) -> list[str]:
    lines = []
    for title, params in _panels(command, ctx):
        first = "Argument" if all(p.param_type_name == "argument" for p in params) else "Option"
        rows = [[_names(p), _type(p, ctx), _default(p, ctx), _description(p)] for p in params]
        lines += ["", f"### {_escape(title, table=False)}", ""]
        lines += _table([first, "Type", "Default", "Description"], rows)
    return lines


def _anchor(command_path: str) -> str:
    """GitHub's anchor for the heading "## `alexnet prep`"."""
    return command_path.lower().replace(" ", "-")


def _render_command(command, ctx: typer.Context) -> list[str]:
    lines = [f"## `{ctx.command_path}`", "", "```", " ".join([ctx.command_path, *command.collect_usage_pieces(ctx)]),
             "```"]
    if command.deprecated:
        lines += ["", "**Deprecated.**" + (f" {_escape(command.deprecated, table=False)}"
                                           if isinstance(command.deprecated, str) else "")]
    for paragraph in _paragraphs(command.help) + _paragraphs(command.epilog):
        lines += ["", _escape(paragraph, table=False)]
    lines += _render_params(command, ctx)
    return lines


def _subcommands(group, ctx: typer.Context) -> list[tuple[str, object]]:
    """The visible subcommands, in the order the app registers them."""
    subs = [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)]
    return [(name, cmd) for name, cmd in subs if cmd is not None and not cmd.hidden]


def _context(command, name: str, parent: typer.Context | None = None) -> typer.Context:
    return typer.Context(command, info_name=name, parent=parent, **(command.context_settings or {}))


def render(app: typer.Typer) -> str:
    """The whole reference as Markdown: the root command, its subcommand index, each subcommand."""
    root = typer.main.get_command(app)
    ctx = _context(root, root.name or "alexnet")
    subs = _subcommands(root, ctx) if hasattr(root, "list_commands") else []
    help_opts = " / ".join(_code(o) for o in sorted(ctx.help_option_names, key=len))
    lines = [
        f"<!-- Generated by docs/generate_cli_reference.py: do not edit. Regenerate: {REGENERATE} -->",
        "",
        f"# `{ctx.command_path}` command-line reference",
        "",
        "This file is generated from the typer app (`alexnet_cli/cli/app.py`) by",
        "`docs/generate_cli_reference.py`; do not edit it by hand. After changing a command or",
        "an option, regenerate it with",
        "",
        "```sh",
        REGENERATE,
        "```",
        "",
        f"`tests/test_docs.py` fails while it is stale (`{REGENERATE} --check` says so too).",
        f"Every command also takes {help_opts}.",
        "",
        "Exit codes: 0 success; 2 bad usage: an unknown flag, a missing argument, a path that does",
        "not exist or is of the wrong kind (a data folder given as a CHECKPOINT or a RUN, a folder as",
        "an IMAGE), or an option value that is not allowed (`--pool 5`, `--crops 3`); 1 any other",
        "failure, a damaged file among them (docs/public-surface.md has the whole list); 130",
        "interrupted (Ctrl-C). While `train`, `ablate` or `demo` trains, Ctrl-C or SIGTERM",
        "stops it after the step in progress, saved first (exit 130, or 143 for SIGTERM; a second",
        "Ctrl-C stops at once); `features`, `codes`, `prep`, `pca`'s pass and `neighbors` while it",
        "computes features stop where they are, keeping what they finished (130 or 143); each says",
        "what it kept and how to continue. A SIGTERM at any other moment prints `Error: terminated`",
        "(unless SIGTERM is ignored, or under torchrun, whose ranks keep the default)",
        "(exit 143). A failure prints one line starting `Error:` on stderr and nothing",
        "else (`alexnet --debug COMMAND ...` or `ALEXNET_DEBUG=1` shows the traceback).",
        "",
    ]
    lines += _render_command(root, ctx)
    if subs:
        rows = [[f"[{_code(name)}](#{_anchor(f'{ctx.command_path} {name}')})",
                 _cell((_paragraphs(cmd.short_help or cmd.help) or [""])[0])] for name, cmd in subs]
        lines += ["", "### Commands", ""] + _table(["Command", "Description"], rows)
    for name, cmd in subs:
        lines += [""] + _render_command(cmd, _context(cmd, name, parent=ctx))
    return "\n".join(lines) + "\n"


# -- Entry point -----------------------------------------------------------------------------

def check(path: Path, expected: str) -> int:
    """0 if `path` holds `expected`; else 1, with the command to run and the start of a diff."""
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if current == expected:
        return 0
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    state = "is missing" if not path.exists() else "is stale (it differs from the typer app)"
    print(f"{name} {state}: run `{REGENERATE}` and commit the result.", file=sys.stderr)
    diff = list(difflib.unified_diff(current.splitlines(), expected.splitlines(),
                                     f"{name} (committed)", f"{name} (generated)", lineterm="", n=1))
    for line in diff[:40]:
        print(line, file=sys.stderr)
    if len(diff) > 40:
        print(f"... ({len(diff) - 40} more diff lines)", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docs/cli.md from the typer app.")
    parser.add_argument("--check", action="store_true", help="Do not write; exit 1 if docs/cli.md is stale.")
    args = parser.parse_args(argv)
    text = render(load_app())
    if args.check:
        return check(OUTPUT, text)
    with open(OUTPUT, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
