"""``lenet5 evaluate [RUN]``: accuracy, per-class accuracy, confusion matrix, report."""

from __future__ import annotations

import json

from ..data.datasets import DATASETS, SPLITS
from ..inference.load import ENGINES


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a model on a split")
    p.add_argument("source", nargs="?", metavar="RUN",
                   help="run directory, .safetensors file or bundled model name "
                        "(default: the default bundled model)")
    p.add_argument("--dataset", choices=list(DATASETS), help="default: the model's")
    p.add_argument("--split", default="test", choices=SPLITS, help="(default: test)")
    p.add_argument("--data-dir", help="data root (default: $LENET5_DATA_DIR, else the user cache)")
    p.add_argument("--engine", default="torch", choices=ENGINES,
                   help="run the model in PyTorch or the NumPy engine (default: torch)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from ..inference.evaluate import evaluate_checkpoint, format_report  # imports torch

    m = evaluate_checkpoint(args.source, args.dataset, args.split, args.data_dir, args.engine)
    if args.json:
        print(json.dumps(m, indent=2))
    else:
        print(format_report(m, f"{m['name']} ({m['model_label']}) on {m['dataset']} {m['split']} "
                               f"({m['engine']} engine)"))
    return 0
