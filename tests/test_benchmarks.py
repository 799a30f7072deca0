"""The benchmarks run on the CPU at tiny sizes (their numbers mean nothing here; that they
run the real code paths and print their tables does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script: str, *args: str, env: dict | None = None) -> str:
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=600, env=env)
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


def test_data_and_neighbors_benchmarks(tmp_path):
    data = json.loads(run("data.py", "--n", "24", "--classes", "2", "--workers", "1", "--batch-size", "4",
                          "--epochs", "1", "--device", "cpu", "--json"))       # one JSON document on stdout
    assert any("ImageFolder" in r["what"] for r in data["rows"])
    assert {r["decoder"]: r["max_abs_diff_vs_pil"] for r in data["decoders"]}["simplejpeg (jpeg.decode_jpeg)"] == 0
    assert [r["threads"] for r in data["jpeg_scaling"]] == [1] and data["jpeg_scaling"][0]["loader_images_per_s"] > 0
    assert data["simplejpeg"] is True and data["complete"] is True
    # layers.py: tests/test_benchmarks_json.py runs it (its table and its --json)
    assert "CPU" in run("neighbors.py", "--n", "2000", "--queries", "5", "--repeat", "1", "--devices", "cpu")
    # --codes-n: codes timed at their own N, the exact search at --n and scaled to it (labelled)
    out = run("neighbors.py", "--n", "1000", "--codes-n", "3000", "--queries", "5", "--repeat", "1", "--devices",
              "cpu", "--rerank", "50", "--json", str(tmp_path / "nb.json"))
    doc = json.loads((tmp_path / "nb.json").read_text())
    rows = {r["search"]: r for r in doc["rows"]}
    exact, scaled = rows["exact (fc7, float16)"], rows["exact, scaled x3.00 from N=1,000"]
    assert (exact["n"], exact["scaled"], scaled["n"], scaled["scaled"]) == (1000, False, 3000, True)
    assert abs(scaled["best_s"] - 3 * exact["best_s"]) < 1e-9 and doc["codes_n"] == 3000
    for search in ("codes (256 bits)", "codes + rerank 50"):
        assert rows[search]["n"] == 3000 and rows[search]["speedup"] == scaled["best_s"] / rows[search]["best_s"]
    assert "scaled x3.00" in out


def test_data_benchmark_names_the_pil_fallback_and_writes_its_json_file(tmp_path):
    """Without simplejpeg, jpeg.decode_jpeg is PIL's: the rows say so (never labelled simplejpeg),
    and --json-file holds the finished document."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "simplejpeg.py").write_text("raise ImportError('simplejpeg blocked by the test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), *sys.path])}
    out = run("data.py", "--n", "16", "--classes", "2", "--workers", "1", "--batch-size", "4", "--seconds", "0.2",
              "--device", "cpu", "--only-jpeg", "--json-file", str(tmp_path / "d.json"), env=env)
    data = json.loads((tmp_path / "d.json").read_text())
    assert data["simplejpeg"] is False and data["cpu_decoder"].startswith("PIL") and data["complete"] is True
    assert data["sections"] == ["prep", "decoders", "jpeg_scaling"]
    names = [r["decoder"] for r in data["decoders"]]
    assert not any(name.startswith("simplejpeg") for name in names), names
    assert "PIL fallback (jpeg.decode_jpeg; no simplejpeg)" in names and "PIL (simplejpeg is not installed)" in out
