"""Time to 99% MNIST test accuracy, from process start, fast recipe vs plain script (issue #7, run 5).

Launches ``fast99.py`` (the fastest recipe found: the NumPy engine, which also skips torch's
import) ``--repeats`` times, the same recipe in PyTorch once, and the plain PyTorch script
``plain_lenet5.py`` (Adam 1e-3, batch 64, evaluated every epoch) once, each as a fresh
Python process, one after the other, with the same thread count. The clock starts just before
the process is spawned (interpreter start, imports and reading the data from disk all count)
and stops at the JSON line that reports a full-test-set accuracy >= 99.0%. Also reported: where
the time went (imports, data, training, evaluation) and the 1-minute load average before each
process, since other jobs on the machine slow everything down.

    python benchmarks/bench_time99.py --data-dir ../shared/data --threads 2
    python benchmarks/bench_time99.py --data-dir ../shared/data --quick      # < 1 min, no 99%
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import machine_info

HERE = Path(__file__).resolve().parent


def launch(script: str, args: list[str], target: float) -> dict:
    """Run one process; returns its events (times relative to the spawn) and time to target."""
    load = os.getloadavg()[0]
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode:
        raise RuntimeError(f"{script} failed:\n{proc.stderr}")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    for e in events:
        e["s"] = e.pop("t") - t0
        if "t_main" in e:
            e["s_imports_done"] = e.pop("t_main") - t0
    hit = next((e for e in events if e["event"] == "eval"
                and e.get("test_accuracy", e.get("accuracy", 0)) >= target), None)
    return {"script": script, "args": args, "load_average_1min_before": load,
            "process_seconds": wall, "events": events,
            "seconds_to_target": hit["s"] if hit else None}


def secs(t: float | None) -> str:
    return f"{t:.1f}" if t is not None else "not reached"


def breakdown(run: dict) -> str:
    ev = {e["event"]: e for e in run["events"]}
    main, data = ev["main"], ev["data"]
    parts = [f"python start {main['s_imports_done']:.1f}", f"imports {main['s'] - main['s_imports_done']:.1f}",
             f"data {data['s'] - main['s']:.1f}"]
    if "trained" in ev:
        parts += [f"train {ev['trained']['s'] - data['s']:.1f}", f"eval {ev['eval']['s'] - ev['trained']['s']:.1f}"]
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="runs of the fast recipe")
    p.add_argument("--target", type=float, default=0.99)
    p.add_argument("--quick", action="store_true", help="tiny runs that only check the plumbing")
    p.add_argument("--json", default=str(HERE / "results" / "time99.json"))
    args = p.parse_args(argv)

    common = ["--threads", str(args.threads)] + (["--data-dir", args.data_dir] if args.data_dir else [])
    fast_args, plain_args = list(common), [*common, "--target", str(args.target)]
    if args.quick:
        fast_args += ["--epochs", "0.05"]
        plain_args += ["--max-epochs", "1", "--limit-train", "2000"]
    env = machine_info(args.threads)
    fast = [launch("fast99.py", fast_args, args.target) for _ in range(1 if args.quick else args.repeats)]
    torch_run = launch("fast99.py", [*fast_args, "--engine", "torch"], args.target)
    plain = launch("plain_lenet5.py", plain_args, args.target)

    times = [r["seconds_to_target"] for r in fast]
    reached = [t for t in times if t is not None]
    plain_t = plain["seconds_to_target"]
    print(f"\ntime to {100 * args.target:.0f}% test accuracy from process start, {args.threads} thread(s)\n")
    print("| recipe | run | test accuracy % | seconds to target | load avg before | where the time went (s) |")
    print("|---|---|---|---|---|---|")
    for name, i, r in [*(("fast99 (numpy)", i, r) for i, r in enumerate(fast)), ("fast99 --engine torch", 0, torch_run)]:
        acc = next(e["accuracy"] for e in r["events"] if e["event"] == "eval")
        t = r["seconds_to_target"]
        print(f"| {name} | {i + 1} | {100 * acc:.2f} | {secs(t)} | "
              f"{r['load_average_1min_before']:.1f} | {breakdown(r)} |")
    evals = [e for e in plain["events"] if e["event"] == "eval"]
    print(f"| plain script | 1 | {100 * evals[-1]['test_accuracy']:.2f} (epoch {evals[-1]['epoch']}) | "
          f"{secs(plain_t)} | {plain['load_average_1min_before']:.1f} | "
          f"{breakdown(plain)}, then {len(evals)} epoch(s) with evaluation |")
    ratio = plain_t / statistics.median(reached) if plain_t and reached else None
    if ratio:
        print(f"\nplain script / fast99 (median of {len(reached)}): {ratio:.1f}x")

    result = {**env, "target": args.target, "quick": args.quick, "fast99": fast,
              "fast99_torch": torch_run, "plain": plain,
              "fast99_median_seconds": statistics.median(reached) if reached else None,
              "fast99_reached": f"{len(reached)}/{len(fast)}", "plain_over_fast99": ratio,
              "load_average_1min_at_end": os.getloadavg()[0]}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
