"""The `alexnet` command's frame (docs/public-surface.md): help, version, `summary`, exit codes and the one
error boundary of alexnet_cli/cli/app.py (one `Error:` line, exit 1; bad usage, exit 2)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alexnet_cli import __version__
from alexnet_cli.cli.app import app
from alexnet_cli.errors import AlexnetError
from test_docs import check_documented_json

PAPER_NEURONS = {"conv1": 290_400, "conv2": 186_624, "conv3": 64_896, "conv4": 64_896, "conv5": 43_264,
                 "fc6": 4096, "fc7": 4096, "fc8": 1000}
PAPER_PARAMS = 60_965_224


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def summary_json(runner: CliRunner, *args: str) -> dict:
    result = runner.invoke(app, ["summary", "--json", *args])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    doc = json.loads(result.stdout)            # exactly one JSON document, nothing else on stdout
    check_documented_json("summary", doc)
    return doc


def test_help_lists_summary(runner):
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for word in ("summary", "--debug", "--version"):
        assert word in result.stdout


def test_no_arguments_shows_help(runner):
    result = runner.invoke(app, [])
    assert result.exit_code == 2 and "summary" in result.stdout


def test_version(runner):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"alexnet {__version__}"


def test_summary_json_has_the_documented_shape(runner):
    data = summary_json(runner)
    assert isinstance(data["params"], int) and data["params"] == PAPER_PARAMS
    for layer in data["layers"]:
        assert {"name", "output_shape", "neurons", "params"} <= set(layer)
        assert isinstance(layer["output_shape"], list) and isinstance(layer["neurons"], int)
    layers = {layer["name"]: layer for layer in data["layers"]}
    assert {name: layers[name]["neurons"] for name in PAPER_NEURONS} == PAPER_NEURONS
    assert layers["conv1"]["output_shape"] == [96, 55, 55] and layers["pool5"]["output_shape"] == [256, 6, 6]
    assert sum(layer["params"] for layer in data["layers"]) == data["params"]
    assert "rnorm2" not in layers
    assert data["input_shape"] == [3, 224, 224] and math.prod(data["input_shape"]) == 150_528   # 4.5


def test_summary_code_recipe_lists_rnorm2(runner):
    result = runner.invoke(app, ["summary", "--recipe", "code"])
    assert result.exit_code == 0, result.output
    assert "rnorm2" in result.stdout and "60,965,224" in result.stdout
    layers = [layer["name"] for layer in summary_json(runner, "--recipe", "code")["layers"]]
    assert layers.index("lrn2") < layers.index("rnorm2") < layers.index("pool2")


def test_summary_table_for_people(runner):
    result = runner.invoke(app, ["summary"])
    assert result.exit_code == 0
    for text in ("conv1", "fc8", "290,400", "37,752,832", "60,965,224"):
        assert text in result.stdout


def test_summary_ablation_flags(runner):
    one_column = {layer["name"]: layer for layer in summary_json(runner, "--columns", "1", "--num-classes", "10")["layers"]}
    assert one_column["conv1"]["output_shape"] == [48, 55, 55]
    assert one_column["conv5"]["output_shape"] == [256, 13, 13]
    assert one_column["fc8"]["output_shape"] == [10]
    no_lrn = [layer["name"] for layer in summary_json(runner, "--no-lrn", "--pool", "2")["layers"]]
    assert "lrn1" not in no_lrn and "lrn2" not in no_lrn and "pool1" in no_lrn


def test_bad_flag_is_a_usage_error(runner):
    result = runner.invoke(app, ["summary", "--bogus"])
    assert result.exit_code == 2
    assert "No such option" in result.stderr and "--bogus" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("args,words", [
    (["summary", "--pool", "5"], "pool"), (["summary", "--columns", "3"], "columns"),
    (["summary", "--activation", "gelu"], "activation"), (["summary", "--recipe", "bogus"], "recipe"),
    (["summary", "--dropout", "1.5"], "dropout"), (["eval", "--crops", "5", ".", "."], "crops"),
])
def test_bad_value_is_one_error_line_and_a_usage_error(runner, args, words):
    """A value the option does not allow is bad usage (docs/public-surface.md: exit 2), told in one line,
    whether typer or our own validation catches it."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and words in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_debug_lets_the_exception_through(runner):
    result = runner.invoke(app, ["--debug", "summary", "--pool", "5"])
    assert result.exit_code == 1
    assert isinstance(result.exception, AlexnetError)
    result = runner.invoke(app, ["summary", "--pool", "5"], env={"ALEXNET_DEBUG": "1"})
    assert isinstance(result.exception, AlexnetError)


