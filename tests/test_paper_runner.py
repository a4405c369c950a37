"""The several-seeds runner of benchmarks/bench_paper.py (issue 15): seed lists, run names,
finished runs, and the aggregation the results tables are built from."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        import bench_paper

        yield bench_paper
    finally:
        sys.path.remove(str(BENCH))


def rows(test, train, passes=3):
    return [{"epoch": i + 1, "test_error": t / 100, "val_error": t / 100 + 0.001,
             "train_set_error": tr / 100} for i, (t, tr) in enumerate(zip(test, train))][:passes]


def test_seed_lists_and_run_names(bench):
    assert bench.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert bench.parse_seeds("0,2,7-8") == [0, 2, 7, 8]
    assert bench.run_name("paper", "compiled", 0, [], 3) == "paper-compiled-test-s3"
    assert (bench.run_name("lush", "compiled", 10000, ["sdlm_mu=0.04", "model_args.init=fanin"], 0)
            == "lush-compiled-val10000-sdlm_mu0.04-initfanin-s0")


def test_summary_is_mean_sample_std_min_max(bench):
    s = bench.summary([1.0, 1.2, 0.8, 1.1, 0.9])
    assert s["mean"] == pytest.approx(1.0) and s["std"] == pytest.approx(0.1581139, rel=1e-6)
    assert (s["min"], s["max"], s["n"]) == (0.8, 1.2, 5)
    assert bench.summary([0.9])["std"] == 0.0


def test_aggregate_final_errors_and_the_seed_band(bench):
    runs = {0: rows([2.0, 1.5, 1.0], [2.1, 1.0, 0.5]), 1: rows([3.0, 1.0, 1.2], [2.9, 0.8, 0.6])}
    agg = bench.aggregate(runs, "test")
    assert agg["final"] == {0: pytest.approx(1.0), 1: pytest.approx(1.2)}
    assert agg["summary"]["mean"] == pytest.approx(1.1)
    assert agg["summary_train_set"]["max"] == pytest.approx(0.6)
    band = agg["per_pass"]["test"]
    assert band["min"] == pytest.approx([2.0, 1.0, 1.0]) and band["max"] == pytest.approx([3.0, 1.5, 1.2])
    val = bench.aggregate(runs, "val")  # tuning mode reads the validation error only
    assert val["final"][0] == pytest.approx(1.1) and "test" not in val["per_pass"]


def test_finished_runs_only(bench, tmp_path):
    run = tmp_path / "paper-compiled-test-s0"
    run.mkdir()
    assert bench.finished_rows(run, 3) is None
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows([2, 1], [2, 1])))
    assert bench.finished_rows(run, 3) is None and len(bench.finished_rows(run, 2)) == 2


def test_ablation_welch_and_table(bench, capsys):
    # Welch's t by hand: means 1.0 and 1.3, variances 0.01 and 0.04 over 3 each.
    t, p = bench.welch([0.9, 1.0, 1.1], [1.1, 1.3, 1.5])
    assert t == pytest.approx(0.3 / ((0.01 + 0.04) / 3) ** 0.5) and 0.05 < p < 0.2
    assert bench.welch([1.0], [1.1, 1.2]) is None
    runs = {0: rows([1.0, 1.2], [0.5, 0.4], 2), 1: rows([1.0, 1.0], [0.5, 0.6], 2)}
    base = {**bench.aggregate(runs, "val"), "sets": []}
    row = {**base, "sets": ["shuffle=false"], "final": {"0": 1.5, "1": 1.7},
           "summary": bench.summary([1.5, 1.7])}
    assert bench.ablation([base, row]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("| (baseline) | 0,1 | 1.20 +- 0.14 (1.30, 1.10) | 0.50 +- 0.14 | - |")
    assert "| --set shuffle=false | 0,1 | 1.60 +- 0.14 (1.50, 1.70) |" in out[3]
    assert "| +0.40 | t = +2.8, p = 0.11 |" in out[3]  # 0.4 / sqrt(0.02 / 2 + 0.02 / 2)
    assert out[3].endswith("| +0.40 +- 0.20 (p = 0.30) |")  # per seed +0.2 and +0.6
    assert bench.paired({"0": 1.0, "1": 1.2, "2": 1.0}, {"0": 1.1, "1": 1.0}).startswith(
        "-0.05 +- 0.15 (p = 0.")  # seeds 0 and 1 only: +0.1 and -0.2
