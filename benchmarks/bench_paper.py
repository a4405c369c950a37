"""The paper's recipe end to end: lenet5-1998, MAP, SDLM, batch 1, 20 passes (Section III-C).

Trains with ``lenet5.training.loop.train`` exactly as ``lenet5 train --preset paper`` would, then puts
the test error after every pass next to the paper's Fig. 5 and writes JSON + a markdown table.

    python benchmarks/bench_paper.py --data-dir ../shared/data               # 20 passes
    python benchmarks/bench_paper.py --data-dir ../shared/data --distort     # Section III-C-2
    python benchmarks/bench_paper.py --data-dir ../shared/data --epochs 1 --limit-train 10000
    python benchmarks/bench_paper.py --data-dir ../shared/data --quick      # < 1 min, a smoke run
    python benchmarks/bench_paper.py --table benchmarks/results/paper-*.json   # saved runs side by side

Several seeds of one recipe (issue 15): each seed's run directory under ``--runs-dir`` is
reused when it holds all its passes (so runs started elsewhere, e.g. by ``lenet5 train --out``
with the same name, count), else trained; then the final error of every seed, mean +- std
(sample standard deviation), min and max, for the test set (or, with ``--val-split N``, the
held-out validation split only: tuning never reads the test set) and the whole training set,
a JSON and the Fig. 5 overlay with the seed band:

    python benchmarks/bench_paper.py --preset paper --seeds 0-4 --engine compiled --data-dir ../shared/data
    python benchmarks/bench_paper.py --preset lush --seeds 0-4 --engine compiled --val-split 10000 \
        --set sdlm_mu=0.04 --no-train        # aggregate only the runs that exist

The ablation table (issue 15, item 4; the runs: benchmarks/ablate_paper.sh): saved ``--seeds``
results against the first one, the baseline, with Welch's t on the seeds' final errors:

    python benchmarks/bench_paper.py --ablation benchmarks/results/seeds-paper-compiled-val10000.json \
        benchmarks/results/seeds-paper-compiled-val10000-*.json

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
    p.add_argument("--engine", choices=["numpy", "torch", "compiled"], default="numpy")
    p.add_argument("--quick", action="store_true",
                   help="2 passes over 1,000 images, curvature on 100 (under a minute)")
    p.add_argument("--epochs", type=int, default=None,
                   help="passes (default 20; with --seeds: the preset's)")
    p.add_argument("--limit-train", type=int)
    p.add_argument("--distort", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any TrainConfig field, or model_args.NAME=VALUE (as lenet5 train --set)")
    p.add_argument("--out", default=None, help="run directory (default runs/bench-paper-...)")
    p.add_argument("--json", default=None, help="result file (default benchmarks/results/...)")
    p.add_argument("--png", default=None, help="error-by-pass plot (default docs/curves-<tag>.png)")
    p.add_argument("--replot", metavar="RESULT_JSON", help="only redraw the plot of a saved result")
    p.add_argument("--ablation", nargs="+", metavar="SEEDS_JSON",
                   help="only print saved --seeds results against the first (the baseline)")
    p.add_argument("--table", nargs="+", metavar="RESULT_JSON",
                   help="only print saved results side by side (one column per file)")
    p.add_argument("--preset", default=None,
                   help="with --seeds: the recipe (default paper, or paper-distort with --distort)")
    p.add_argument("--seeds", default=None, metavar="A-B|A,B,..",
                   help="several seeds: train or reuse each, then mean +- std (issue 15)")
    p.add_argument("--val-split", type=int, default=0,
                   help="with --seeds: hold out the last N training images and report the "
                        "validation error instead of the test error")
    p.add_argument("--runs-dir", default="runs/seeds", help="with --seeds: where run dirs live")
    p.add_argument("--no-train", action="store_true",
                   help="with --seeds: aggregate the finished runs only, train none")
    args = p.parse_args()
    if args.seeds:
        return seeds_main(args)
    if args.ablation:
        return ablation([json.loads(Path(f).read_text()) for f in args.ablation])
    if args.table:
        return table([json.loads(Path(f).read_text()) for f in args.table])
    if args.replot:
        saved = json.loads(Path(args.replot).read_text())
        return plot(saved["per_pass"], saved["preset"], args.png or default_png(Path(args.replot)))

    preset = "paper-distort" if args.distort else "paper"
    args.epochs = args.epochs or 20
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


# ----------------------------------------------------------------------------- several seeds


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"0,2,7"`` -> [0, 2, 7]."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


def run_name(preset: str, engine: str, val_split: int, sets: list[str], seed: int) -> str:
    """The run directory's name: ``paper-compiled-test-s0``, ``lush-compiled-val10000-...-s3``;
    each ``--set KEY=VALUE`` adds ``-KEYVALUE`` (alphanumerics, dots and underscores)."""
    tag = f"{preset}-{engine}-" + (f"val{val_split}" if val_split else "test")
    for item in sets:
        tag += "-" + "".join(c for c in item.removeprefix("model_args.") if c.isalnum() or c in "._")
    return f"{tag}-s{seed}"


def finished_rows(run_dir: Path, epochs: int) -> list[dict] | None:
    """The metrics rows of a run that has all ``epochs`` passes, else None."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return None
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return rows if len(rows) >= epochs else None


