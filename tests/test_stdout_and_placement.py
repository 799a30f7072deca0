"""Standard output that cannot take the output, and devices a run would not use, are one `Error:`
line each.

- stdout closed (`alexnet summary --json >&-`): the write raised an AttributeError on Python's
  None sys.stdout, shown as a bug; without --json rich wrote nothing and the command exited 0.
- stdout full (`> /dev/full`): "No space left on device", no file named.
- `--devices cpu,cpu` with `--parallel single` was ignored without a word.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alexnet_cli.cli.app import app
from alexnet_cli.config import resolve_model_config, resolve_train_config
from alexnet_cli.errors import UsageError
from alexnet_cli.train import RunOptions, train

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _alexnet(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alexnet_cli", *args], stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120, **kwargs)


def test_a_closed_stdout_is_one_error_line_for_json_and_no_error_for_the_tables():
    """--json to a closed stdout (`>&-`) said "AttributeError: 'NoneType' ..."; the tables for
    people are dropped as before, so that a run started detached does not end in an error
    after its work is saved (the diff review)."""
    result = _alexnet(["summary", "--json"], preexec_fn=lambda: os.close(1))     # the shell's >&-
    assert result.returncode == 1
    assert result.stderr == "Error: standard output is closed: nothing to write the JSON to\n"
    result = _alexnet(["summary"], preexec_fn=lambda: os.close(1))
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.parametrize("json_flag, what", [(["--json"], "the JSON"), ([], "the output")])
def test_a_full_stdout_is_named(full_device, json_flag, what):
    with open(full_device, "w") as stdout:
        result = _alexnet(["summary", *json_flag], stdout=stdout)
    assert result.returncode == 1
    assert result.stderr == (f"Error: cannot write {what} to standard output: the device is full "
                             "(No space left on device)\n")


def test_a_broken_pipe_stays_quiet_for_the_table():
    """`alexnet summary | head -1`: the reader goes away; rich's handling (exit 1, no line) is kept."""
    reader = subprocess.Popen(["true"], stdin=subprocess.PIPE)
    reader.wait()
    result = _alexnet(["summary"], stdout=reader.stdin)
    reader.stdin.close()
    assert "Traceback" not in result.stderr and "standard output" not in result.stderr


@pytest.mark.parametrize("parallel", ["single", "data"])
def test_devices_outside_model_parallel_are_refused(tiny_data, tmp_path, parallel):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", str(tiny_data), "--out", str(out), "--devices", "cpu,cpu",
                                 "--parallel", parallel, "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert result.stderr == (f"Error: --devices is for --parallel model (one device per column); this run is "
                             f"{parallel} (use --device for a single or data parallel run)\n")
    assert not out.exists()


def test_the_library_refuses_unused_devices_too(tiny_data, tmp_path):
    with pytest.raises(UsageError, match="devices is for `parallel` model"):
        train(tiny_data, tmp_path / "run", resolve_model_config("paper"), resolve_train_config("paper", epochs=1),
              RunOptions(device="cpu", parallel="single", devices=("cpu", "cpu")))
    assert not (tmp_path / "run").exists()