def test_unexpected_exception_is_one_line_with_its_type(runner, monkeypatch):
    def broken(model):
        raise ValueError("boom\nsecond line")

    monkeypatch.setattr("alexnet_cli.summary.summarize", broken)
    result = runner.invoke(app, ["summary"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines == ["Error: ValueError: boom second line (run `alexnet --debug <command> ...` or set "
                     "ALEXNET_DEBUG=1 for the traceback)"]
    assert isinstance(runner.invoke(app, ["--debug", "summary"]).exception, ValueError)


def test_debug_shows_an_eoferror_too(runner, monkeypatch):
    """click turns an EOFError that leaves a command into its Abort ("aborted"): --debug shows it."""
    def empty(model):
        raise EOFError("No data left in file")

    monkeypatch.setattr("alexnet_cli.summary.summarize", empty)
    result = runner.invoke(app, ["summary"])
    assert result.exit_code == 1 and "Error: EOFError: No data left in file" in result.stderr
    assert isinstance(runner.invoke(app, ["--debug", "summary"]).exception, EOFError)


def test_interrupt_exits_130(runner, monkeypatch):
    def interrupted(model):
        raise KeyboardInterrupt

    monkeypatch.setattr("alexnet_cli.summary.summarize", interrupted)
    result = runner.invoke(app, ["summary"])
    assert result.exit_code == 130 and result.stderr.strip() == "Error: interrupted"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("ALEXNET_DEBUG", None)
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)


def test_python_dash_m():
    done = _run(sys.executable, "-m", "alexnet_cli", "--help")
    assert done.returncode == 0, done.stderr
    assert "summary" in done.stdout


def test_console_script_error_boundary():
    # a real process: exit status 2 or 1, one `Error:` line, no traceback
    script = Path(sys.executable).parent / "alexnet"
    if not script.exists():
        pytest.skip("the package is not installed in this interpreter's environment")
    for args, code in ((["summary", "--pool", "5"], 2), (["pca", str(Path(__file__).parent)], 1)):
        failed = _run(str(script), *args)   # a bad value (usage), then a folder that holds no data
        assert failed.returncode == code and failed.stdout == "", (args, failed.stderr)
        lines = failed.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in failed.stderr


def test_an_interrupt_turned_into_another_error_still_exits_130(runner, monkeypatch):
    """torch.save's writer replaces a Ctrl-C inside it with its own RuntimeError."""
    def interrupted_inside_a_library(model):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")

    monkeypatch.setattr("alexnet_cli.summary.summarize", interrupted_inside_a_library)
    result = runner.invoke(app, ["summary"])
    assert result.exit_code == 130 and result.stderr.strip() == "Error: interrupted"


def test_an_os_error_names_the_file_and_the_reason(runner, monkeypatch):
    def denied(model):
        raise PermissionError(13, "Permission denied", "/data/out/.x.tmp")

    monkeypatch.setattr("alexnet_cli.summary.summarize", denied)
    result = runner.invoke(app, ["summary"])
    assert result.exit_code == 1 and result.stderr.strip() == "Error: /data/out/.x.tmp: Permission denied"


def test_click_usage_errors_are_one_line_naming_the_help(tmp_path):
    for args, words in ((["prep", str(tmp_path / "nosuch"), str(tmp_path / "out")], "does not exist"),
                        (["summary", "--bogus"], "No such option"), (["prep"], "Missing argument")):
        done = _run(sys.executable, "-m", "alexnet_cli", *args)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr
        assert done.stderr.startswith("Error: ") and words in done.stderr and "--help`)" in done.stderr


def test_summary_names_the_ablations_it_shows(runner):
    """--activation tanh or --dropout 0 change no shape or count: the title and JSON say what changed."""
    result = runner.invoke(app, ["summary", "--activation", "tanh", "--dropout", "0", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["changed"] == {"activation": "tanh", "dropout": 0.0}
    assert json.loads(runner.invoke(app, ["summary", "--json"]).stdout)["changed"] == {}
    text = runner.invoke(app, ["summary", "--pool", "2"], env={"COLUMNS": "200"}).stdout
    assert "paper recipe, --pool 2" in text


def test_under_torchrun_other_ranks_tag_their_error(runner, monkeypatch):
    def broken(model):
        raise AlexnetError("the loss became NaN")

    monkeypatch.setattr("alexnet_cli.summary.summarize", broken)
    result = runner.invoke(app, ["summary"], env={"WORLD_SIZE": "2", "RANK": "1"})
    assert result.exit_code == 1 and result.stderr.strip() == "Error: (rank 1) the loss became NaN"
    result = runner.invoke(app, ["summary"], env={"WORLD_SIZE": "2", "RANK": "0"})
    assert result.stderr.strip() == "Error: the loss became NaN"


def test_ctrl_c_while_torch_is_imported_is_one_line(tmp_path):
    """F11: the imports (torch: 2-3 s) ran before the error boundary, so a Ctrl-C then printed
    a traceback. A finder that raises KeyboardInterrupt on `import torch` stands in for the key."""
    code = ("import sys\n"
            "class CtrlC:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch':\n"
            "            raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, CtrlC())\n"
            "sys.argv = ['alexnet', 'summary']\n"
            "from alexnet_cli.cli import main\n"
            "main()\n")
    done = _run(sys.executable, "-c", code)
    assert done.returncode == 130 and done.stdout == "", done.stderr
    assert done.stderr == "Error: interrupted\n"


def test_the_console_script_is_the_light_entry_point():
    import tomllib

    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["alexnet"] == "alexnet_cli.cli:main"
    done = _run(sys.executable, "-c", "import sys, alexnet_cli.cli; print('torch' in sys.modules)")
    assert done.stdout.strip() == "False", done.stderr


def test_json_output_is_strict_json(capsys):
    """F7: a NaN is an error, never `NaN` on stdout (not JSON)."""
    from alexnet_cli.cli.common import print_json

    with pytest.raises(AlexnetError, match="NaN or infinite"):
        print_json({"prob": math.nan})
    with pytest.raises(AlexnetError):
        print_json([{"score": math.inf}])
    assert capsys.readouterr().out == ""


def test_neighbors_refuses_an_infinite_memory_budget_before_any_work(runner, tmp_path, monkeypatch):
    """F6: --memory-mb inf failed with internal text after computing the features."""
    monkeypatch.setattr("alexnet_cli.neighbors.find_neighbors", lambda *a, **k: pytest.fail("features computed"))
    image = tmp_path / "q.png"
    image.write_bytes(b"x")
    for value in ("inf", "nan"):
        result = runner.invoke(app, ["neighbors", str(image), str(tmp_path), "--query", str(image),
                                     "--memory-mb", value])
        assert result.exit_code == 2 and "--memory-mb" in result.stderr, result.output



def test_summary_counts_without_allocating_weights(runner):
    """Shapes and counts need no real weights (meta device): a class count whose fc8 could never
    be allocated (1.6 PB) is still counted, not an allocator's error."""
    n = 99_999_999_999
    layers = {layer["name"]: layer for layer in summary_json(runner, "--num-classes", str(n))["layers"]}
    assert layers["fc8"]["output_shape"] == [n] and layers["fc8"]["params"] == 4096 * n + n
    assert layers["fc7"]["params"] == 4096 * 4096 + 4096


def _early_breaks(lines: list[str], width: int) -> list[str]:
    """The lines of wrapped text that end although the next line's first word would have fitted:
    a line break from the source, not from the terminal's width."""
    return [line for line, after in zip(lines, lines[1:])
            if line.strip() and after.strip() and len(line.rstrip()) + 1 + len(after.split()[0]) <= width]


def test_help_wraps_only_at_the_terminal_width(runner):
    """At 80 columns a description breaks only where the next word does not fit (the command list
    kept the docstrings' source line breaks: "eval (1 and 10" then a break, in demo's)."""
    listing = runner.invoke(app, ["--help"], env={"COLUMNS": "80"}).stdout.splitlines()
    rows = [line for line in listing if line.startswith("│ ") and not line.startswith("│ -")]   # not --debug's
    start = rows[0].index(rows[0].split()[2])           # where the descriptions begin: after "│ demo"
    end = rows[0].rindex("│") - 1                       # and end: before the padding and the border
    described: dict[str, list[str]] = {}                # each command's description, line by line
    for line in rows:
        if line[2:start].strip():
            name = line[2:start].strip()
        described.setdefault(name, []).append(line[start:end])
    commands = list(described)
    assert len(commands) == 13 and max(len(lines) for lines in described.values()) >= 3
    for name, lines in described.items():
        assert _early_breaks(lines, end - start) == [], name
    for width in (80, 120):
        for name in commands:
            text = runner.invoke(app, [name, "--help"], env={"COLUMNS": str(width)}).stdout.splitlines()
            top = text[text.index(next(t for t in text if "Usage:" in t)) + 2:]
            top = top[:next(i for i, t in enumerate(top) if t.startswith("╭"))]
            assert _early_breaks([t[1:] for t in top], width - 2) == [], (name, width)


def test_summary_names_changed_settings_by_their_flags(runner):
    """The title says what changed as the user asked for it, not by the config's field names;
    --json keeps the field names (docs/public-surface.md)."""
    args = ["summary", "--no-lrn", "--pool", "2", "--bias-init", "0.1", "--lrn-alpha-over-n"]
    text = " ".join(runner.invoke(app, args, env={"COLUMNS": "200"}).stdout.split())
    assert "AlexNet (paper recipe, --no-lrn, --lrn-alpha-over-n, --pool 2, --bias-init 0.1)" in text
    for field in ("lrn False", "lrn_alpha_over_n", "pool_kernel", "bias_fill"):
        assert field not in text
    changed = json.loads(runner.invoke(app, [*args, "--json"]).stdout)["changed"]
    assert changed == {"lrn": False, "lrn_alpha_over_n": True, "pool_kernel": 2, "bias_fill": 0.1}


def test_every_setting_has_a_user_facing_name():
    """Each model and training setting reads as a real flag of `train` or `summary` (either spelling of a
    --x/--no-x pair), or, where no flag sets it, in plain words with the paper's section."""
    import dataclasses

    import typer.main

    from alexnet_cli.cli.common import setting_text
    from alexnet_cli.config import ModelConfig, TrainConfig

    commands = typer.main.get_command(app).commands
    spellings = {o for name in ("train", "summary") for p in commands[name].params
                 for o in (*p.opts, *getattr(p, "secondary_opts", ()))}
    for config in (ModelConfig(), TrainConfig()):
        for field in dataclasses.fields(config):
            value = getattr(config, field.name)
            for shown in ((True, False) if isinstance(value, bool) else (value,)):
                text = setting_text(field.name, shown)
                assert "_" not in text, text                     # no field name
                if text.startswith("--"):
                    assert text.split()[0] in spellings, text
                else:
                    assert "(paper " in text or "(code" in text, text


def _outputs(tmp_path: Path, base: Path) -> list[tuple[list[str], str, Path]]:
    """Every command's output (--out, OUT, eval's files, codes' beside --features) placed under
    `base`: the arguments, the option the refusal names and the path it names."""
    data, src, run = (tmp_path / name for name in ("data", "src", "run"))
    for folder in (data, src, run):
        folder.mkdir(exist_ok=True)
    checkpoint, image = tmp_path / "model.pt", tmp_path / "q.png"
    checkpoint.write_bytes(b"")
    image.write_bytes(b"")
    c, d, new = str(checkpoint), str(data), base / "new"
    return [(["train", d, "--out", str(new)], "--out", new),
            (["prep", str(src), str(new)], "OUT", new),
            (["demo", "--out", str(new)], "--out", new),
            (["ablate", d, "--out", str(new)], "--out", new),
            (["features", c, d, "--out", str(new / "f.h5")], "--out", new / "f.h5"),
            (["neighbors", c, d, "--query", str(image), "--out", str(new / "n.png")], "--out", new / "n.png"),
            (["kernels", c, "--out", str(new / "k.png")], "--out", new / "k.png"),
            (["predict", c, str(image), "--out", str(new / "p.png")], "--out", new / "p.png"),
            (["report", str(run), "--out", str(new / "r.png")], "--out", new / "r.png"),
            (["eval", c, d, "--predictions", str(new / "p.csv")], "--predictions", new / "p.csv"),
            (["eval", c, d, "--per-class", str(new / "c.csv")], "--per-class", new / "c.csv")]


def _assert_refused_up_front(runner, tmp_path: Path, base: Path, blocker: Path, why: str = "") -> None:
    for args, option, path in _outputs(tmp_path, base):
        result = runner.invoke(app, args, env={"COLUMNS": "400"})
        assert result.exit_code == 2 and result.stdout == "", (args, result.output)      # no banner, no work
        assert result.stderr.strip() == (f"Error: Invalid value for {option}: cannot write {path}: {blocker} is not a "
                                         f"writable folder{why} (see `alexnet {args[0]} --help`)"), result.stderr


def test_every_output_under_a_file_or_in_proc_is_refused_up_front(runner, tmp_path):
    """Under a regular file (prep said "Not a directory" late; demo after its banner) and in
    /proc, where os.access says yes to root but nothing can be created (every command failed
    late, with a bare OS error, exit 1)."""
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    _assert_refused_up_front(runner, tmp_path, blocker, blocker, " (it is a file)")
    if Path("/proc/self").is_dir():
        _assert_refused_up_front(runner, tmp_path, Path("/proc"), Path("/proc"))


def test_a_broken_link_as_an_output_is_refused_up_front(runner, tmp_path):
    """`--out LINK` where LINK points nowhere passed the check (it does not exist and its folder
    is writable) and failed late ("File exists", exit 1)."""
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere" / "x")
    for args in (["train", str(tmp_path), "--out", str(link)], ["kernels", str(tmp_path / "m.pt"), "--out", str(link)]):
        (tmp_path / "m.pt").write_bytes(b"")
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and f"{link} is a broken link (to {tmp_path / 'nowhere' / 'x'})" in result.stderr


def test_a_read_only_folder_is_refused_up_front_even_for_root(runner, tmp_path):
    """A folder made read-only (chmod 555) is refused unless this process can write there anyway
    (root can: the check tries, as the write would); a folder root cannot write to either
    (chattr +i, where the file system and our capabilities allow it) is refused as well."""
    from alexnet_cli.cli.common import check_writable

    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        try:
            (read_only / "probe").touch()
            writable = True                                   # root: permissions do not stop it
            (read_only / "probe").unlink()
        except OSError:
            writable = False
        if writable:
            check_writable(read_only / "x" / "f.h5", "--out")
            check_writable(read_only / "x", "--out", folder=True)
        else:
            _assert_refused_up_front(runner, tmp_path, read_only, read_only)
    finally:
        read_only.chmod(0o755)

    immutable = tmp_path / "immutable"
    immutable.mkdir()
    features = immutable / "f.h5"
    features.write_bytes(b"")
    if subprocess.run(["chattr", "+i", str(immutable)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (tool, file system or capability)")
    try:
        _assert_refused_up_front(runner, tmp_path, immutable, immutable)
        codes = runner.invoke(app, ["codes", str(tmp_path / "model.pt"), str(tmp_path / "data"), "--features",
                                    str(features), "--bits", "64"])
        assert codes.exit_code == 2 and codes.stderr.strip() == (
            f"Error: Invalid value for --features: cannot write {immutable / 'f.codes64.h5'}: {immutable} is not a "
            "writable folder (see `alexnet codes --help`)"), codes.stderr
    finally:
        subprocess.run(["chattr", "-i", str(immutable)], check=True)


@pytest.mark.parametrize("command", ["train", "ablate", "demo", "pca", "codes"])
def test_every_seed_has_one_range_and_one_message(runner, tmp_path, command):
    """codes took 0..2^32-1 (click's range message), train, demo and ablate 0..2^63-1, pca any
    seed (NumPy's ValueError); one option now, checked as it is parsed: exit 2, one line."""
    (tmp_path / "model.pt").write_bytes(b"")
    args = {"train": ["train", str(tmp_path), "--out", str(tmp_path / "run")],
            "ablate": ["ablate", str(tmp_path), "--out", str(tmp_path / "abl")],
            "demo": ["demo", "--out", str(tmp_path / "demo")],
            "pca": ["pca", str(tmp_path)],
            "codes": ["codes", str(tmp_path / "model.pt"), str(tmp_path)]}[command]
    for seed in ("-5", str(2**63)):
        bad = runner.invoke(app, [*args, "--seed", seed])
        assert bad.exit_code == 2, (command, bad.output)
        assert bad.stderr == f"Error: --seed must be a whole number from 0 to 9223372036854775807, got {seed}\n"
        assert bad.stdout == "" and not list(tmp_path.iterdir())[1:]          # nothing printed, nothing made
    helped = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).stdout
    assert "0 to 2^63-1" in helped


def test_plain_lines_are_not_wrapped_off_a_terminal_but_tables_fit(runner, tmp_path, monkeypatch):
    """Piped (CliRunner is no terminal), rich assumed 80 columns and broke a line inside a path
    or a number ("mean RGB 147.3, 162.5, ⏎105.4"); a table still fits 80 columns."""
    from alexnet_cli.pca import PcaStats
    import numpy as np

    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "data"
    deep.mkdir(parents=True)
    stats = PcaStats(np.array([3e3, 2e2, 1e1]), np.eye(3), np.array([147.3, 162.5, 105.4]), 10**9, 10**4, None)
    monkeypatch.setattr("alexnet_cli.pca.compute_pca", lambda *a, **k: stats)
    shown = runner.invoke(app, ["pca", str(deep)])
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert f"written to {deep / 'pca.json'}" in lines                  # one line, however long
    table = [line for line in lines if line[:1] in "┏┃┡│└"]
    assert len(table) >= 6 and max(len(line) for line in table) <= 80
    assert any(len(line) > 80 for line in lines)


def test_flags_show_no_value_in_help(runner):
    """--debug and --version (and every on/off flag) were shown as `--debug <bool>`."""
    from typer.main import get_command

    root = runner.invoke(app, ["--help"], env={"COLUMNS": "100"}).stdout
    for flag in ("--debug", "--version", "--help"):
        line = next(line for line in root.splitlines() if flag in line)
        assert "<" not in line, line
    group = get_command(app)
    for name, command in group.commands.items():
        text = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"}).stdout
        assert "<bool>" not in text, name
        flags = [p for p in command.params if getattr(p, "is_flag", False)]
        assert flags and all(p.metavar == "" for p in flags), name
    assert "<int>" in runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).stdout   # values still shown


def test_help_joins_a_paragraphs_lines_unless_marked_no_rewrap():
    """A docstring paragraph becomes one line (the terminal wraps it); one that begins with
    click's no-rewrap marker \\b (a table, a list of commands) keeps its line breaks."""
    from alexnet_cli.cli.app import _help

    def documented():
        """First line
        goes on here.

        \b
        keep   this
        as     written
        """
    assert _help(documented) == "First line goes on here.\n\n\b\nkeep   this\nas     written"
