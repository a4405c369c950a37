"""The paper's recipe end to end: lenet5-1998, MAP, SDLM, batch 1, 20 passes (Section III-C).

Trains with ``lenet5.training.loop.train`` exactly as ``lenet5 train --preset paper`` would, then puts
the test error after every pass next to the paper's Fig. 5 and writes JSON + a markdown table.

    python benchmarks/bench_paper.py --data-dir ../shared/data               # 20 passes
    python benchmarks/bench_paper.py --data-dir ../shared/data --distort     # Section III-C-2
    python benchmarks/bench_paper.py --data-dir ../shared/data --epochs 1 --limit-train 10000
    python benchmarks/bench_paper.py --data-dir ../shared/data --quick      # < 1 min, a smoke run
    python benchmarks/bench_paper.py --table benchmarks/results/paper-*.json   # saved runs side by side

The NumPy engine is the default here because at batch 1 it is about 3x faster per pattern than
PyTorch on this CPU (docs/results.md); ``--engine torch`` runs the same recipe in PyTorch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import RESULTS, load_average, machine_info, markdown_table, parse_sets, write_result
from lenet5.config import resolve_config
from lenet5.training.loop import train

# Fig. 5 (no distortions): test error (%) after passes 1..9, "then about 0.95".
PAPER_FIG5 = [2.67, 2.24, 1.47, 1.42, 1.42, 1.08, 1.03, 1.05, 0.97]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=False)
    p.add_argument("--engine", choices=["numpy", "torch"], default="numpy")
    p.add_argument("--quick", action="store_true",
                   help="2 passes over 1,000 images, curvature on 100 (under a minute)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--limit-train", type=int)
    p.add_argument("--distort", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any TrainConfig field, or model_args.NAME=VALUE (as lenet5 train --set)")
    p.add_argument("--out", default=None, help="run directory (default runs/bench-paper-...)")
    p.add_argument("--json", default=None, help="result file (default benchmarks/results/...)")
    p.add_argument("--png", default=None, help="error-by-pass plot (default docs/curves-<tag>.png)")
    p.add_argument("--replot", metavar="RESULT_JSON", help="only redraw the plot of a saved result")
    p.add_argument("--table", nargs="+", metavar="RESULT_JSON",
                   help="only print saved results side by side (one column per file)")
    args = p.parse_args()
    if args.table:
        return table([json.loads(Path(f).read_text()) for f in args.table])
    if args.replot:
        saved = json.loads(Path(args.replot).read_text())
        return plot(saved["per_pass"], saved["preset"], args.png or default_png(Path(args.replot)))

    preset = "paper-distort" if args.distort else "paper"
    if args.quick:
        args.epochs, args.limit_train = 2, args.limit_train or 1000
        args.set = [*args.set, "sdlm_samples=100"]
    overrides = dict(engine=args.engine, epochs=args.epochs, seed=args.seed, threads=1,
                     progress=False, eval_train=True, limit_train=args.limit_train,
                     **parse_sets(args.set))
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    tag = f"{preset}-{args.engine}-e{args.epochs}" + (f"-n{args.limit_train}" if args.limit_train else "")
    for item in args.set:  # e.g. --set ema=0.9999 -> ...-ema0.9999
        tag += "-" + "".join(c for c in item.removeprefix("model_args.") if c.isalnum() or c in "._")
    run_dir = Path(args.out or f"runs/bench-{tag}-s{args.seed}")
    overrides["out"] = str(run_dir)
    cfg = resolve_config(preset, overrides=overrides)

    info = machine_info(threads=1)  # the commit and load as the run starts
    t0 = time.perf_counter()
    train(cfg, log=lambda msg: print(msg, flush=True))
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    print()
    fig5 = [] if args.distort else PAPER_FIG5
    markdown_table(
        ["pass", "eta", "test error %", "paper Fig. 5 %", "training-set error %", "pass time s"],
        [(r["epoch"], f"{r['lr']:.0e}", f"{100 * r['test_error']:.2f} ({r['test_errors']})",
          fig5[r["epoch"] - 1] if r["epoch"] <= len(fig5) else "-",
          f"{100 * r['train_set_error']:.2f}", f"{r['epoch_seconds']:.0f}") for r in rows])
    final = rows[-1]
    print(f"\nfinal test error {100 * final['test_error']:.2f}% ({final['test_errors']} / "
          f"{final['test_count']}), wall {wall / 60:.1f} min, paper "
          f"{'0.80' if args.distort else '0.95'}%")

    result = {
        **info, "preset": preset, "engine": args.engine, "seed": args.seed,
        "run_dir": str(run_dir), "train_config": json.loads((run_dir / "config.json").read_text()),
        "wall_seconds": wall, "per_pass": rows, "paper_fig5": PAPER_FIG5,
        "final_test_error": final["test_error"], "final_test_errors": final["test_errors"],
        "load_average_1min_at_end": load_average(),
    }
    out = write_result(args.json or RESULTS / f"{tag}-s{args.seed}.json", result)
    png = args.png or (out.with_suffix(".png") if args.quick else default_png(out))
    return plot(rows, preset, png)


def table(results: list[dict]) -> int:
    """Markdown: test error (training-set error) per pass for each saved run, and Fig. 5."""
    def head(r: dict) -> str:
        ema = r["train_config"].get("ema")
        return f"{r['preset']} {r['engine']} seed {r['seed']}" + (f" (ema={ema})" if ema else "")

    heads = [head(r) for r in results]
    print("| pass | eta | " + " | ".join(f"{h}: test % (train-set %)" for h in heads) + " | paper Fig. 5 % |")
    print("|---|---|" + "---|" * len(results) + "---|")
    for i in range(max(len(r["per_pass"]) for r in results)):
        cells = []
        for r in results:
            row = r["per_pass"][i] if i < len(r["per_pass"]) else None
            cells.append(f"{100 * row['test_error']:.2f} ({100 * row['train_set_error']:.2f})" if row else "")
        lr = next(r["per_pass"][i]["lr"] for r in results if i < len(r["per_pass"]))
        paper = PAPER_FIG5[i] if i < len(PAPER_FIG5) else ("about 0.95" if i == len(results[0]["per_pass"]) - 1 else "")
        print(f"| {i + 1} | {lr:.0e} | " + " | ".join(cells) + f" | {paper} |")
    print("| wall | | " + " | ".join(f"{r['wall_seconds'] / 60:.0f} min" for r in results) + " | 2-3 days |")
    print("| commit | | " + " | ".join(r["git_commit"][:7] for r in results) + " | |")
    return 0


def default_png(result_json: Path) -> Path:
    return Path(__file__).parent.parent / "docs" / f"curves-{result_json.stem}.png"


def plot(rows: list[dict], preset: str, png: Path) -> int:
    """Test and training-set error by pass against the paper's Fig. 5 (lenet5.reporting.viz)."""
    from lenet5.reporting.viz import save, training_curves

    last = rows[-1]
    title = (f"lenet5-1998, {preset}: test error {100 * last['test_error']:.2f}% after pass "
             f"{last['epoch']} (paper {'0.80' if preset == 'paper-distort' else '0.95'}%)")
    print(f"wrote {save(training_curves(rows, 'lenet5-1998', title), png)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
