"""``lenet5 compare``: the paper's Fig. 9, every classifier against its published error."""

from __future__ import annotations

import sys
from pathlib import Path

from ..reporting.compare import ROW_KEYS, Options, compare, markdown, pick_rows


def register(sub) -> None:
    p = sub.add_parser("compare", help="the paper's Fig. 9: train or load every classifier, "
                                       "table and figures against the published errors")
    p.add_argument("--rows", help=f"comma-separated rows (default: all): {', '.join(ROW_KEYS)}")
    p.add_argument("--out", default="runs/fig9", help="results folder; trained rows are cached "
                                                       "in OUT/runs (default: runs/fig9)")
    p.add_argument("--data-dir", help="data root (default: $LENET5_DATA_DIR, else the user cache)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per trained row (default: 1)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    p.add_argument("--limit-train", type=int, help="train on the first N images (default: all)")
    p.add_argument("--quick", action="store_true",
                   help="CI: 2,000 training images, one epoch, small boosting sets")
    p.add_argument("--lenet5-run", action="append", default=[], metavar="RUN",
                   help="LeNet-5 paper-recipe run directory (one per seed; else not run)")
    p.add_argument("--lenet5-distort-run", action="append", default=[], metavar="RUN",
                   help="LeNet-5 paper-distort run directory (one per seed; default: the "
                        "bundled lenet5-1998 when that recipe trained it, else not run)")
    p.add_argument("--cached-only", action="store_true",
                   help="train nothing: rows without a finished run are listed as not run")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    rows = pick_rows(args.rows)
    if args.seeds < 1 or args.threads < 1 or (args.limit_train is not None and args.limit_train < 1):
        raise ValueError("--seeds, --threads and --limit-train must be at least 1")
    runs = {"lenet5": args.lenet5_run, "lenet5-distort": args.lenet5_distort_run}
    opts = Options(Path(args.out), args.data_dir, args.seeds, args.quick, args.threads, runs,
                   args.limit_train, log=lambda msg: print(msg, file=sys.stderr, flush=True),
                   cached_only=args.cached_only)
    results = compare(rows, opts)
    print(markdown(results), end="")
    print(f"wrote {opts.out / 'fig9.md'}, fig9.json, fig9.png, fig10.png", file=sys.stderr)
    return 0
