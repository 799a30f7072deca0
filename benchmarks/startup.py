"""How long the `alexnet` command takes to start: the wall time of `alexnet --version`,
`alexnet --help`, `alexnet train --help` and a usage error (`alexnet train` without DATA), each
in a fresh process, beside `python -c "import torch"` for reference (what every command paid
before the library was imported lazily: docs/performance.md, start-up).

    python benchmarks/startup.py                              # this checkout
    python benchmarks/startup.py --repo . --repo /other/checkout  # two checkouts side by side

Each command runs once to warm the page cache, then --runs times; the table shows the median,
the fastest and the slowest run. The commands run as `python -m alexnet_cli` with the checkout
(--repo) first on the path, so that its code is the one timed. Other processes on the machine
slow every row alike: compare rows of one run, in which the checkouts take turns (run 1 of each,
then run 2 of each, ...). `--json` prints the rows as one JSON document on stdout (the table then
goes to stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import cpu_name  # noqa: E402  (benchmarks/data.py)

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [("alexnet --version", ["-m", "alexnet_cli", "--version"], 0),
            ("alexnet --help", ["-m", "alexnet_cli", "--help"], 0),
            ("alexnet train --help", ["-m", "alexnet_cli", "train", "--help"], 0),
            ("alexnet train (usage error: no DATA)", ["-m", "alexnet_cli", "train"], 2),
            ('python -c "import torch" (reference)', ["-c", "import torch"], 0)]


def time_run(args: list[str], repo: Path, expected: int) -> float:
    """Seconds from starting `python ARGS` in `repo` to its exit (which must be `expected`)."""
    env = {**os.environ, "PYTHONPATH": str(repo), "COLUMNS": "80"}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != expected:
        raise SystemExit(f"python {' '.join(args)} exited with {done.returncode}, not {expected}:\n{done.stderr}")
    return seconds


def hardware() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu_name()}, {cores} cores; Python {platform.python_version()}, torch {version('torch')}, "
            f"typer {version('typer')}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, action="append",
                    help="A checkout whose `alexnet` is timed (default: this one); repeat to compare several.")
    ap.add_argument("--runs", type=int, default=5, help="Timed runs of each command, after one warm-up run.")
    ap.add_argument("--json", action="store_true", help="Print the rows as one JSON document on stdout.")
    args = ap.parse_args(argv)
    repos = [r.resolve() for r in args.repo or [REPO]]
    load = os.getloadavg()
    rows = []
    for what, command, expected in COMMANDS:
        for repo in repos:
            time_run(command, repo, expected)                # warm-up: the page cache, .pyc files
        times = {repo: [] for repo in repos}
        for _ in range(args.runs):
            for repo in repos:
                times[repo].append(time_run(command, repo, expected))
        rows += [{"what": what, "repo": str(repo), "median_s": statistics.median(t), "min_s": min(t),
                  "max_s": max(t), "runs": args.runs} for repo, t in times.items()]
    table = Table(title=f"Start-up of `alexnet`, {args.runs} runs each (wall time, s)\n{hardware()}\n"
                        f"load average before: {load[0]:.1f} (other processes share these cores)",
                  title_justify="left")
    for col in ("command", "checkout", "median", "min", "max"):
        table.add_column(col, justify="right" if col in ("median", "min", "max") else "left")
    for r in rows:
        table.add_row(r["what"], r["repo"], f"{r['median_s']:.2f}", f"{r['min_s']:.2f}", f"{r['max_s']:.2f}")
    Console(width=140, stderr=args.json).print(table)
    if args.json:
        print(json.dumps({"hardware": hardware(), "load_average": load, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
