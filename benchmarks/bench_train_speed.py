"""Mini-batch training speed of ``lenet5 train`` against a plain PyTorch script, idle and busy.

One run, each measurement a fresh process, side by side (issue 14, targets 2 and 3):

- ``lenet5 train`` as a user types it (``--model lenet5-modern``, no ``--engine``, no
  ``--threads``: the default engine and thread choice), and the same with ``--engine torch``;
- the plain script ``plain_lenet5.py`` (the same network, Adam, data as tensors in memory) with
  ``--threads`` (default 2: what ``torch`` takes on this machine), and with one thread (its
  best on this machine when other processes run);

at batch 64 and 256 over ``--limit-train`` images for 2 epochs, timing the second epoch's
training pass (the first also loads compiled code and warms caches): ``lenet5 train``'s
``images_per_s`` from ``metrics.jsonl``, the script's own ``trained`` event. Each is measured on
the machine as it is ("idle") and again with one core held by a busy loop this script starts
and stops itself ("busy"). Reported: images per second, the busy/idle slowdown, the ratio to
the plain script (``--threads``) in the same condition. Also evaluation images per second of ``lenet5-modern``
at batch 1,024 (compiled and PyTorch, one thread, in a child process).

    python benchmarks/bench_train_speed.py --data-dir ../shared/data
    python benchmarks/bench_train_speed.py --data-dir ../shared/data --quick   # plumbing only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, child_json, load_average, machine_info, markdown_table, write_result

HERE = Path(__file__).resolve().parent
BUSY_LOOP = "while True: pass"
EVAL = """
import json, sys, time
import numba, numpy as np, torch
torch.set_num_threads(1)
numba.set_num_threads(1)
from lenet5.compiled import build
from lenet5.data.datasets import load_split
from lenet5.data.transforms import Normalization, to_unit
from lenet5.models import create_model
images, labels = load_split("mnist", "test", sys.argv[1] or None)
norm = Normalization.make("standard", "mnist")
def rate(fn, n, repeats=3):
    fn()
    best = min(_time(fn) for _ in range(repeats))
    return n / best
def _time(fn):
    t = time.perf_counter(); fn(); return time.perf_counter() - t
compiled = build("lenet5-modern", seed=0)
c = rate(lambda: compiled.evaluate_images(images, normalization=norm, batch_size=1024), 10000)
numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
c2 = rate(lambda: compiled.evaluate_images(images, normalization=norm, batch_size=1024), 10000)
numba.set_num_threads(1)
model = create_model("lenet5-modern").eval()
x = norm(to_unit(images))
def torch_eval():
    with torch.no_grad():
        for i in range(0, len(x), 1024):
            model(x[i:i + 1024])
t = rate(torch_eval, 10000)
print(json.dumps({"compiled": c, "torch": t, "compiled_2_threads": c2}))
"""


def lenet5_train(data_dir: str | None, batch: int, n: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "lenet5", "train", "--model", "lenet5-modern", "--epochs",
               "2", "--batch-size", str(batch), "--limit-train", str(n), "--out", f"{tmp}/run",
               "--no-progress", *(["--data-dir", data_dir] if data_dir else []), *extra]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
        rows = [json.loads(line) for line in Path(f"{tmp}/run/metrics.jsonl").read_text().split("\n")
                if line.strip()]
        config = json.loads(Path(f"{tmp}/run/config.json").read_text())
    banner = next((line for line in out.stdout.splitlines() if line.startswith("lenet5-modern (")),
                  "")
    return {"images_per_s": rows[-1]["images_per_s"], "engine": config["engine"],
            "banner": banner, "command": cmd}


def plain(data_dir: str | None, batch: int, n: int, threads: int) -> dict:
    cmd = [sys.executable, str(HERE / "plain_lenet5.py"), "--threads", str(threads),
           "--batch-size", str(batch), "--limit-train", str(n), "--max-epochs", "2",
           "--target", "2", *(["--data-dir", data_dir] if data_dir else [])]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    trained = [e for e in map(json.loads, out.stdout.splitlines()) if e["event"] == "trained"]
    return {"images_per_s": trained[-1]["images"] / trained[-1]["seconds"], "command": cmd}


def measure(args, busy: bool) -> list[dict]:
    loop = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if busy else None
    try:
        if loop:
            time.sleep(1.0)  # running before the trainers count the idle cores
        rows = []
        for batch in args.batches:
            row = {"condition": "busy" if busy else "idle", "batch": batch,
                   "load": load_average(),
                   "lenet5 train": lenet5_train(args.data_dir, batch, args.limit_train, []),
                   "plain script": plain(args.data_dir, batch, args.limit_train, args.threads)}
            if not args.quick:  # --quick checks the plumbing: one trainer of each kind
                row["lenet5 train --engine torch"] = lenet5_train(
                    args.data_dir, batch, args.limit_train, ["--engine", "torch"])
                row["plain script, 1 thread"] = plain(args.data_dir, batch, args.limit_train, 1)
            rows.append(row)
            print(f"  {rows[-1]['condition']} batch {batch}: done", flush=True)
        return rows
    finally:
        if loop:
            loop.kill()
            loop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--threads", type=int, default=2, help="the plain script's threads")
    p.add_argument("--limit-train", type=int, default=20000)
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    p.add_argument("--quick", action="store_true",
                   help="tiny runs that only check the plumbing (no torch-engine or 1-thread rows)")
    p.add_argument("--json", default=str(RESULTS / "train-speed.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.limit_train, args.batches = 1000, [64]
    rows = measure(args, busy=False) + measure(args, busy=True)
    evaluation = child_json([sys.executable, "-c", EVAL, args.data_dir or ""])
    who = [w for w in ("lenet5 train", "lenet5 train --engine torch", "plain script",
                       "plain script, 1 thread") if w in rows[0]]
    table = []
    for r in rows:
        idle = next(i for i in rows if i["condition"] == "idle" and i["batch"] == r["batch"])
        for w in who:
            rate = r[w]["images_per_s"]
            table.append([r["condition"], r["batch"], w + (f" ({r[w]['engine']})"
                                                          if "engine" in r[w] else ""),
                          f"{rate:,.0f}", f"{rate / r['plain script']['images_per_s']:.2f}x",
                          f"{idle[w]['images_per_s'] / rate:.2f}x" if r is not idle else "",
                          f"{r['load']:.1f}" if r["load"] is not None else ""])
    print("\ntraining images per second (second epoch), side by side:")
    markdown_table(["condition", "batch", "who", "images/s", "/ plain script", "slowdown vs idle",
                    "load before"], table)
    print(f"\nevaluation, lenet5-modern, batch 1024, one thread: compiled "
          f"{evaluation['compiled']:,.0f} images/s, PyTorch {evaluation['torch']:,.0f}; "
          f"compiled on two threads {evaluation['compiled_2_threads']:,.0f}")
    write_result(args.json, {**machine_info(threads=args.threads),
                             "limit_train": args.limit_train, "rows": rows,
                             "evaluation_batch_1024": evaluation})
    return 0


if __name__ == "__main__":
    sys.exit(main())