def summary(values: list[float]) -> dict:
    """mean, sample std (0 for one value), min, max and n of ``values`` (in percent)."""
    n = len(values)
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(values), "max": max(values), "n": n}


def aggregate(runs: dict[int, list[dict]], split: str) -> dict:
    """Per seed the last pass's error on ``split`` ("test" or "val") and on the whole training
    set (when measured), in percent, and their :func:`summary`; per pass the mean, min and max
    over seeds (the Fig. 5 overlay)."""
    key = f"{split}_error"
    seeds = sorted(runs)
    final = {s: 100 * runs[s][-1][key] for s in seeds}
    out = {"split": split, "seeds": seeds, "final": final, "summary": summary(list(final.values()))}
    if all("train_set_error" in runs[s][-1] for s in seeds):
        train = {s: 100 * runs[s][-1]["train_set_error"] for s in seeds}
        out.update(final_train_set=train, summary_train_set=summary(list(train.values())))
    passes = min(len(r) for r in runs.values())
    curves = {}
    for name, k in ((split, key), ("train_set", "train_set_error")):
        if all(k in runs[s][i] for s in seeds for i in range(passes)):
            per = [[100 * runs[s][i][k] for s in seeds] for i in range(passes)]
            curves[name] = {"mean": [sum(v) / len(v) for v in per], "min": [min(v) for v in per],
                            "max": [max(v) for v in per]}
    out["per_pass"] = curves
    return out


def seeds_main(args) -> int:
    preset = args.preset or ("paper-distort" if args.distort else "paper")
    seeds = parse_seeds(args.seeds)
    sets = list(args.set)
    base = dict(engine=args.engine, threads=1, progress=False, eval_train=True,
                val_split=args.val_split, limit_train=args.limit_train, **parse_sets(sets))
    if args.data_dir:
        base["data_dir"] = args.data_dir
    if args.epochs:
        base["epochs"] = args.epochs
    info = machine_info(threads=1)
    runs, walls = {}, {}
    for seed in seeds:
        run_dir = Path(args.runs_dir) / run_name(preset, args.engine, args.val_split, sets, seed)
        cfg = resolve_config(preset, overrides={**base, "seed": seed, "out": str(run_dir)})
        rows = finished_rows(run_dir, cfg.epochs)
        if rows is None and not args.no_train:
            print(f"training {run_dir}", flush=True)
            t0 = time.perf_counter()
            train(replace_overwrite(cfg, run_dir), log=lambda msg: print(msg, flush=True))
            walls[seed] = time.perf_counter() - t0
            rows = finished_rows(run_dir, cfg.epochs)
        if rows is None:
            print(f"skipped seed {seed}: {run_dir} is not finished")
            continue
        saved = json.loads((run_dir / "config.json").read_text())
        if saved.get("seed") != seed or saved.get("val_split", 0) != args.val_split:
            raise SystemExit(f"{run_dir}: its config.json is not seed {seed}, "
                             f"val_split {args.val_split}")
        runs[seed] = rows[: cfg.epochs]
    if not runs:
        print("no finished runs")
        return 1
    split = "val" if args.val_split else "test"
    agg = aggregate(runs, split)
    print()
    print_summary(preset, sets, agg)
    tag = run_name(preset, args.engine, args.val_split, sets, 0).removesuffix("-s0")
    result = {**info, "preset": preset, "engine": args.engine, "sets": sets,
              "val_split": args.val_split, "runs_dir": args.runs_dir,
              "train_config": json.loads((Path(args.runs_dir) / run_name(
                  preset, args.engine, args.val_split, sets, agg["seeds"][0]) / "config.json")
                  .read_text()),
              "train_seconds": walls, **agg}
    out = write_result(args.json or RESULTS / f"seeds-{tag}.json", result)
    png = Path(args.png) if args.png else (Path(__file__).parent.parent / "docs"
                                           / f"seeds-{tag}.png")
    changes = "".join(f" {kv}" for kv in sets)  # the --set changes, if any
    print(f"wrote {plot_seeds(agg, f'{preset}{changes} ({split}), seeds {agg_seeds(agg)}', png)}")
    return 0 if out else 1


def replace_overwrite(cfg, run_dir: Path):
    """An unfinished run directory is started again from scratch."""
    from dataclasses import replace

    return replace(cfg, overwrite=run_dir.exists())


def agg_seeds(agg: dict) -> str:
    s = agg["seeds"]
    return f"{s[0]}-{s[-1]}" if s == list(range(s[0], s[-1] + 1)) else ",".join(map(str, s))


