"""Issue 15, item 5: which training beats the paper's with the same network, on the validation split.

Each probe is one ``lenet5 train`` of the paper's network (``lenet5-1998``: C3 table, trainable
subsampling, bitmap RBF, MAP criterion, 60,000 weights) on the first 50,000 training digits,
scored on the last 10,000 (``--val-split 10000``; the test set is never read for a choice),
seed 0, compiled engine, one thread, a cosine schedule. The probes with distortions draw fresh
affine ones (the ``--distort`` defaults plus +-10 degree rotations) and differ in the optimiser,
batch and passes; those without (``*-nodistort``) try Adam and AdamW's weight decay against
over-fitting. A finished run under ``runs/probe/NAME-s0`` is reused.

    python benchmarks/paper_best_probes.py --data-dir ../shared/data [--only NAME ...]

prints the table and writes ``benchmarks/results/paper-best-probes.json``. The SDLM probes at
batch 1 with the paper's protocol and half ranges are ``bench_paper.py --seeds`` runs (their
own JSON files); docs/results.md ("paper gap", section 6) lists both.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from common import (
    RESULTS,
    machine_info,
    markdown_table,
    run_rows,
    with_earlier_probes,
    write_result,
)

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--model", "lenet5-1998", "--loss", "map", "--schedule", "cosine", "--engine",
          "compiled", "--threads", "1", "--val-split", "10000", "--eval-train", "--no-progress"]
DISTORT = ["--distort", "--distort-rotate", "10"]


def probe(optimizer: str, lr: str, batch: int, epochs: int, *, mu: str | None = None,
          weight_decay: str | None = None, distort: bool = True, schedule: str = "cosine",
          note: str = ""):
    """``(what, lenet5 train options)`` of one probe."""
    name = {"sdlm": "SDLM", "adam": "Adam", "adamw": "AdamW"}[optimizer]
    rate = "eta" if optimizer == "sdlm" else "lr"
    what = (f"{name}{f' (weight decay {weight_decay})' if weight_decay else ''}, batch {batch}"
            f"{f', mu {mu}' if mu else ''}, {rate} {lr} {schedule}, {epochs} passes"
            f"{'' if distort else ', no distortions'}{note}")
    opts = ["--optimizer", optimizer, *(["--sdlm-mu", mu] if mu else []),
            *(["--weight-decay", weight_decay] if weight_decay else []),
            "--lr", lr, "--batch-size", str(batch), "--epochs", str(epochs),
            *(DISTORT if distort else []), *(["--schedule", schedule] if schedule != "cosine" else [])]
    return what, opts


PROBES = {  # name: (what, options)
    "sdlm-b1-m3": probe("sdlm", "5e-4", 1, 30),
    "sdlm-b32-m2": probe("sdlm", "5e-3", 32, 30),
    "sdlm-b32-m4": probe("sdlm", "1.5e-2", 32, 30),
    "sdlm-b32-m5": probe("sdlm", "8e-3", 32, 50),
    "sdlm-b32-e50": probe("sdlm", "5e-3", 32, 50),
    "sdlm-b32-e80": probe("sdlm", "5e-3", 32, 80),
    "sdlm-b32-onecycle-1e-2": probe("sdlm", "1e-2", 32, 50, schedule="onecycle"),
    "sdlm-b1-mu0.1-lr2.5e-3": probe("sdlm", "2.5e-3", 1, 30, mu="0.1"),
    "sdlm-b1-mu0.1-lr1e-3": probe("sdlm", "1e-3", 1, 30, mu="0.1"),
    "adam-m1": probe("adam", "2e-3", 32, 30),
    "adam-m1b-e50": probe("adam", "2e-3", 32, 50, note=" (preset paper-best)"),
    "adam-nodistort": probe("adam", "2e-3", 32, 30, distort=False),
    # no distortions: weight decay against over-fitting
    **{f"adamw-wd{wd}-nodistort": probe("adamw", "2e-3", 32, 30, weight_decay=wd, distort=False)
       for wd in ("0.01", "0.05", "0.1", "0.2")},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("LENET5_DATA_DIR", "../shared/data"))
    ap.add_argument("--only", nargs="+", choices=sorted(PROBES), help="these probes only")
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "probe"))
    ap.add_argument("--json", default=str(RESULTS / "paper-best-probes.json"))
    args = ap.parse_args()

    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    out, table = {}, []
    for name in args.only or PROBES:
        what, opts = PROBES[name]
        run = Path(args.runs_dir) / f"{name}-s0"
        epochs = int(opts[opts.index("--epochs") + 1])
        cmd = ["lenet5", "train", *COMMON, *opts, "--seed", "0", "--data-dir", args.data_dir,
               "--out", str(run)]
        if len(run_rows(run)) < epochs:
            if (run / "checkpoint.json").exists():
                cmd += ["--resume", str(run)]
            print("training", name, flush=True)
            subprocess.run(cmd, check=True, env=env)
        rows = run_rows(run)
        last = rows[-1]
        out[name] = dict(what=what, command=" ".join(cmd[:cmd.index("--out") + 2]),
                         passes=len(rows), val_error=100 * last["val_error"],
                         train_set_error=100 * last["train_set_error"],
                         val_by_pass=[round(100 * r["val_error"], 2) for r in rows])
        table.append([name, what, f"{100 * last['val_error']:.2f}",
                      f"{100 * last['train_set_error']:.2f}"])
    markdown_table(["probe", "what", "val error %", "training-set error %"], table)
    out = with_earlier_probes(args.json, out, bool(args.only))
    write_result(args.json, dict(
        command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), machine=machine_info(1),
        note="seed 0, --val-split 10000; training-set error on the 50,000 undistorted "
             "training digits", probes=out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
