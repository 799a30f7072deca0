"""The Python documentation runs and says what the commands call.

docs/python.md's code blocks are run in order, in one namespace, in an empty folder, as a
notebook would run them (tiny generated data, two training steps: about ten seconds on the
CPU). The README's table "command -> library call" names functions that exist and that the
command really calls: a call in the command's function (or in a function of alexnet_cli/cli/
it calls), read from its syntax tree, not an import or a line of text that names it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest
import typer.main

from alexnet_cli.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
PYTHON_MD = ROOT / "docs" / "python.md"
README = ROOT / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.slow
def test_python_page_runs_on_tiny_data(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(PYTHON_MD.read_text(encoding="utf-8"))
    assert len(blocks) >= 4, "docs/python.md lost its code blocks"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/python.md (block {i + 1})", "exec"), namespace)
    out, err = capsys.readouterr()
    work = tmp_path / "alexnet-python"
    assert "{'train': 32, 'val': 8}" in out                        # as the page says it prints
    assert "prep: 40/40 img" in err and "pca: 32/32 img" in err      # the ConsoleReporter's lines
    assert (work / "data" / "pca.json").is_file()                    # write_pca, not compute_pca, wrote it
    summary = namespace["summary"]
    assert summary["step"] == 2 and not summary["finished"] and namespace["checkpoint"].is_file()
    assert namespace["result"].n == 8 and set(namespace["result"].to_json()) >= {"top1_error", "top5_error"}
    assert (work / "per-class.csv").is_file() and (work / "predictions.png").is_file()
    assert [len(p.top) for p in namespace["predictions"]] == [3, 3]
    assert [c.name for c in namespace["kernels"].columns] == ["A", "B"] and (work / "kernels.png").is_file()


def readme_table() -> dict[str, list[tuple[str, str]]]:
    """{command: [(module, name), ...]} from the README's "command | library call" table."""
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1].split("\n## ", 1)[0]
    table: dict[str, list[tuple[str, str]]] = {}
    for command, calls in re.findall(r"^\| `alexnet ([a-z]+)` \| (.*) \|$", section, flags=re.M):
        spans = re.findall(r"`([^`]*)`", calls)
        table[command] = [m for span in spans for m in re.findall(r"(?<![\w.])([a-z_]+)\.([a-z_]+)\b", span)]
    return table


def _imported_names(tree: ast.AST) -> dict[str, Any]:
    """The names that the import statements anywhere in `tree` bind (the commands import the
    library in their bodies, so that --help starts without torch)."""
    names: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            module = importlib.import_module(node.module)
            for alias in node.names:
                value = getattr(module, alias.name, None)
                names[alias.asname or alias.name] = (value if value is not None
                                                     else importlib.import_module(f"{node.module}.{alias.name}"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name if alias.asname else alias.name.split(".")[0]
                names[alias.asname or top] = importlib.import_module(top)
    return names


def _target(node: ast.expr, names: dict[str, Any]) -> Any:
    """What a call's `f` or `m.f` is, by the names in scope; None for anything else."""
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        owner = _target(node.value, names)
        return None if owner is None else getattr(owner, node.attr, None)
    return None


def called_functions(function: Callable, within: tuple[str, ...] = ("alexnet_cli.cli",),
                     seen: set | None = None) -> list[Any]:
    """What `function` calls (`f(...)`, `m.f(...)`, with the names its own imports bind, then its
    module's globals), and what the functions of modules in `within` that it calls call in turn.
    Only calls count: an import, a mention in a string or a docstring, or a function passed
    around uncalled is not a call."""
    function, seen = inspect.unwrap(function), set() if seen is None else seen
    if function in seen:
        return []
    seen.add(function)
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    names = {**function.__globals__, **_imported_names(tree)}
    called = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (target := _target(node.func, names)) is not None:
            called.append(target)
            if inspect.isfunction(target) and target.__module__.startswith(within):
                called += called_functions(target, within, seen)
    return called


def test_readme_table_names_what_each_command_calls():
    table = readme_table()
    group = typer.main.get_command(app)
    assert set(table) == set(group.commands), "the README's table and the app's commands differ"
    for command, calls in table.items():
        assert calls, f"the README names no library call for `alexnet {command}`"
        callback = inspect.unwrap(group.commands[command].callback)
        called = called_functions(callback)
        for module, name in calls:
            function = getattr(importlib.import_module(f"alexnet_cli.{module}"), name)
            assert any(target is function for target in called), \
                (f"the README says `alexnet {command}` calls {module}.{name}; {callback.__module__}.{callback.__name__} "
                 "does not call it")


def _calls_evaluate_in_a_helper():
    from alexnet_cli import evaluate as evaluate_module
    return evaluate_module.evaluate([], ".")


def test_the_readme_check_wants_a_call_not_an_import():
    """The check above took an indented `from alexnet_cli.evaluate import ... evaluate` line
    anywhere in the command's module as proof of a call: a command that imported the function
    and never called it, or whose module mentioned it only in another function or a docstring,
    passed. Only a call counts now, in the command or in a helper it calls."""
    from alexnet_cli.evaluate import evaluate

    def imports_only():
        """    from alexnet_cli.evaluate import evaluate"""
        from alexnet_cli.evaluate import evaluate
        return evaluate.__name__, [evaluate]

    def calls_it():
        from alexnet_cli.evaluate import evaluate as run_eval
        return run_eval([], ".")

    def through_a_helper():
        return _calls_evaluate_in_a_helper()

    here = (__name__,)
    assert not any(f is evaluate for f in called_functions(imports_only, here))
    assert any(f is evaluate for f in called_functions(calls_it, here))
    assert any(f is evaluate for f in called_functions(through_a_helper, here))
    assert not any(f is evaluate for f in called_functions(through_a_helper))   # helpers outside cli/ not followed
