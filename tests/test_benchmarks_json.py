"""The benchmark scripts' `--json` (docs/public-surface.md): layers.py and profile_step.py print
their rows as one JSON document on stdout, the table on stderr (CPU, tiny sizes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def run_json(script: str, *args: str) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, str(BENCH / script), *args, "--json"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout), done.stderr


def test_layers_json_has_the_tables_rows():
    doc, table = run_json("layers.py", "--device", "cpu", "--batch", "1", "--iters", "1", "--warmup", "1",
                          "--repeats", "1", "--no-compile")
    rows = {(r["layer"], r["implementation"]): r["ms"] for r in doc["rows"]}
    for layer in ("lrn1", "lrn2"):
        assert {(layer, impl) for impl in ("reference", "fused", "torch")} <= rows.keys()
    for layer in ("conv2", "conv4", "conv5"):
        assert {(layer, impl) for impl in ("groups=2", "split", "dense")} <= rows.keys()
    assert all(ms > 0 for ms in rows.values()) and doc["batch"] == 1 and doc["device"] == "cpu"
    assert "conv4" in table and "groups=2" in table
    assert "  lrn1 fused: " in table and "  conv5 dense: " in table       # each row as it was measured
    assert not any(impl == "compiled" for _, impl in rows)


def test_profile_step_json_has_the_tables_rows():
    doc, table = run_json("profile_step.py", "--device", "cpu", "--steps", "1", "--batch", "2", "--rows", "5",
                          "--warmup", "1", "--n", "8")
    rows = doc["rows"]
    assert len(rows) == 5 and doc["steps"] == 1 and doc["batch"] == 2
    totals = [r["cpu_time_total"] for r in rows]
    assert totals == sorted(totals, reverse=True) and totals[0] > 0
    assert all(r["calls"] >= 1 and r["self_cpu_time_total"] <= r["cpu_time_total"] + 1e-6 for r in rows)
    assert rows[0]["name"] in table and "Self CPU time total" in table
