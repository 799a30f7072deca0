"""The benchmarks run on the CPU at tiny sizes (their numbers mean nothing here; that they
run the real code paths and print their tables does)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_train_throughput_table(tmp_path):
    out = run("train_throughput.py", "--device", "cpu", "--no-compile", "--n", "8", "--classes", "2", "--batch", "2",
              "--eval-batch", "2", "--steps", "1", "--warmup", "1", "--repeats", "1", "--skip", "a-lrn,b-jpeg",
              "--json", str(tmp_path / "r.json"))
    rows = {r["what"]: r["rate"] for r in json.loads((tmp_path / "r.json").read_text())["rows"]}
    for what in ("(a) ceiling, resident data, eager", "(b) alexnet train from raw shards, eager",
                 "(c) ceiling without LRN and groups, eager",
                 "(d) peer: ImageFolder + PIL + torchvision AlexNet (fp32)",
                 "10-crop eval from raw shards (crops/s)"):
        assert rows[what] > 0, what
    assert "/ ceiling" in out and "cores" in out


def test_data_and_neighbors_benchmarks():
    data = json.loads(run("data.py", "--n", "24", "--classes", "2", "--workers", "1", "--batch-size", "4",
                          "--epochs", "1", "--device", "cpu", "--json"))       # one JSON document on stdout
    assert any("ImageFolder" in r["what"] for r in data["rows"])
    assert {r["decoder"]: r["max_abs_diff_vs_pil"] for r in data["decoders"]}["simplejpeg (jpeg.decode_jpeg)"] == 0
    assert [r["threads"] for r in data["jpeg_scaling"]] == [1] and data["jpeg_scaling"][0]["loader_images_per_s"] > 0
    # layers.py: tests/test_benchmarks_json.py runs it (its table and its --json)
    assert "CPU" in run("neighbors.py", "--n", "2000", "--queries", "5", "--repeat", "1", "--devices", "cpu")
