"""Issue 17: do batch-norm statistics measured on undistorted digits read clean digits better?

A model trained on distorted and augmented digits keeps running batch-norm statistics of
those. For each run given (trained with ``--val-split N``), this counts the validation errors
with its own statistics, then with the statistics re-estimated on its undistorted training
digits (the first ``60,000 - N``, or of ``--limit-train``'s; weights unchanged; PyTorch's cumulative average over batches
of 128 in training mode), on the same held-out digits. The test set is never read.

    python benchmarks/bn_recalibrate.py --data-dir ../shared/data runs/r17/w16-share0.25-e50-s{0,1,2}

prints the table and writes ``benchmarks/results/bn-recalibrate.json``.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from common import RESULTS, machine_info, markdown_table, write_result


def errors(model, x: torch.Tensor, y: torch.Tensor) -> int:
    from lenet5.inference.evaluate import model_outputs

    return int((model.scores(model_outputs(model, x, 2000)).argmax(1) != y).sum())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run directories trained with --val-split")
    ap.add_argument("--data-dir", default=os.environ.get("LENET5_DATA_DIR", "../shared/data"))
    ap.add_argument("--json", default=str(RESULTS / "bn-recalibrate.json"))
    args = ap.parse_args()

    from lenet5.data.datasets import load_split
    from lenet5.data.transforms import Normalization, to_unit
    from lenet5.inference.load import load

    torch.set_num_threads(1)
    images, labels = load_split("mnist", "train", args.data_dir)
    rows, out = [], {}
    for run in args.runs:
        loaded = load(run)
        split, limit = loaded.train_config["val_split"], loaded.train_config.get("limit_train")
        if not split:
            raise SystemExit(f"{run}: trained without --val-split; its validation digits are unknown")
        model = loaded.model.eval()
        norm = Normalization(**loaded.meta["normalization"])
        end = limit or len(images)  # the loop holds out the last `split` of the first `limit`
        cut = end - split
        vx = norm(to_unit(images[cut:end]))
        vy = torch.as_tensor(labels[cut:end].astype(np.int64))
        before = errors(model, vx, vy)
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not norms:
            raise SystemExit(f"{run}: the model has no batch-norm")
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over every batch below
        model.train()
        with torch.no_grad():
            for i in range(0, cut, 128):
                model(norm(to_unit(images[i : min(i + 128, cut)])))
        model.eval()
        after = errors(model, vx, vy)
        out[run] = {"validation_digits": split, "errors_own_statistics": before,
                    "errors_clean_statistics": after}
        rows.append([run, split, before, after])
    markdown_table(["run", "validation digits", "errors, own statistics",
                    "errors, statistics of undistorted digits"], rows)
    write_result(args.json, {**machine_info(threads=1), "runs": out})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
