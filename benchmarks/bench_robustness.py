"""Accuracy of models on the corruption suite (issue #17): clean, ten strong settings, mean.

Each model reads the same MNIST digits (the test set, or with ``--val`` the last 10,000
training digits, for choosing a recipe without the test set), corrupted by
:data:`lenet5.data.corruptions.PROBE` with no re-centring; the table gives accuracy % per
setting and model, the JSON adds the full curves of ``lenet5 viz robustness``.

    python benchmarks/bench_robustness.py --data-dir ../shared/data lenet5-modern lenet5-1998
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from common import RESULTS, machine_info, markdown_table, write_result
from lenet5.data.datasets import load_split
from lenet5.inference.predict import Predictor
from lenet5.reporting import robustness


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="bundled names, run directories or checkpoints")
    ap.add_argument("--data-dir")
    ap.add_argument("--limit", type=int, default=None, help="first N digits only")
    ap.add_argument("--val", action="store_true", help="the last 10,000 training digits")
    ap.add_argument("--curves", action="store_true", help="also every severity of every curve")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    split = "train" if args.val else "test"
    x, y = load_split("mnist", split, args.data_dir)
    if args.val:
        x, y = x[-10000:], y[-10000:]
    n = args.limit or len(x)
    x, y = x[:n].astype(np.float32) / 255, y[:n]
    predictors = [Predictor.load(m, reject=False) for m in args.models]
    names = [str(m) for m in args.models]
    probes = {name: robustness.probe(p, x, y) for name, p in zip(names, predictors)}
    markdown_table(["setting", *names], robustness.probe_table(probes))
    result = {**machine_info(1), "digits": f"{'last 10000 training' if args.val else 'test'} "
                                           f"digits, first {n}", "probe": probes}
    if args.curves:
        for p, name in zip(predictors, names):
            p.name = name
        result["curves"] = robustness.curves(predictors, x, y)
    tag = "val" if args.val else "test"
    write_result(args.out or RESULTS / f"robustness-{tag}.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
