"""``lenet5 report [RUN]``: a self-contained HTML report (config, tables, plots)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("report", help="one self-contained HTML file: config, summary, metrics, plots")
    p.add_argument("run", nargs="?", metavar="RUN",
                   help="run directory, checkpoint file or bundled model name "
                        "(default: the default bundled model)")
    p.add_argument("--out", help="HTML file (default RUN/report.html, or NAME-report.html)")
    p.add_argument("--data-dir", help="data root (default: $LENET5_DATA_DIR, else the user cache)")
    p.add_argument("--limit", type=int, help="evaluate on the first N test images only (quick look)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from ..reporting.report import write_report  # matplotlib loads only when a report is written

    print(write_report(args.run, args.out, args.data_dir, args.limit))
    return 0
