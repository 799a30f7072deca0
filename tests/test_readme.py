"""Every command line of README.md's ImageNet sections runs, on tiny generated data.

The README's paths are mapped onto the test's own: /data/imagenet -> a generated tree,
/data/alexnet -> its prepared folder, photo.jpg -> a generated photo, runs/ -> tmp. Training
lines get a tiny schedule (--epochs 1 --batch-size 8 --device cpu), CUDA devices become the
CPU, torchrun runs two local processes (the multi-machine line is parsed by torchrun's own
parser and must start the same command: check_multi_machine_line). The two set-up lines of the
Quick start are CI's own (.ci/run) and are not run here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from alexnet_cli.cli.app import app
from alexnet_cli.synth import make_tree

README = Path(__file__).resolve().parents[1] / "README.md"
TRAIN_TINY = ["--epochs", "1", "--batch-size", "8", "--log-every", "1", "--workers", "1"]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and "python3 -m venv" not in line]


def _free_port() -> int:
    """A port no one listens on now: two suites on one machine would both take torchrun's 29500."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def adapt(line: str, paths: dict[str, str]) -> list[str]:
    for old, new in paths.items():
        line = line.replace(old, new)
    args = shlex.split(line.replace("cuda:0,cuda:1", "cpu,cpu"))
    if args[0] == "torchrun":
        args = [sys.executable, "-m", "torch.distributed.run", "--master_port", str(_free_port()), *args[1:]]
        for flag, value in (("--nproc_per_node", "2"), ("--nnodes", "1")):
            if flag in args:
                args[args.index(flag) + 1] = value
        if "--rdzv_endpoint" in args:
            args[args.index("--rdzv_endpoint") + 1] = "localhost:29531"
    if "--workers" in args and args[0] == "alexnet":
        args[args.index("--workers") + 1] = "2"
    if "train" in args or "ablate" in args:
        args += TRAIN_TINY + ([] if "--parallel" in args or "--devices" in args else ["--device", "cpu"])
    if "ablate" in args:
        args += ["--crops", "1"]
    return args


def check_multi_machine_line(line: str, commands: list[str]) -> None:
    """torchrun takes the multi-machine line's flags (its own parser, the one `torchrun` runs),
    and what it starts on each machine is exactly the single-machine line's command, which the
    test runs under torchrun; running it again through a one-machine c10d rendezvous cost 16 s
    of process start-up and tested nothing more of alexnet."""
    from torch.distributed.run import get_args_parser

    parsed = get_args_parser().parse_args(shlex.split(line)[1:])
    assert parsed.nnodes == "2" and parsed.rdzv_backend == "c10d" and parsed.rdzv_endpoint and parsed.module
    single = next(c for c in commands if c.startswith("torchrun") and "--rdzv_endpoint" not in c)
    ran = get_args_parser().parse_args(shlex.split(single)[1:])
    assert [parsed.training_script, *parsed.training_script_args] == [ran.training_script, *ran.training_script_args]
    assert parsed.nproc_per_node == ran.nproc_per_node


def test_readme_has_the_commands_it_promises():
    commands = readme_commands()
    for sub in ("prep", "pca", "train", "eval", "predict", "kernels", "neighbors", "summary", "ablate", "report"):
        assert any(c.startswith(f"alexnet {sub} ") for c in commands), sub
    assert sum(c.startswith("torchrun") for c in commands) == 2


def test_every_readme_command_runs_on_tiny_data(tmp_path):
    # Smaller than conftest's tiny_tree: 18 lines train, evaluate or search with the real
    # network on the CPU, so every image costs; 16 training images are two batches of 8.
    tiny_tree = make_tree(tmp_path / "tree", classes=4, train_per_class=4, val_per_class=2)
    work = tmp_path / "work"
    work.mkdir()
    photo = work / "photo.jpg"
    Image.new("RGB", (320, 240), (200, 40, 40)).save(photo)
    paths = {"/data/imagenet": str(tiny_tree), "/data/alexnet": str(work / "data")}
    runner = CliRunner()
    old = os.getcwd()
    os.chdir(work)
    try:
        commands = readme_commands()
        for line in commands:
            if "runs/a/" in line:   # the ensemble example: two copies of the trained run
                for name in ("a", "b"):
                    shutil.copytree(work / "runs" / "paper", work / "runs" / name, dirs_exist_ok=True)
            if "--rdzv_endpoint" in line:   # the multi-machine line: the single-machine run, another way
                check_multi_machine_line(line, commands)
                continue
            args = adapt(line, paths)
            if args[0] == "alexnet":
                result = runner.invoke(app, args[1:])
                assert result.exit_code == 0, f"{line}\n{result.output}"
            else:
                env = {**os.environ, "OMP_NUM_THREADS": "1"}
                done = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=600)
                assert done.returncode == 0, f"{line}\n{done.stderr[-3000:]}"
    finally:
        os.chdir(old)
    assert (work / "predictions.png").exists() and (work / "kernels.png").exists()
    assert (work / "neighbors.png").exists() and (work / "runs" / "ddp" / "checkpoints" / "last.pt").exists()