def fmt(summ: dict) -> str:
    return (f"{summ['mean']:.3f} +- {summ['std']:.3f} (min {summ['min']:.2f}, "
            f"max {summ['max']:.2f}, n {summ['n']})")


def print_summary(preset: str, sets: list[str], agg: dict) -> None:
    head = ["seed", f"{agg['split']} error %", "training-set error %"]
    rows = [(s, f"{agg['final'][s]:.2f}",
             f"{agg['final_train_set'][s]:.2f}" if "final_train_set" in agg else "-")
            for s in agg["seeds"]]
    markdown_table(head, rows)
    print(f"\n{preset} {' '.join(sets)}: {agg['split']} error {fmt(agg['summary'])}")
    if "summary_train_set" in agg:
        print(f"training-set error {fmt(agg['summary_train_set'])}")


def plot_seeds(agg: dict, title: str, png: Path) -> Path:
    """Fig. 5 overlay: mean error per pass over the seeds, the min-max band, the paper's
    points (test split only)."""
    from matplotlib.figure import Figure

    from lenet5.reporting.viz import save

    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    colours = {"test": "tab:blue", "val": "tab:blue", "train_set": "tab:orange"}
    labels = {"test": "test error", "val": "validation error",
              "train_set": "training-set error (whole, undistorted)"}
    for name, curve in agg["per_pass"].items():
        x = range(1, len(curve["mean"]) + 1)
        ax.plot(x, curve["mean"], color=colours[name],
                label=f"{labels[name]}, mean of {len(agg['seeds'])} seeds")
        ax.fill_between(x, curve["min"], curve["max"], color=colours[name], alpha=0.2,
                        label="min-max over seeds")
    if agg["split"] == "test":
        ax.plot(range(1, len(PAPER_FIG5) + 1), PAPER_FIG5, "k--o", ms=3,
                label="paper Fig. 5 (test)")
        ax.axhline(0.95, color="k", lw=0.8, ls=":", label="paper 0.95%")
    ax.set_xlabel("pass")
    ax.set_ylabel("error %")
    ax.set_ylim(0, 3)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, png)


def welch(a: list[float], b: list[float]) -> tuple[float, float] | None:
    """Welch's t of mean(b) - mean(a) and its two-sided p (scipy), or None under two values each."""
    if len(a) < 2 or len(b) < 2:
        return None
    import warnings

    from scipy.stats import ttest_ind

    with warnings.catch_warnings():  # scipy warns when one side's values are all equal
        warnings.simplefilter("ignore", RuntimeWarning)
        res = ttest_ind(b, a, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def paired(base: dict, row: dict) -> str:
    """Mean +- standard error of row - base over the seeds both have, and the paired t's p."""
    base, row = ({int(k): v for k, v in x.items()} for x in (base, row))  # JSON keys are str
    common = sorted(set(base) & set(row))
    d = [row[k] - base[k] for k in common]
    if len(d) < 2:
        return f"{d[0]:+.2f} (1 seed)" if d else "-"
    import warnings

    from scipy.stats import ttest_rel

    with warnings.catch_warnings():  # nearly equal differences: scipy warns, p is still right
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(ttest_rel([row[k] for k in common], [base[k] for k in common]).pvalue)
    p_text = "p < 0.01" if p < 0.01 else f"p = {p:.2f}"
    return f"{sum(d) / len(d):+.2f} +- {summary(d)['std'] / len(d) ** 0.5:.2f} ({p_text})"


def ablation(results: list[dict]) -> int:
    """Markdown: per saved ``--seeds`` result its change (``--set`` items), the final error on
    its split per seed, mean +- std, the training-set error, and the difference of the means
    from the first result (the baseline) with Welch's t and p over the seeds; then the paired
    difference over the seeds both have (a seed fixes the initial weights' draws and the
    presentation order in both runs) with its standard error and paired t's p."""
    base = results[0]
    base_vals = list(base["final"].values())

    def change(r: dict) -> str:
        return " ".join(f"--set {s}" for s in r["sets"]) or "(baseline)"

    rows = []
    for r in results:
        vals = [r["final"][k] for k in sorted(r["final"], key=int)]
        summ, tr = r["summary"], r.get("summary_train_set")
        diff = summ["mean"] - base["summary"]["mean"]
        t = welch(base_vals, vals) if r is not base else None
        rows.append((change(r), ",".join(str(s) for s in r["seeds"]),
                     f"{summ['mean']:.2f} +- {summ['std']:.2f} ({', '.join(f'{v:.2f}' for v in vals)})",
                     f"{tr['mean']:.2f} +- {tr['std']:.2f}" if tr else "-",
                     "-" if r is base else f"{diff:+.2f}",
                     f"t = {t[0]:+.1f}, p = {t[1]:.2f}" if t else "-",
                     "-" if r is base else paired(base["final"], r["final"])))
    markdown_table(["change from the baseline", "seeds", f"{base['split']} error % (per seed)",
                    "training-set error %", "difference", "Welch", "paired difference"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
