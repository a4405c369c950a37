"""The benchmarks: the harness they share (benchmarks/common.py), every script's --help, and the
quick modes of the training benchmarks, which must still run and write their JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name != "common.py")


@pytest.fixture(scope="module")
def common():
    sys.path.insert(0, str(BENCH))
    try:
        import common

        yield common
    finally:
        sys.path.remove(str(BENCH))


# --- the harness ------------------------------------------------------------------------


def test_result_head_and_writer(common, tmp_path, capsys):
    info = common.machine_info(threads=3)
    assert info["threads"] == 3 and info["cores"] >= 1 and len(info["git_commit"] or "x" * 40) == 40
    assert info["command"].startswith("python") and info["load_average_1min"] >= 0
    path = common.write_result(tmp_path / "deep" / "r.json", {**info, "value": 1.5})
    assert json.loads(path.read_text())["value"] == 1.5
    assert capsys.readouterr().out.strip() == f"wrote {path}"


def test_parse_sets_reads_and_checks_like_lenet5_train(common):
    got = common.parse_sets(["lr=0.01", "epochs=3", "distort=false", "model_args.dropout=0.1"])
    assert got == {"lr": 0.01, "epochs": 3, "distort": False, "model_args": {"dropout": 0.1}}
    assert type(got["epochs"]) is int
    for bad in (["lr=abc"], ["epochs=2.5"], ["batch_size=true"], ["no_such_field=1"], ["lr"]):
        with pytest.raises(ValueError):
            common.parse_sets(bad)


def test_best_rate_is_images_per_second(common):
    rate = common.best_rate(lambda: time.sleep(0.01), batch=100, seconds=0.05, repeats=2)
    assert 2_000 < rate < 10_000  # 100 images per call of a little over 10 ms


def test_run_timed_stamps_lines_as_they_arrive(common):
    code = "import time; print('a'); time.sleep(0.5); print('b')"
    run = common.run_timed([sys.executable, "-c", code])
    (ta, a), (tb, b) = run["lines"]
    assert (a, b) == ("a", "b") and tb - ta >= 0.45 and run["process_seconds"] >= tb
    with pytest.raises(RuntimeError, match="boom"):
        common.run_timed([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])


def test_markdown_table(common, capsys):
    common.markdown_table(["a", "b"], [(1, "x"), (2.5, "")])
    assert capsys.readouterr().out.splitlines() == ["| a | b |", "|---|---|", "| 1 | x |",
                                                     "| 2.5 |  |"]


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_answers_help(script):
    proc = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage:")


# --- quick modes of the training benchmarks ---------------------------------------------


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
    for p in r["per_pass"]:  # 2 passes over 1,000 images: far better than chance (90%)
        assert p["test_error"] == p["test_errors"] / p["test_count"] < 0.5
        assert p["train_set_error"] < 0.5
    first, last = r["per_pass"]
    assert last["test_error"] < first["test_error"]  # (26% then 13% at 072ead7)
    assert (tmp_path / "result.png").stat().st_size > 10_000  # the plot against Fig. 5
    if extra:
        assert r["train_config"]["distort"] and r["train_config"]["ema"] == 0.999
        assert "raw_test_error" in r["per_pass"][0]


@pytest.mark.slow
def test_bench_modern_quick(tmp_path, data_root):
    r = run_quick("bench_modern.py", tmp_path, "--data-dir", str(data_root), "--runs", str(tmp_path))
    assert len(r["seeds"]) == 2 and r["parameters"] <= 62_000
    assert r["ensemble_accuracy_pct"] == pytest.approx(100 * (1 - r["ensemble_errors"] / r["count"]))
    # 2,000 images, 1 epoch: 83% and 73% for the seeds, 81% for the ensemble at 072ead7.
    assert r["count"] == 10_000 and r["ensemble_accuracy_pct"] > 50
    # The ensemble is scored on the same images as the seeds it averages.
    assert all(s["errors"] == round((1 - s["accuracy"]) * r["count"]) for s in r["seeds"])


@pytest.mark.slow
def test_bench_time99_quick(tmp_path, data_root):
    r = run_quick("bench_time99.py", tmp_path, "--data-dir", str(data_root), "--threads", "1")
    for run in [*r["train_fast"], r["train_fast_torch"], r["train_fast_numpy"]]:
        assert run["command"][1:6] == ["-m", "lenet5", "train", "--preset", "fast"]
        assert list(run["breakdown"]) == ["start", "train", "eval_and_save", "exit"]
        assert all(v >= 0 for v in run["breakdown"].values())
        assert sum(run["breakdown"].values()) == pytest.approx(run["process_seconds"])
        assert [e["epoch"] for e in run["events"]] == [1] and run["test_accuracy"] > 0.5
    assert "--engine" in r["train_fast_torch"]["command"]
    assert "--engine" in r["train_fast_numpy"]["command"]
    assert r["plain"]["events"][-1]["event"] in ("reached", "not_reached")
    assert set(r["startup_probe"]) == {"python_start", "imports", "data"}


@pytest.mark.slow
def test_bench_startup_quick(tmp_path, data_root):
    r = run_quick("bench_startup.py", tmp_path, "--data-dir", str(data_root))
    med = r["medians"]
    train = "train --preset fast (640 digits, 1 pass)"
    assert 0 < med[f"{train}: banner"]["HEAD"] < med[f"{train}: exit"]["HEAD"]
    assert {k.split(":")[0] for k in med} == set(r["runs"]) and len(r["runs"]) == 4
    assert all(len(by_side["HEAD"]) == 1 for by_side in r["runs"].values())


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


@pytest.mark.slow
def test_bench_layers_quick(tmp_path, data_root):
    r = run_quick("bench_layers.py", tmp_path, "--data-dir", str(data_root))
    assert r["batch"] == 8 and all(v > 0 for v in r["ms_per_batch"].values())
    assert {"C3 forward, lanes", "C3 backward, per pattern"} <= set(r["ms_per_batch"])
    assert set(r["c3_lanes_speedup"]) == {"forward", "backward"}


@pytest.mark.slow
def test_bench_train_speed_quick(tmp_path, data_root):
    r = run_quick("bench_train_speed.py", tmp_path, "--data-dir", str(data_root))
    assert [(row["condition"], row["batch"]) for row in r["rows"]] == [("idle", 64), ("busy", 64)]
    for row in r["rows"]:
        assert row["lenet5 train"]["engine"] == "compiled"  # the default engine on a CPU
        assert "lenet5 train --engine torch" not in row  # the full run's columns only
        assert all(row[w]["images_per_s"] > 0 for w in ("lenet5 train", "plain script"))
    assert set(r["evaluation_batch_1024"]) == {"compiled", "torch", "compiled_2_threads"}
    assert all(v > 0 for v in r["evaluation_batch_1024"].values())


def test_fig9_explain_knn_errors_are_a_brute_force_nearest_neighbour(data_root):
    """``fig9_explain.knn_errors`` (the k-NN rows' votes, used by ``--stored``): its k = 1 error
    on real MNIST equals a brute-force float64 NumPy 1-NN against the same stored 8-bit levels."""
    import numpy as np

    sys.path.insert(0, str(BENCH))
    try:
        import fig9_explain
    finally:
        sys.path.remove(str(BENCH))
    x, y = fig9_explain.inputs("train", str(data_root))
    store, labels, query, truth = x[:3000], y[:3000], x[-500:], y[-500:]
    errs, seconds = fig9_explain.knn_errors(store, labels, query, truth)
    assert set(errs) == {1, 2, 3, 4, 5} and seconds >= 0
    lo, step = float(store.min()), (float(store.max()) - float(store.min())) / 255
    s = lo + step * np.round((store.astype(np.float64) - lo) / step)  # the stored 8-bit levels
    q = query.astype(np.float64)
    d = (q**2).sum(1)[:, None] - 2 * q @ s.T + (s**2).sum(1)[None]
    brute = 100.0 * float(np.mean(labels[d.argmin(1)] != truth))
    assert errs[1] == pytest.approx(brute, abs=0.21)  # at most one tie broken the other way
    assert errs[2] == errs[1]  # two votes split: the nearest decides
    assert 0 < errs[3] < 20

