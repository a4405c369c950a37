"""``lenet5 evaluate CHECKPOINT``: accuracy, per-class accuracy, confusion matrix, report."""

from __future__ import annotations

import json

from ..inference.evaluate import evaluate_checkpoint, format_report


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint on a split")
    p.add_argument("checkpoint", help="run directory or .safetensors file")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"], help="default: the checkpoint's")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--data-dir")
    p.add_argument("--engine", default="torch", choices=["torch", "numpy"])
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    m = evaluate_checkpoint(args.checkpoint, args.dataset, args.split, args.data_dir, args.engine)
    if args.json:
        print(json.dumps(m, indent=2))
    else:
        print(format_report(m, f"{m['model']} on {m['dataset']} {m['split']} ({m['engine']} engine)"))
    return 0
