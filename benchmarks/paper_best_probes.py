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
import json
import os
import subprocess
import sys
from pathlib import Path

from common import RESULTS, machine_info, markdown_table, write_result

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--model", "lenet5-1998", "--loss", "map", "--schedule", "cosine", "--engine",
          "compiled", "--threads", "1", "--val-split", "10000", "--eval-train", "--no-progress"]
DISTORT = ["--distort", "--distort-rotate", "10"]
PROBES = {  # name: (what, options)
    "sdlm-b1-m3": ("SDLM, batch 1, eta 5e-4 cosine, 30 passes",
                   ["--optimizer", "sdlm", "--lr", "5e-4", "--batch-size", "1", "--epochs", "30",
                    *DISTORT]),
    "sdlm-b32-m2": ("SDLM, batch 32, eta 5e-3 cosine, 30 passes",
                    ["--optimizer", "sdlm", "--lr", "5e-3", "--batch-size", "32", "--epochs",
                     "30", *DISTORT]),
    "sdlm-b32-m4": ("SDLM, batch 32, eta 1.5e-2 cosine, 30 passes",
                    ["--optimizer", "sdlm", "--lr", "1.5e-2", "--batch-size", "32", "--epochs",
                     "30", *DISTORT]),
    "sdlm-b32-m5": ("SDLM, batch 32, eta 8e-3 cosine, 50 passes",
                    ["--optimizer", "sdlm", "--lr", "8e-3", "--batch-size", "32", "--epochs",
                     "50", *DISTORT]),
    "sdlm-b1-mu0.1-lr2.5e-3": ("SDLM, batch 1, mu 0.1, eta 2.5e-3 cosine, 30 passes",
                               ["--optimizer", "sdlm", "--sdlm-mu", "0.1", "--lr", "2.5e-3",
                                "--batch-size", "1", "--epochs", "30", *DISTORT]),
    "sdlm-b1-mu0.1-lr1e-3": ("SDLM, batch 1, mu 0.1, eta 1e-3 cosine, 30 passes",
                             ["--optimizer", "sdlm", "--sdlm-mu", "0.1", "--lr", "1e-3",
                              "--batch-size", "1", "--epochs", "30", *DISTORT]),
    "adam-m1": ("Adam, batch 32, lr 2e-3 cosine, 30 passes",
                ["--optimizer", "adam", "--lr", "2e-3", "--batch-size", "32", "--epochs", "30",
                 *DISTORT]),
    "adam-m1b-e50": ("Adam, batch 32, lr 2e-3 cosine, 50 passes (preset paper-best)",
                     ["--optimizer", "adam", "--lr", "2e-3", "--batch-size", "32", "--epochs",
                      "50", *DISTORT]),
    "adam-nodistort": ("Adam, batch 32, lr 2e-3 cosine, 30 passes, no distortions",
                       ["--optimizer", "adam", "--lr", "2e-3", "--batch-size", "32",
                        "--epochs", "30"]),
}
for _wd in ("0.01", "0.05", "0.1", "0.2"):  # no distortions: weight decay against over-fitting
    PROBES[f"adamw-wd{_wd}-nodistort"] = (
        f"AdamW (weight decay {_wd}), batch 32, lr 2e-3 cosine, 30 passes, no distortions",
        ["--optimizer", "adamw", "--weight-decay", _wd, "--lr", "2e-3", "--batch-size", "32",
         "--epochs", "30"])


def rows_of(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


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
        if len(rows_of(run)) < epochs:
            if (run / "checkpoint.json").exists():
                cmd += ["--resume", str(run)]
            print("training", name, flush=True)
            subprocess.run(cmd, check=True, env=env)
        rows = rows_of(run)
        last = rows[-1]
        out[name] = dict(what=what, command=" ".join(cmd[:cmd.index("--out") + 2]),
                         passes=len(rows), val_error=100 * last["val_error"],
                         train_set_error=100 * last["train_set_error"],
                         val_by_pass=[round(100 * r["val_error"], 2) for r in rows])
        table.append([name, what, f"{100 * last['val_error']:.2f}",
                      f"{100 * last['train_set_error']:.2f}"])
    markdown_table(["probe", "what", "val error %", "training-set error %"], table)
    write_result(args.json, dict(
        command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), machine=machine_info(1),
        note="seed 0, --val-split 10000; training-set error on the 50,000 undistorted "
             "training digits", probes=out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
