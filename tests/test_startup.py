"""The `alexnet` command starts without torch: --help, --version, every command's --help and
click's usage errors import no torch (2-3 s), and before DATA or CHECKPOINT is checked no h5py,
NumPy or PIL either; the library is imported
when a command's body runs (docs/performance.md, start-up). And what start-up does with a
missing argument and a SIGTERM.

Each check runs in a fresh interpreter: this test process has imported torch long ago."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from alexnet_cli import __version__

ROOT = Path(__file__).parents[1]
HEAVY = ("torch", "h5py", "numpy", "PIL", "matplotlib")


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


# Builds the click command and runs each invocation in-process, as the console script would
# (standalone_mode: its exit code), then prints which heavy modules each one had imported.
_INVOKE = """
import json, sys
from typer.main import get_command
from typer.testing import CliRunner
from alexnet_cli.cli.app import app
heavy = {heavy!r}
command = get_command(app)
seen = {{"import": [m for m in heavy if m in sys.modules]}}
codes = {{}}
for line in sys.argv[1:]:
    args = json.loads(line)
    result = CliRunner().invoke(app, args)
    codes[" ".join(args)] = [result.exit_code, result.output]
    seen[" ".join(args)] = [m for m in heavy if m in sys.modules]
print(json.dumps({{"commands": sorted(command.commands), "seen": seen, "codes": codes}}))
"""


def _invoke(*invocations: list[str]) -> dict:
    done = _python(_INVOKE.format(heavy=HEAVY), *(json.dumps(args) for args in invocations))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_help_version_and_every_commands_help_import_no_torch():
    commands = ["ablate", "codes", "demo", "eval", "features", "kernels", "neighbors", "pca", "predict", "prep",
                "report", "summary", "train"]
    got = _invoke(["--help"], ["--version"], *([name, "--help"] for name in commands))
    assert got["commands"] == commands                       # every command was built (and so its options)
    for invocation, (code, output) in got["codes"].items():
        assert code == 0, (invocation, output)
    assert got["codes"]["--version"][1] == f"alexnet {__version__}\n"
    assert "[default: 6]" in got["codes"]["neighbors --help"][1]           # defaults from torch-free modules
    assert "no-lrn, pool2" in got["codes"]["ablate --help"][1] and "64, 128, 256" in got["codes"]["codes --help"][1]
    assert got["seen"] == {name: [] for name in got["seen"]}, got["seen"]


def test_usage_errors_import_no_torch(tmp_path):
    """A missing argument, a bad option value after DATA (whose check runs first), a bad --crops
    (its check is the library's): exit code 2 before torch is imported."""
    data = str(tmp_path)
    got = _invoke(["train"], ["train", data, "--epochs", "many"], ["eval", "x.pt", data, "--crops", "3"],
                  ["codes", "x.pt", data, "--bits", "x"], ["summary", "--pool", "x"])
    for invocation, (code, output) in got["codes"].items():
        assert code == 2, (invocation, output)
    assert all("torch" not in seen for seen in got["seen"].values()), got["seen"]


def test_eval_without_data_says_data_is_missing(tmp_path):
    """Click fills eval's last argument (DATA) first: `eval x.pt` said CHECKPOINT was missing."""
    checkpoint = tmp_path / "x.pt"
    checkpoint.write_bytes(b"")
    for given in (str(checkpoint), str(tmp_path / "typo.pt")):       # a checkpoint, or a path that is not there
        done = _python("from alexnet_cli.cli import main; import sys; sys.argv[0] = 'alexnet'; main()",
                       "eval", given)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr == "Error: Missing argument 'DATA'. (see `alexnet eval --help`)\n"
    done = _python("from alexnet_cli.cli import main; import sys; sys.argv[0] = 'alexnet'; main()", "eval",
                   str(tmp_path))                       # a folder: the data, without a checkpoint
    assert done.returncode == 2
    assert done.stderr == "Error: Missing argument 'CHECKPOINT'. (see `alexnet eval --help`)\n"


# A SIGTERM sent while the command starts: in the imports (before the error boundary), while click
# checks an argument, in a command's body before it installs handlers of its own.
_SIGTERM_AT = {
    "import": """
class Term:
    def find_spec(self, name, path=None, target=None):
        if name == "alexnet_cli.cli.app":
            signal.raise_signal(SIGNUM)
sys.meta_path.insert(0, Term())
sys.argv = ["alexnet", "--help"]
""",
    "building": """
import typer.main
real = typer.main.get_command
def building(app):
    signal.raise_signal(SIGNUM)
    return real(app)
typer.main.get_command = building
sys.argv = ["alexnet", "--version"]
""",
    "root help": """
from typer.core import TyperGroup
TyperGroup.format_help = lambda self, ctx, formatter: signal.raise_signal(SIGNUM)
sys.argv = ["alexnet", "--help"]
""",
    "argument": """
import alexnet_cli.runlog
alexnet_cli.runlog.not_a_data_folder = lambda path: signal.raise_signal(SIGNUM)
sys.argv = ["alexnet", "pca", DATA]
""",
    "body": """
import types
fake = types.ModuleType("alexnet_cli.summary")          # no torch to import: the test stays fast
fake.meta_network = lambda config: None
fake.summarize = lambda model: signal.raise_signal(SIGNUM)
sys.modules["alexnet_cli.summary"] = fake
sys.argv = ["alexnet", "summary"]
""",
}


@pytest.mark.parametrize("where", list(_SIGTERM_AT))
@pytest.mark.parametrize("signum, word", [(signal.SIGTERM, "terminated"), (signal.SIGINT, "interrupted")])
def test_a_signal_while_starting_is_one_line(where, signum, word, tmp_path):
    """A SIGTERM then ended the process silently (exit code 143, nothing said); now as a Ctrl-C:
    one `Error:` line, exit code 128 + the signal."""
    code = (f"import signal, sys\nSIGNUM, DATA = {int(signum)}, {str(tmp_path)!r}\n" + _SIGTERM_AT[where]
            + "from alexnet_cli.cli import main\nmain()\n")
    done = _python(code)
    assert (done.returncode, done.stdout, done.stderr) == (128 + signum, "", f"Error: {word}\n")


def test_a_command_that_handles_sigterm_puts_the_start_up_handler_back():
    """stopping's handlers replace the start-up one while a job runs, and give it back after."""
    code = """
import signal
from alexnet_cli.cli import _stop_on_sigterm
from alexnet_cli.stopping import StopRequests, StopsAtOnce, process_stop
_stop_on_sigterm()
for stops in (StopRequests(), StopsAtOnce(lambda: "")):
    with stops:
        assert signal.getsignal(signal.SIGTERM) == stops._handle
    assert signal.getsignal(signal.SIGTERM) is process_stop
print("ok")
"""
    done = _python(code)
    assert done.stdout == "ok\n", done.stderr


def test_an_ignored_sigterm_stays_ignored():
    code = ("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "from alexnet_cli.cli import _stop_on_sigterm\n_stop_on_sigterm()\n"
            "print(signal.getsignal(signal.SIGTERM) == signal.SIG_IGN)")
    assert _python(code).stdout == "True\n"


def test_a_torchrun_rank_keeps_the_default_sigterm():
    """torchrun tears a failed job down with SIGTERM and expects its ranks to die at once."""
    code = ("import os, signal\nos.environ['WORLD_SIZE'] = '2'\n"
            "from alexnet_cli.cli import _stop_on_sigterm\n_stop_on_sigterm()\n"
            "print(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)")
    assert _python(code).stdout == "True\n"


def test_loading_a_network_does_not_import_the_compiler(tmp_path, make_checkpoint):
    """load_model builds the network on the meta device and assigns the file's weights; drawing
    initial weights there would import torch._dynamo (about 3 s of every eval, predict, features
    or neighbors start) to throw them away."""
    path = make_checkpoint(tmp_path / "model.pt")
    done = _python("import sys; from alexnet_cli.checkpoint import load_model; "
                   "net = load_model(sys.argv[1]).model; "
                   "print(sum(p.numel() for p in net.parameters()), 'torch._dynamo' in sys.modules)", str(path))
    assert done.returncode == 0, done.stderr
    count, dynamo = done.stdout.split()
    assert int(count) > 50_000_000 and dynamo == "False"


def test_summary_does_not_import_the_compiler():
    """`alexnet summary` runs one image through the network on the meta device; elementwise
    operations on meta tensors import torch._dynamo (about 3 s of its 5), so it runs on weights
    of zeros that take no memory instead, with the same shapes."""
    done = _python("import sys; from alexnet_cli.summary import meta_network, summarize; "
                   "from alexnet_cli.config import ModelConfig; rows = summarize(meta_network(ModelConfig())); "
                   "print(sum(r.params for r in rows), rows[-1].output_shape, 'torch._dynamo' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["60965224", "(1000,)", "False"]


def test_summary_of_a_checkpoint_does_not_import_the_compiler(tmp_path, make_checkpoint):
    """`alexnet summary CHECKPOINT` runs its image through the loaded weights on the CPU; it stays
    off torch._dynamo as the summary of a recipe does."""
    path = make_checkpoint(tmp_path / "model.pt")
    done = _python("import sys; from alexnet_cli.cli import main; sys.argv = ['alexnet', 'summary', '--json', "
                   "sys.argv[1]]; import atexit; atexit.register(lambda: print('torch._dynamo' in sys.modules, "
                   "file=sys.stderr)); main()", str(path))
    assert done.returncode == 0, done.stderr
    assert '"checkpoint"' in done.stdout and done.stderr.split() == ["False"]
