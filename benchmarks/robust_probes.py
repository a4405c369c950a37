"""Issue 17: which robust recipe reads clean digits best, on the validation split.

Each probe is one ``lenet5 train --preset robust`` with a few settings changed, trained on the
first 50,000 training digits and scored on the last 10,000 (``--val-split 10000``; the test set
is never read for a choice), seed 0 (``--seeds`` for more), compiled engine, one thread. For each, the validation
error after the last epoch and the corruption suite (``lenet5.reporting.robustness.probe``, as
``bench_robustness.py --val``) on those 10,000 held-out digits: a recipe is only worth having
if it reads clean digits better without losing the suite. A finished run under
``runs/r17/NAME-sS`` is reused once its ``config.json`` is checked to be what the probe's
command makes. With several seeds, a second table gives each probe's validation error per seed
and its mean +- std over every seed on record (earlier runs of the JSON included).

    python benchmarks/robust_probes.py --data-dir ../shared/data [--only NAME ...] [--seeds 0 1 2]

prints the table and writes ``benchmarks/results/robust-probes.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from common import (
    RESULTS,
    machine_info,
    markdown_table,
    run_rows,
    with_earlier_probes,
    write_result,
)

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--preset", "robust", "--engine", "compiled", "--threads", "1", "--val-split", "10000",
          "--no-progress"]
LENET5_WIDTHS = ["--set", "model_args.widths=[6,16,120,84]"]  # the 1998 widths (61,932 params)

PROBES = {  # name: (what, options on top of --preset robust)
    "nodrop-e50": ("1998 widths, every image augmented", [*LENET5_WIDTHS, "--augment-share", "1"]),
    "w16-nodrop-e50": ("C1/C3/C5 16/32/56, every image augmented", ["--augment-share", "1"]),
    "share0.5-e50": ("1998 widths, half the images augmented", LENET5_WIDTHS),
    "w16-share0.5-e50": ("C1/C3/C5 16/32/56, half the images augmented (the preset)", []),
    "w16-share0.25-e50": ("C1/C3/C5 16/32/56, a quarter of the images augmented",
                          ["--augment-share", "0.25"]),
    "w16-ema-e50": ("the preset, evaluated with a weight average (decay 0.999)",
                    ["--ema", "0.999"]),
    "w16-share0.25-ema-e50": ("a quarter augmented, with the weight average (decay 0.999)",
                              ["--augment-share", "0.25", "--ema", "0.999"]),
    "w16-share0.1-e50": ("C1/C3/C5 16/32/56, a tenth of the images augmented",
                         ["--augment-share", "0.1"]),
    "w16-share0.25-e75": ("a quarter augmented, 75 epochs", ["--augment-share", "0.25",
                                                              "--epochs", "75"]),
    "w16-wd0.05-e50": ("the preset with weight decay 0.05 (was 5e-4)", ["--weight-decay", "0.05"]),
    "w16-clean5-e50": ("the preset, its last 5 passes on the digits as they are",
                       ["--clean-epochs", "5"]),
    "w16-clean10-e50": ("the preset, its last 10 passes on the digits as they are",
                        ["--clean-epochs", "10"]),
    "w16-shear0.1-e50": ("the preset with the affine shear at 0.1 (was 0.2)",
                         ["--distort-shear", "0.1"]),
    "w16-lr2e-3-e50": ("the preset at half the peak rate, 2e-3 (was 4e-3)", ["--lr", "2e-3"]),
    "w16-b64-e50": ("the preset at batch 64 (was 128), twice the steps", ["--batch-size", "64"]),
    "w24-32-48-e50": ("C1/C3/C5 of 24/32/48 maps (63,458 parameters; the preset 16/32/56)",
                      ["--set", "model_args.widths=[24,32,48,84]"]),
    "w16-ls0.1-e50": ("the preset with label smoothing 0.1 (was none)",
                      ["--label-smoothing", "0.1"]),
    "w16-b256-e50": ("the preset at batch 256 (was 128), half the steps",
                     ["--batch-size", "256"]),
}



def same_config(run: Path, cmd: list[str]) -> None:
    """Refuse to reuse a run whose recorded config is not what ``cmd`` makes."""
    from lenet5.cli import build_parser
    from lenet5.commands.train import config_from_args
    from lenet5.config import TrainConfig
    from lenet5.models import make_config

    def plain(cfg: TrainConfig) -> dict:  # defaults filled in, model options spelled out
        return {**cfg.to_dict(), "model_args": make_config(cfg.model, cfg.model_args).to_dict()}

    want = plain(config_from_args(build_parser().parse_args(cmd[1:]))[0])
    have = plain(TrainConfig.from_dict(json.loads((run / "config.json").read_text())))
    skip = {"data_dir", "out", "progress", "overwrite", "resume", "preset"}
    diff = {k: (have.get(k), v) for k, v in want.items() if k not in skip and have.get(k) != v}
    if diff:
        raise SystemExit(f"{run}: its config.json differs from the probe's command: {diff}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("LENET5_DATA_DIR", "../shared/data"))
    ap.add_argument("--only", nargs="+", choices=sorted(PROBES), help="these probes only")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds to train or reuse")
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "r17"))
    ap.add_argument("--json", default=str(RESULTS / "robust-probes.json"))
    args = ap.parse_args()

    from lenet5.data.datasets import load_split
    from lenet5.inference.predict import Predictor
    from lenet5.reporting import robustness

    torch.set_num_threads(1)
    x, y = load_split("mnist", "train", args.data_dir)
    x, y = x[-10000:].astype(np.float32) / 255, y[-10000:]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    out, table = {}, []
    earlier = json.loads(Path(args.json).read_text()).get("probes", {}) if (
        Path(args.json).exists()) else {}
    for name in args.only or PROBES:
        what, opts = PROBES[name]
        by_seed = dict(earlier.get(name, {}).get("by_seed", {}))
        for seed in args.seeds:
            run = Path(args.runs_dir) / f"{name}-s{seed}"
            cmd = ["lenet5", "train", *COMMON, *opts, "--seed", str(seed), "--data-dir",
                   args.data_dir, "--out", str(run)]
            rows = run_rows(run)
            epochs = json.loads((run / "config.json").read_text())["epochs"] if rows else None
            if rows and len(rows) >= epochs:
                same_config(run, cmd)
            else:
                if (run / "checkpoint.json").exists():
                    cmd += ["--resume", str(run)]
                print("training", name, "seed", seed, flush=True)
                subprocess.run(cmd, check=True, env=env)
                rows = run_rows(run)
            suite = robustness.probe(Predictor.load(str(run), reject=False), x, y)
            result = dict(what=what, command=" ".join(cmd[:cmd.index("--out") + 2]),
                          epochs=len(rows), val_error=100 * rows[-1]["val_error"],
                          val_by_epoch=[round(100 * r["val_error"], 2) for r in rows],
                          suite=suite)
            by_seed[str(seed)] = {k: result[k] for k in ("val_error", "suite", "command")}
            if seed == 0:
                out[name] = result
            table.append([name, seed, what, f"{100 * rows[-1]['val_error']:.2f}",
                          f"{100 * suite['clean']:.2f}", f"{100 * suite['mean']:.2f}"])
        out.setdefault(name, dict(earlier.get(name, {}), what=what))["by_seed"] = by_seed
    markdown_table(["probe", "seed", "what", "val error %", "suite: clean %",
                    "suite: mean of the ten %"], table)
    out = with_earlier_probes(args.json, out, bool(args.only))
    seeds_table = []
    for name, probe in out.items():
        errs = {int(s): r["val_error"] for s, r in probe.get("by_seed", {}).items()}
        if len(errs) > 1:
            v = np.array([errs[s] for s in sorted(errs)])
            seeds_table.append([name, ", ".join(map(str, sorted(errs))),
                                ", ".join(f"{e:.2f}" for e in v),
                                f"{v.mean():.2f} +- {v.std(ddof=1):.2f}",
                                f"{np.mean([r['suite']['mean'] for r in probe['by_seed'].values()]) * 100:.2f}"])
    if seeds_table:
        print("\nover seeds (validation error %, sample std):")
        markdown_table(["probe", "seeds", "val error % per seed", "mean +- std",
                        "suite mean %"], seeds_table)
    write_result(args.json, dict(
        command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), machine=machine_info(1),
        note="--val-split 10000; suite on the 10,000 held-out training digits; top-level "
             "fields are seed 0's, by_seed every seed's",
        probes=out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
