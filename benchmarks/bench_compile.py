"""How long the compiled engine takes to compile, the first time, before it trains anything.

Numba compiles a kernel on its first call and caches the machine code on disk; a fresh
checkout (CI, a user's first ``lenet5 train``) pays for it once. Each measurement runs in a
child process with an empty ``NUMBA_CACHE_DIR``, one thread, and times the first call of each
entry point in turn (what an earlier step compiled is not compiled again):

- ``modern pass``: ``lenet5-modern`` with batch-norm, float32, one training pass (SGD, batch 32)
- ``modern evaluation``: its ``evaluate_images``
- ``1998 curvature``, ``1998 pass``, ``1998 evaluation``: ``lenet5-1998``, float32, SDLM's
  Gauss-Newton diagonal, one pass at batch 1, evaluation

Then, compiled, the speed of what was compiled: the modern pass over 6,400 digits at batch 64,
best of three (images/s), so a change that compiles faster can be seen not to run slower.

``--before REV`` also measures the package as it was at commit ``REV`` (a temporary git
worktree), in the same run, after HEAD; the table gives both and their ratio.

    python benchmarks/bench_compile.py --data-dir ../shared/data [--before 3a602cc]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import RESULTS, machine_info, markdown_table, worktree, write_result

STEPS = ("modern pass", "modern evaluation", "1998 curvature", "1998 pass", "1998 evaluation")


def measure(data_dir: str) -> dict:
    """Seconds to the end of each step's first call (run in a child with an empty cache)."""
    import time

    import numba
    import numpy as np

    import lenet5
    from lenet5.compiled import build, make_optimizer
    from lenet5.data.datasets import load_split

    numba.set_num_threads(1)
    x, y = load_split("mnist", "train", data_dir)
    x, y = x[:100], y[:100].astype(np.int64)
    norm = (0.1 / 1.275, 1.275)
    out = {"package": str(Path(lenet5.__file__).parent)}

    def timed(step, fn):
        t = time.perf_counter()
        fn()
        out[step] = time.perf_counter() - t

    modern = build("lenet5-modern", {"batchnorm": True}, np.float32, seed=0)
    opt = make_optimizer(modern, "sgd", 0.05, momentum=0.9, nesterov=True)
    timed("modern pass", lambda: modern.train_pass(x, y, np.arange(100), opt, batch_size=32,
                                                   normalization=norm))
    timed("modern evaluation", lambda: modern.evaluate_images(x, normalization=norm))
    paper = build("lenet5-1998", {}, np.float32, seed=0)
    sdlm = make_optimizer(paper, "sdlm", 5e-4)
    timed("1998 curvature", lambda: sdlm.set_curvature(paper.curvature(x[:50], np.arange(50),
                                                                       norm)))
    timed("1998 pass", lambda: paper.train_pass(x, y, np.arange(100), sdlm, 5e-4,
                                                normalization=norm))
    timed("1998 evaluation", lambda: paper.evaluate_images(x, normalization=norm))
    xs, ys = load_split("mnist", "train", data_dir)
    xs, ys = xs[:6400], ys[:6400].astype(np.int64)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        modern.train_pass(xs, ys, np.arange(6400), opt, batch_size=64, normalization=norm)
        best = min(best, time.perf_counter() - t)
    out["modern pass images/s"] = 6400 / best
    return out


def child(src: Path | None, data_dir: str) -> dict:
    """:func:`measure` in a fresh process with an empty Numba cache (and ``src`` first on the
    path when measuring another checkout)."""
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "NUMBA_NUM_THREADS": "1",
               "OMP_NUM_THREADS": "1"}
        if src is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(src), str(Path(__file__).parent)])
        proc = subprocess.run([sys.executable, __file__, "--child", "--data-dir", data_dir],
                              env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"the measuring process failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("LENET5_DATA_DIR", "../shared/data"))
    ap.add_argument("--before", metavar="REV", help="also measure the package at this commit")
    ap.add_argument("--json", default=str(RESULTS / "compile.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.data_dir)))
        return 0

    info = machine_info(threads=1)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], capture_output=True,
                           text=True, cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    here = "working tree" if dirty else "HEAD"  # never the same name as --before's
    results = {here: child(None, args.data_dir)}
    if args.before:
        before = args.before if args.before != here else f"{args.before} (before)"
        with worktree(args.before) as tree:
            results[before] = child(tree / "src", args.data_dir)
            if not results[before]["package"].startswith(str(tree)):
                raise SystemExit(f"the child read {results[before]['package']}, not {tree}")

    revs = list(results)
    rows = []
    for step in [*STEPS, "total"]:
        secs = [sum(results[r][s] for s in STEPS) if step == "total" else results[r][step]
                for r in revs]
        rows.append([step, *(f"{s:.1f}" for s in secs),
                     *([f"{secs[1] / secs[0]:.2f}x"] if len(revs) > 1 else [])])
    print("\nseconds to compile on first use (empty Numba cache, one thread):")
    markdown_table(["step", *revs, *(["before / HEAD"] if len(revs) > 1 else [])], rows)
    speed = [results[r]["modern pass images/s"] for r in revs]
    print("\nthe modern pass once compiled (batch 64, 6,400 digits, best of 3), images/s: "
          + ", ".join(f"{r} {v:,.0f}" for r, v in zip(revs, speed))
          + (f" ({revs[0]} / {revs[1]} {speed[0] / speed[1]:.2f}x)" if len(revs) > 1 else ""))
    write_result(args.json, {**info, "seconds": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
