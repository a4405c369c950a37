"""Users' photos: digits under uneven light, on ruled or squared paper, grainy or shadowed.

Each of the first ``--n`` MNIST test digits is written on a 400x300 page under every kind of
:mod:`lenet5.data.photos` and read through ``Predictor.predict_image`` (preprocessing, the
model, its reject option), as ``lenet5 predict`` reads a file. Per model and kind: the share
read right, refused ("no digit" / "unsure") and read wrong.

``--before REV`` measures the package as it was at commit ``REV`` (its preprocessing, models
and reject files, from a temporary git worktree) in the same run, side by side.

    python benchmarks/bench_photos.py --data-dir ../shared/data [--before f92a824]

prints the table and writes ``benchmarks/results/photos.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from common import RESULTS, machine_info, markdown_table, worktree, write_result

ROOT = Path(__file__).resolve().parent.parent


def photos():
    """``lenet5.data.photos`` of this checkout, read from its file, also when the package
    imported is an older commit's (which may not have it): the same pages either way."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_lenet5_photos", ROOT / "src" / "lenet5" / "data" / "photos.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def measure(data_dir: str, n: int, models: list[str]) -> dict:
    """``{model: {kind: {right, refused, wrong}}}`` in percent, with this process's package."""
    import lenet5
    from lenet5.data.datasets import load_split
    from lenet5.inference.images import PredictError
    from lenet5.inference.predict import Predictor

    gen = photos()  # this checkout's generator, whatever REV
    KINDS, photo_page = gen.KINDS, gen.photo_page

    x, y = load_split("mnist", "test", data_dir)
    out = {"package": str(Path(lenet5.__file__).parent)}
    for name in models:
        p = Predictor.load(name)
        rows = {}
        for kind in KINDS:
            rng = np.random.default_rng(0)
            right = refused = 0
            for i in range(n):
                try:
                    label = p.predict_image(photo_page(x[i], kind, rng))["label"]
                except PredictError:  # an older package raised on a blank page: a refusal
                    label = None
                right += label == y[i]
                refused += label is None
            rows[kind] = {"right": 100 * right / n, "refused": 100 * refused / n,
                          "wrong": 100 * (n - right - refused) / n}
        out[name] = rows
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("LENET5_DATA_DIR", "../shared/data"))
    ap.add_argument("--n", type=int, default=200, help="test digits per kind (default 200)")
    ap.add_argument("--models", nargs="+", default=["lenet5-robust", "lenet5-modern"])
    ap.add_argument("--before", metavar="REV", help="also measure the package at this commit")
    ap.add_argument("--json", default=str(RESULTS / "photos.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # run under another checkout's src: print its results as one JSON line
        print(json.dumps(measure(args.data_dir, args.n, args.models)))
        return 0

    info = machine_info(threads=1)
    results = {"HEAD": measure(args.data_dir, args.n, args.models)}
    if args.before:
        with worktree(args.before) as tree:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                [str(tree / "src"), str(Path(__file__).parent)])}
            proc = subprocess.run([sys.executable, __file__, "--child", "--n", str(args.n),
                                   "--data-dir", args.data_dir, "--models", *args.models],
                                  env=env, capture_output=True, text=True, check=True)
            results[args.before] = json.loads(proc.stdout.strip().splitlines()[-1])
        if not results[args.before]["package"].startswith(str(tree)):
            raise SystemExit(f"the child read {results[args.before]['package']}, not {tree}")

    rows = []
    for rev, res in results.items():
        for name in args.models:
            for kind in photos().KINDS:
                r = res[name][kind]
                rows.append([rev, name, kind, f"{r['right']:.1f}", f"{r['refused']:.1f}",
                             f"{r['wrong']:.1f}"])
    markdown_table(["package", "model", "photo", "right %", "refused %", "wrong %"], rows)
    write_result(args.json, {**info, "n": args.n, "models": args.models, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
