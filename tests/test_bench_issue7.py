"""The quick modes of the issue #7 benchmarks (runs 1-7) still run and write their JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def run_quick(script: str, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(BENCH / script), "--quick", "--json", str(out), *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "|---|" in proc.stdout  # the markdown table
    result = json.loads(out.read_text())
    assert result["command"].startswith("python") and result["threads"] >= 1
    return result


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--distort", "--set", "ema=0.999"]])
def test_bench_paper_quick(tmp_path, data_root, extra):
    r = run_quick("bench_paper.py", tmp_path, "--data-dir", str(data_root), *extra)
    assert r["train_config"]["optimizer"] == "sdlm" and r["train_config"]["batch_size"] == 1
    assert [p["epoch"] for p in r["per_pass"]] == [1, 2] and r["paper_fig5"][0] == 2.67
    assert all(0 <= p["train_set_error"] <= 1 for p in r["per_pass"])
    assert (tmp_path / "result.png").stat().st_size > 10_000  # the plot against Fig. 5
    if extra:
        assert r["train_config"]["distort"] and "raw_test_error" in r["per_pass"][0]


@pytest.mark.slow
def test_bench_modern_quick(tmp_path, data_root):
    r = run_quick("bench_modern.py", tmp_path, "--data-dir", str(data_root), "--runs", str(tmp_path))
    assert len(r["seeds"]) == 2 and r["parameters"] <= 62_000
    assert 0 <= r["ensemble_accuracy_pct"] <= 100


@pytest.mark.slow
def test_bench_time99_quick(tmp_path, data_root):
    r = run_quick("bench_time99.py", tmp_path, "--data-dir", str(data_root), "--threads", "1")
    events = [e["event"] for e in r["fast99"][0]["events"]]
    assert events == ["main", "data", "trained", "eval"]
    assert r["plain"]["events"][-1]["event"] in ("reached", "not_reached")


@pytest.mark.slow
def test_bench_throughput_quick(tmp_path):
    r = run_quick("bench_throughput.py", tmp_path, "--case", "0", "--case", "3")  # numpy 1998, torch modern
    engines = {(x["engine"], x["model"]): x for x in r["results"]}
    assert len(engines) == 2
    assert not engines[("numpy", "lenet5-1998")]["torch_imported"]
    modern = engines[("torch", "lenet5-modern (best)")]["rows"]
    assert modern[0]["train_images_per_s"] is None and modern[1]["train_images_per_s"] > 0


@pytest.mark.slow
def test_bench_fashion_quick(tmp_path, data_root):
    r = run_quick("bench_fashion.py", tmp_path, "--data-dir", str(data_root), "--runs", str(tmp_path),
                  "--only", "1998")
    assert r["results"][0]["train_config"]["dataset"] == "fashion-mnist"
