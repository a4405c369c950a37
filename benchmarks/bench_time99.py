"""Time to 99% MNIST test accuracy from process start: ``lenet5 train --preset fast`` vs a plain script.

Launches ``lenet5 train --preset fast`` (the fastest recipe found, docs/results.md: lenet5-modern
with batch-norm, one pass of SGD Nesterov with a one-cycle rate peaking at 0.4, in the default
engine: the compiled one) ``--repeats`` times with seeds 0, 1, 2 ..., the same preset with
``--engine torch`` and with ``--engine numpy`` once each (seed 0), and the plain PyTorch script ``plain_lenet5.py``
(Adam 1e-3, batch 64, evaluated every epoch) once: each a fresh Python process, one after the
other, same thread count. So the figure is the product's: the command a user types, with the
library's loader and schedules.

The clock starts just before the spawn (interpreter start, imports and reading the data from
disk all count) and stops at the line that reports a full-test-set accuracy >= the target:
``lenet5 train``'s epoch line (it evaluates the test set after every pass), the script's
``eval`` event. Where the time went: for ``lenet5 train``, from its output lines and
``metrics.jsonl`` (start-up until its banner, the training pass, evaluation and checkpoint,
exit), and a probe process that times the start-up's parts alone (interpreter, imports,
reading the data); for the script, from its own events. Also recorded: the 1-minute load
average before each process, since other jobs on the machine slow everything down.

``--before REV`` also runs ``lenet5 train --preset fast`` as it was at commit ``REV`` (a
temporary git worktree), each seed right after HEAD's, so the two compare in the same minutes;
one untimed short run of each first loads (or, for ``REV``, compiles) the Numba kernels.

    python benchmarks/bench_time99.py --data-dir ../shared/data --threads 2 [--before REV]
    python benchmarks/bench_time99.py --data-dir ../shared/data --quick      # < 1 min, no 99%
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import (
    RESULTS,
    child_json,
    load_average,
    machine_info,
    markdown_table,
    run_timed,
    tree_env,
    worktree,
    write_result,
)

HERE = Path(__file__).resolve().parent
EPOCH_LINE = re.compile(r"^epoch\s+(\d+)/\d+\s+train loss")
# Times the parts of `lenet5 train`'s start-up alone, in a fresh process of its own.
PROBE = """
import json, sys, time
t_first = time.time()
import lenet5.training.loop  # what `lenet5 train` imports before it reads data
t_imports = time.time()
from lenet5.data.datasets import load_split
for split in ("train", "test"):
    load_split("mnist", split, sys.argv[1] or None)
print(json.dumps({"t_first": t_first, "t_imports": t_imports, "t_data": time.time()}))
"""


def train_fast(run_dir: Path, common: list[str], extra: list[str], target: float,
               env: dict | None = None) -> dict:
    """One ``lenet5 train --preset fast`` process: its events and the time to the target.
    ``env``: the child's environment (``--before``: ``PYTHONPATH`` at the old tree)."""
    cmd = [sys.executable, "-m", "lenet5", "train", "--preset", "fast", "--no-progress",
           "--out", str(run_dir), *common, *extra]
    run = run_timed(cmd, env=env)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [s for s, text in run["lines"] if EPOCH_LINE.match(text.strip())]
    # The banner ("... | run DIR"): data read, model built, training about to start.
    start = next((s for s, text in run["lines"] if text.rstrip().endswith(f"run {run_dir}")),
                 run["lines"][0][0])
    train = sum(r["epoch_seconds"] for r in rows)
    evals = [{"event": "eval", "epoch": r["epoch"], "s": s, "test_accuracy": 1 - r["test_error"]}
             for r, s in zip(rows, epochs)]
    hit = next((e["s"] for e in evals if e["test_accuracy"] >= target), None)
    return {"command": run["command"], "load_average_1min_before": run["load_average_1min_before"],
            "process_seconds": run["process_seconds"], "events": evals,
            "test_accuracy": evals[-1]["test_accuracy"], "seconds_to_target": hit,
            "breakdown": {"start": start, "train": train, "eval_and_save": epochs[-1] - start - train,
                          "exit": run["process_seconds"] - epochs[-1]}}


def plain(common: list[str], extra: list[str], target: float) -> dict:
    """One ``plain_lenet5.py`` process; its JSON events carry their own wall-clock times."""
    started = time.time()
    run = run_timed([sys.executable, str(HERE / "plain_lenet5.py"), *common,
                     "--target", str(target), *extra])
    events = [{**json.loads(text), "s": s} for s, text in run["lines"] if text.startswith("{")]
    ev = {e["event"]: e for e in events}
    evals = [e for e in events if e["event"] == "eval"]
    hit = next((e["s"] for e in evals if e["test_accuracy"] >= target), None)
    breakdown = {"python_start": ev["main"]["t_main"] - started,
                 "imports": ev["main"]["s"] - (ev["main"]["t_main"] - started),
                 "data": ev["data"]["s"] - ev["main"]["s"], "train_and_eval": evals[-1]["s"] - ev["data"]["s"],
                 "exit": run["process_seconds"] - events[-1]["s"]}
    return {"command": run["command"], "load_average_1min_before": run["load_average_1min_before"],
            "process_seconds": run["process_seconds"], "events": events,
            "test_accuracy": evals[-1]["test_accuracy"], "epochs": len(evals),
            "seconds_to_target": hit, "breakdown": breakdown}


