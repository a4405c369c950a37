"""Start-up of the commands users type: HEAD against the package at ``--before REV``.

Each command runs ``--repeats`` times as a fresh process, HEAD and ``REV`` alternating (so
both see the same minutes of a shared machine), after one untimed run of each that loads (or,
for ``REV``, compiles) the Numba kernels. Timed: ``lenet5 train --preset fast`` on 640 digits
until its banner (data read, engine built: what every run pays before its first step) and to
its exit; ``lenet5 predict --engine numpy`` on one image and ``lenet5 evaluate --engine
numpy`` on the 10,000 test digits, to their exit; ``lenet5 --help``. Reported: the median of
each, and HEAD's over REV's.

    python benchmarks/bench_startup.py --data-dir ../shared/data --before REV [--repeats 7]
    python benchmarks/bench_startup.py --data-dir ../shared/data --quick    # one round, HEAD
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

from common import (
    RESULTS,
    machine_info,
    markdown_table,
    run_timed,
    tree_env,
    worktree,
    write_result,
)


def digit_png(data_dir: str, path: Path) -> Path:
    """The first MNIST test digit, dark on white and four times as large, as a user's PNG."""
    from PIL import Image

    from lenet5.data.datasets import load_split

    images, _ = load_split("mnist", "test", data_dir)
    Image.fromarray(255 - images[0]).resize((112, 112)).save(path)
    return path


TRAIN = "train --preset fast (640 digits, 1 pass)"


def commands(data_dir: str, out: Path, image: Path) -> dict[str, list[str]]:
    lenet5 = [sys.executable, "-m", "lenet5"]
    return {
        TRAIN: [
            *lenet5, "train", "--preset", "fast", "--limit-train", "640", "--no-progress",
            "--threads", "2", "--data-dir", data_dir, "--out", str(out)],
        "predict --engine numpy (one image)": [
            *lenet5, "predict", "--model", "lenet5-modern", "--engine", "numpy", str(image)],
        "evaluate --engine numpy (10,000 digits)": [
            *lenet5, "evaluate", "lenet5-modern", "--engine", "numpy", "--data-dir", data_dir],
        "--help": [*lenet5, "--help"],
    }


def timed(cmd: list[str], env: dict | None, out: Path) -> dict:
    run = run_timed(cmd, env=env)
    banner = next((s for s, text in run["lines"] if text.rstrip().endswith(f"run {out}")), None)
    return {"banner": banner, "exit": run["process_seconds"],
            "load": run["load_average_1min_before"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("LENET5_DATA_DIR"))
    p.add_argument("--before", metavar="REV", help="also time the package as it was at REV")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="one round, HEAD only: checks the plumbing")
    p.add_argument("--json", default=str(RESULTS / "startup.json"))
    args = p.parse_args(argv)
    if not args.data_dir:
        p.error("--data-dir (or LENET5_DATA_DIR) is needed")
    if args.quick:
        args.repeats, args.before = 1, None
    sides = ["HEAD", *([args.before] if args.before else [])]
    times: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp, \
            (worktree(args.before) if args.before else contextlib.nullcontext()) as tree:
        image = digit_png(args.data_dir, Path(tmp) / "digit.png")
        envs = {"HEAD": None, **({args.before: tree_env(args.before, tree)} if args.before else {})}
        for k, side in enumerate(sides):  # untimed: load or compile the kernels
            run_timed(commands(args.data_dir, Path(tmp) / f"warm-{k}", image)[TRAIN], env=envs[side])
        for i in range(args.repeats):
            for k, side in enumerate(sides):
                out = Path(tmp) / f"run-{i}-{k}"
                for name, cmd in commands(args.data_dir, out, image).items():
                    times.setdefault(name, {}).setdefault(side, []).append(timed(cmd, envs[side], out))
    rows, summary = [], {}
    for name, by_side in times.items():
        for key in ("banner", "exit"):
            med = {s: statistics.median(r[key] for r in by_side[s]) for s in sides
                   if all(r[key] is not None for r in by_side[s])}
            if not med:
                continue
            ratio = med["HEAD"] / med[args.before] if args.before and args.before in med else None
            summary[f"{name}: {key}"] = {**med, "head_over_before": ratio}
            rows.append([name, "to the banner" if key == "banner" else "to exit",
                         *(f"{med[s]:.2f}" for s in sides),
                         *([f"{ratio:.2f}x"] if args.before else [])])
    print(f"\nmedian seconds over {args.repeats} fresh processes each, alternating")
    markdown_table(["command", "until", *sides, *(["HEAD / before"] if args.before else [])], rows)
    write_result(args.json, {**machine_info(2), "before": args.before, "repeats": args.repeats,
                             "medians": summary, "runs": times})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
