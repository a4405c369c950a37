"""Modern LeNet-5-sized model: accuracy over several seeds, and their softmax ensemble (issue #7, run 4).

Trains one preset (default ``best``: batch-norm, dropout, distortions, AdamW + one-cycle) once
per seed with ``lenet5.training.loop.train``, exactly as ``lenet5 train --preset best --seed S`` would,
then reloads every checkpoint, and reports each seed's accuracy, their mean and sample standard
deviation, and the accuracy of the ensemble that averages the seeds' softmax probabilities.
With ``--val-split N`` the last N training images are held out and everything is measured on
them instead of the test set (for choosing settings without looking at the test set).

    python benchmarks/bench_modern.py --data-dir ../shared/data                      # 3 seeds, test
    python benchmarks/bench_modern.py --data-dir ../shared/data --val-split 10000 --set epochs=8
    python benchmarks/bench_modern.py --data-dir ../shared/data --quick              # < 1 min
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from common import RESULTS, load_average, machine_info, markdown_table, parse_sets, write_result
from lenet5.checkpoint import versions
from lenet5.config import resolve_config
from lenet5.data.datasets import load_split
from lenet5.data.transforms import Normalization, to_unit
from lenet5.inference.evaluate import model_outputs
from lenet5.inference.load import load
from lenet5.training.loop import cpu_threads, train


def eval_split(cfg, quick: bool) -> tuple[str, torch.Tensor, torch.Tensor]:
    """The images the seeds are scored on: the held-out tail of train, or the test set."""
    if cfg.val_split:
        xs, ys = load_split(cfg.dataset, "train", cfg.data_dir)
        limit = cfg.limit_train or len(xs)
        xs, ys = xs[:limit][-cfg.val_split :], ys[:limit][-cfg.val_split :]
        name = f"validation (last {cfg.val_split} of the training images)"
    else:
        xs, ys = load_split(cfg.dataset, "test", cfg.data_dir)
        name = "test"
    return name, to_unit(xs), torch.as_tensor(ys.astype("int64"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="best")
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    p.add_argument("--data-dir")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--val-split", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any TrainConfig field, or model_args.NAME=VALUE (as lenet5 train --set)")
    p.add_argument("--quick", action="store_true", help="2,000 images, 1 epoch, 2 seeds")
    p.add_argument("--runs", default="runs/bench-modern", help="parent of the run directories")
    p.add_argument("--json", default=None, help="result file (default benchmarks/results/...)")
    args = p.parse_args(argv)

    seeds = args.seeds[:2] if args.quick else args.seeds
    base = dict(dataset=args.dataset, threads=args.threads, progress=False, val_split=args.val_split,
                data_dir=args.data_dir, **parse_sets(args.set))
    if args.quick:
        base.update(limit_train=2000 + args.val_split, epochs=1)
    tag = f"{args.preset}-{args.dataset}" + ("-val" if args.val_split else "") + ("-quick" if args.quick else "")
    t_start, info = time.perf_counter(), machine_info(args.threads)
    runs = []
    for seed in seeds:
        out = Path(args.runs) / f"{tag}-s{seed}"
        cfg = resolve_config(args.preset, overrides={**base, "seed": seed, "out": str(out)})
        t0 = time.perf_counter()
        last = train(cfg, log=lambda msg: print(msg, flush=True))
        runs.append({"seed": seed, "run_dir": str(out), "train_seconds": time.perf_counter() - t0,
                     "last_epoch": last})

    split, x, y = eval_split(cfg, args.quick)
    probs = []
    with cpu_threads(args.threads):
        for r in runs:
            loaded = load(r["run_dir"])
            model, meta = loaded.model, loaded.meta
            norm = Normalization(**meta["normalization"])
            pr = torch.softmax(model_outputs(model, norm(x), 1000), 1)
            probs.append(pr)
            r["errors"] = int((pr.argmax(1) != y).sum())
            r["accuracy"] = 1 - r["errors"] / len(y)
    ens = torch.stack(probs).mean(0)
    ens_errors = int((ens.argmax(1) != y).sum())
    accs = [100 * r["accuracy"] for r in runs]
    mean = statistics.mean(accs)
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    n_params = sum(v.numel() for v in model.parameters())
    wall = time.perf_counter() - t_start

    print(f"\n{args.preset} on {args.dataset}, scored on {split} ({len(y)} images), "
          f"{n_params:,} parameters, {args.threads} thread(s)\n")
    markdown_table(["seed", "accuracy %", "errors", "train time s"], [
        *((r["seed"], f"{100 * r['accuracy']:.2f}", r["errors"], f"{r['train_seconds']:.0f}")
          for r in runs),
        ("mean +- std", f"{mean:.2f} +- {std:.2f}", "", ""),
        (f"ensemble of {len(runs)} (mean softmax)", f"{100 * (1 - ens_errors / len(y)):.2f}",
         ens_errors, "")])

    write_result(args.json or RESULTS / f"modern-{tag}.json", {
        **info, "versions": versions(), "preset": args.preset,
        "dataset": args.dataset, "scored_on": split, "count": len(y), "parameters": n_params,
        "train_config": json.loads((Path(runs[0]["run_dir"]) / "config.json").read_text()),
        "seeds": runs, "mean_accuracy_pct": mean, "std_accuracy_pct": std,
        "ensemble_errors": ens_errors, "ensemble_accuracy_pct": 100 * (1 - ens_errors / len(y)),
        "wall_seconds": wall, "load_average_1min_at_end": load_average(),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
