"""The Python documentation runs and says what the commands call.

docs/python.md's code blocks are run in order, in one namespace, in an empty folder, as a
notebook would run them (tiny generated data, two training steps: about ten seconds on the
CPU). The README's table "command -> library call" names functions that exist and that the
command's module really calls.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

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


def test_readme_table_names_what_each_command_calls():
    table = readme_table()
    group = typer.main.get_command(app)
    assert set(table) == set(group.commands), "the README's table and the app's commands differ"
    for command, calls in table.items():
        assert calls, f"the README names no library call for `alexnet {command}`"
        cli_module = importlib.import_module(group.commands[command].callback.__module__)
        source = Path(cli_module.__file__).read_text(encoding="utf-8")
        used = [cli_module] + [importlib.import_module(f"alexnet_cli.cli.{name}")     # e.g. cli/options.py
                               for name in re.findall(r"^from alexnet_cli\.cli\.(\w+) import", source, flags=re.M)]
        for module, name in calls:
            function = getattr(importlib.import_module(f"alexnet_cli.{module}"), name)
            imported_in_body = re.search(rf"^\s+from alexnet_cli\.{module} import .*\b{name}\b", source, flags=re.M)
            assert imported_in_body or any(value is function for m in used for value in vars(m).values()), \
                f"the README says `alexnet {command}` calls {module}.{name}; {cli_module.__name__} does not use it"