def probe(data_dir: str | None) -> dict:
    """Interpreter start, ``lenet5 train``'s imports and reading MNIST, in a fresh process."""
    started = time.time()
    t = child_json([sys.executable, "-c", PROBE, data_dir or ""])
    return {"python_start": t["t_first"] - started, "imports": t["t_imports"] - t["t_first"],
            "data": t["t_data"] - t["t_imports"]}


def secs(t: float | None) -> str:
    return f"{t:.1f}" if t is not None else "not reached"


def where(b: dict) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in b.items())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="runs of lenet5 train --preset fast")
    p.add_argument("--target", type=float, default=0.99)
    p.add_argument("--quick", action="store_true", help="tiny runs that only check the plumbing")
    p.add_argument("--before", metavar="REV", help="also time the preset as it was at this commit")
    p.add_argument("--json", default=str(RESULTS / "time99.json"))
    args = p.parse_args(argv)

    common = ["--threads", str(args.threads)] + (["--data-dir", args.data_dir] if args.data_dir else [])
    fast_extra = ["--limit-train", "2000"] if args.quick else []
    plain_extra = ["--max-epochs", "1", "--limit-train", "2000"] if args.quick else []
    info = machine_info(args.threads)
    seeds = range(1 if args.quick else args.repeats)
    before_runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-time99-") as tmp, \
            (worktree(args.before) if args.before else contextlib.nullcontext()) as tree:
        env = tree_env(args.before, tree) if args.before else None
        if env is not None:  # load (and, in the new tree, compile) both trees' kernels first
            for name, e in (("warm-head", None), ("warm-before", env)):
                train_fast(Path(tmp) / name, common, ["--limit-train", "512"], args.target, e)
        runs = []
        for i in seeds:  # HEAD then REV, seed by seed: the same minutes of the machine
            runs.append(train_fast(Path(tmp) / f"default-{i}", common,
                                   [*fast_extra, "--seed", str(i)], args.target))
            if env is not None:
                before_runs.append(train_fast(Path(tmp) / f"before-{i}", common,
                                              [*fast_extra, "--seed", str(i)], args.target, env))
        torch_run = train_fast(Path(tmp) / "torch", common, [*fast_extra, "--engine", "torch"],
                               args.target)
        numpy_run = train_fast(Path(tmp) / "numpy", common, [*fast_extra, "--engine", "numpy"],
                               args.target)
    baseline = plain(common, plain_extra, args.target)
    start = probe(args.data_dir)

    reached = [r["seconds_to_target"] for r in runs if r["seconds_to_target"] is not None]
    median = statistics.median(reached) if reached else None
    plain_t = baseline["seconds_to_target"]
    ratio = plain_t / median if plain_t and median else None
    print(f"\ntime to {100 * args.target:.0f}% test accuracy from process start, "
          f"{args.threads} thread(s)\n")
    labels = {id(torch_run): " --engine torch", id(numpy_run): " --engine numpy",
              **{id(r): f" --seed {i} (at {args.before})" for i, r in enumerate(before_runs)}}
    rows = [(f"lenet5 train --preset fast{labels.get(id(r), f' --seed {i}')}", i + 1,
             f"{100 * r['test_accuracy']:.2f}", secs(r["seconds_to_target"]),
             f"{r['load_average_1min_before']:.1f}", where(r["breakdown"]))
            for i, r in [*((i, r) for i, pair in enumerate(zip(runs, before_runs or [None] * len(runs)))
                           for r in pair if r is not None),
                         (0, torch_run), (0, numpy_run)]]
    rows.append(("plain script (plain_lenet5.py)", 1,
                 f"{100 * baseline['test_accuracy']:.2f} (epoch {baseline['epochs']})",
                 secs(plain_t), f"{baseline['load_average_1min_before']:.1f}",
                 where(baseline["breakdown"])))
    markdown_table(["recipe", "run", "test accuracy %", "seconds to target", "load avg before",
                    "where the time went (s)"], rows)
    print(f"\nlenet5 train's start-up alone (a probe process): {where(start)}")
    if ratio:
        print(f"plain script / lenet5 train --preset fast (median of {len(reached)}): {ratio:.1f}x")
    before_median = None
    if before_runs:
        # The seconds to the last epoch line (the target's clock, reached or not).
        now = [r["events"][-1]["s"] for r in runs]
        before_median = statistics.median(r["events"][-1]["s"] for r in before_runs)
        print(f"seconds to the evaluation, HEAD / at {args.before} (medians of {len(now)}): "
              f"{statistics.median(now):.2f} / {before_median:.2f} = "
              f"{statistics.median(now) / before_median:.2f}x")

    write_result(args.json, {
        **info, "target": args.target, "quick": args.quick, "train_fast": runs,
        "train_fast_torch": torch_run, "train_fast_numpy": numpy_run, "plain": baseline,
        "train_fast_mean_accuracy": statistics.mean(r["test_accuracy"] for r in runs), "startup_probe": start,
        "train_fast_median_seconds": median, "train_fast_reached": f"{len(reached)}/{len(runs)}",
        "plain_over_train_fast": ratio, "before": args.before, "train_fast_before": before_runs,
        "before_median_seconds_to_eval": before_median,
        "torch_over_default": (torch_run["seconds_to_target"] / median
                               if median and torch_run["seconds_to_target"] else None),
        "load_average_1min_at_end": load_average()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
