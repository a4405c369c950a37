"""The reject option of a model: calibrate it on held-out data, then measure it (issue #17).

Calibration never sees what is measured:

- digits: the last ``--val`` training digits, the first half to fit the "no digit" score, the
  second half to set its thresholds;
- digits under corruption: each fitting digit once more under a random corruption of the
  suite (up to :data:`lenet5.data.corruptions.PROBE`'s strengths), so that a noisy, bold or
  turned digit is not taken for "no digit" (``--clean-only`` leaves them out);
- non-digits: ``--fit-pages`` pages of :mod:`lenet5.data.nondigits` drawn from seed 1.

Measured: the 10,000 MNIST test digits (share refused as "no digit" or "unsure", error on the
rest: the paper's Fig. 10 operating point) and ``--pages`` fresh non-digit pages from seed 2
(share refused, by kind; a page that preprocessing already refuses as blank counts as refused
and is listed apart). Everything goes through :func:`lenet5.inference.images.preprocess`, as a
user's image would. ``--write`` stores the calibration beside the model
(``NAME.reject.json``), where :class:`lenet5.inference.predict.Predictor` finds it.

The bundled models were trained on all 60,000 training digits, so the digits that set their
thresholds are digits they have seen, and read more surely than new ones: a share set on them
refuses more of the test digits. ``--unseen-twin RUN`` measures that on a run of the same recipe
trained with ``--val-split``: the whole calibration is done for the twin on digits it trained on
(the ``--val`` digits just before its held-out ones), and the shares are scaled down until the
twin refuses at most ``--target`` of the digits it never saw. The model is then calibrated with
the scaled shares. The test set plays no part in the choice.

    python benchmarks/bench_reject.py --data-dir ../shared/data --model lenet5-modern --write
    python benchmarks/bench_reject.py --data-dir ../shared/data --model lenet5-robust \
        --unseen-twin runs/r17/w16-share0.25-e50-s0 --write
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

import numpy as np
import torch

from common import RESULTS, machine_info, markdown_table, write_result
from lenet5.data.corruptions import PROBE, corrupt
from lenet5.data.datasets import load_split
from lenet5.data.nondigits import pages
from lenet5.inference.images import PredictError, preprocess
from lenet5.inference.load import load
from lenet5.inference.predict import Predictor
from lenet5.inference.reject import calibrate, path_for


def preprocessed(images) -> tuple[np.ndarray, list[int]]:
    """``(M, 28, 28)`` of the images preprocessing accepts, and the indices it refused."""
    out, refused = [], []
    for i, im in enumerate(images):
        try:
            out.append(preprocess(im))
        except PredictError:
            refused.append(i)
    return np.stack(out) if out else np.zeros((0, 28, 28), np.float32), refused


def corrupted_copies(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each digit once more, under one corruption of the suite drawn at random, at a random
    strength up to its strong setting: a noisy or bold digit is still a digit."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, len(PROBE), len(x))
    out = np.empty_like(x)
    for k, (name, strong) in enumerate(PROBE):
        idx = np.flatnonzero(kind == k)
        clean = 1.0 if name == "scale" else 0.0
        for i in idx:
            sev = clean + rng.uniform(0, 1) * (strong - clean)
            out[i] = corrupt(x[i], name, sev, seed=int(i))
    return out


def evidence_sets(predictor, digits, fit_pages, clean_only):
    """``ev_fit, ev_none, ev_cal, dp_cal`` for :func:`calibrate` from raw training digits: the
    first half (with corrupted copies unless ``clean_only``) and the pages fit the score, the
    second half sets the thresholds."""
    xv, _ = preprocessed(digits)
    half = len(xv) // 2
    fit_digits = xv[:half] if clean_only else np.concatenate([xv[:half], corrupted_copies(xv[:half])])
    ev_fit, _ = predictor.evidence(fit_digits)
    ev_none, _ = predictor.evidence(fit_pages)
    ev_cal, dp_cal = predictor.evidence(xv[half:])
    return ev_fit, ev_none, ev_cal, dp_cal


def unseen_twin(run, loaded, xs, fit_pages, args) -> dict:
    """How far the shares must shrink so that thresholds set on digits a model trained on
    refuse at most ``args.target`` of digits it never saw, measured on ``run``: the same
    recipe as ``loaded`` trained with ``--val-split`` (see the module docstring)."""
    twin = load(run)
    cfg, want = twin.train_config, loaded.train_config
    held = int(cfg.get("val_split") or 0)
    if held < 1000:
        raise SystemExit(f"{run}: trained without a --val-split of at least 1000 digits; "
                         "an unseen twin must have digits it never saw")
    skip = {"val_split", "out", "data_dir", "progress", "overwrite", "resume", "threads", "seed"}
    if diff := {k: (cfg.get(k), v) for k, v in want.items() if k not in skip and cfg.get(k) != v}:
        raise SystemExit(f"{run}: not the recipe of {loaded.name}: {diff}")
    p = Predictor.from_loaded(twin, reject=False)
    n = len(xs)
    seen = xs[n - held - args.val : n - held]
    unseen, _ = preprocessed(xs[n - held :])
    ev_u, dp_u = p.evidence(unseen)
    sets = evidence_sets(p, seen, fit_pages, args.clean_only)
    rej = calibrate(*sets, args.no_digit_share, args.unsure_share)
    tried = []
    for scale in np.round(np.arange(1.0, 0.049, -0.025), 3):  # the largest at the target wins
        rej.set_thresholds(*sets[2:], args.no_digit_share * scale, args.unsure_share * scale)
        tried.append([float(scale), float(rej.refused(*sets[2:]).mean()),
                      float(rej.refused(ev_u, dp_u).mean())])
        if tried[-1][2] <= args.target:
            break
    scale, on_seen, on_unseen = tried[-1]
    print(f"unseen twin {run}: shares x{scale:g} refuse {on_seen * 100:.2f}% of the digits it "
          f"trained on and {on_unseen * 100:.2f}% of the {len(unseen)} it never saw "
          f"(x1: {tried[0][2] * 100:.2f}%)")
    return {"run": str(run), "held_out": held, "seen_digits": f"training digits {n - held - args.val}"
            f"-{n - held - 1}", "target": args.target, "scale": scale,
            "tried": [[s, round(a, 5), round(b, 5)] for s, a, b in tried]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model to calibrate (default: the default bundled)")
    ap.add_argument("--data-dir")
    ap.add_argument("--val", type=int, default=10000, help="held-out training digits (last N)")
    ap.add_argument("--fit-pages", type=int, default=3000)
    ap.add_argument("--pages", type=int, default=2000, help="fresh non-digit pages measured")
    ap.add_argument("--no-digit-share", type=float, default=0.004)
    ap.add_argument("--unsure-share", type=float, default=0.002)
    ap.add_argument("--limit-test", type=int, default=None)
    ap.add_argument("--clean-only", action="store_true",
                    help="fit the score on clean digits only (default: also corrupted copies)")
    ap.add_argument("--unseen-twin", metavar="RUN", default=None,
                    help="a --val-split run of the model's recipe: scale the shares so that it "
                         "refuses at most --target of the digits it never saw")
    ap.add_argument("--target", type=float, default=0.006,
                    help="with --unseen-twin: share of unseen digits refused (default 0.006)")
    ap.add_argument("--write", action="store_true", help="store the calibration beside the model")
    ap.add_argument("--out", default=None, help="result JSON (default results/reject-MODEL.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    loaded = load(args.model)
    predictor = Predictor.from_loaded(loaded, reject=False)
    xs, _ = load_split("mnist", "train", args.data_dir)
    fit_pages, _ = preprocessed(pages(args.fit_pages, seed=1)[0])
    facts = {"model": loaded.name, "val_digits": f"last {args.val} training digits",
             "fit_pages_seed": 1, "fit_corrupted_copies": not args.clean_only}
    nd_share, us_share = args.no_digit_share, args.unsure_share
    if args.unseen_twin:
        twin = unseen_twin(args.unseen_twin, loaded, xs, fit_pages, args)
        nd_share, us_share = nd_share * twin["scale"], us_share * twin["scale"]
        facts["unseen_twin"] = twin
    sets = evidence_sets(predictor, xs[len(xs) - args.val :], fit_pages, args.clean_only)
    rej = calibrate(*sets, nd_share, us_share, facts=facts)
    predictor.rejector = rej

    xt, yt = load_split("mnist", "test", args.data_dir)
    n = args.limit_test or len(xt)
    xt, refused_t = preprocessed(xt[:n])
    keep = np.setdiff1d(np.arange(n), refused_t)
    yt = yt[:n][keep]
    res = predictor.predict(xt)
    verdicts = Counter(r.get("verdict", "answered") for r in res)
    answered = np.array([r["label"] is not None for r in res])
    labels = np.array([-1 if r["label"] is None else r["label"] for r in res])
    err_rest = float((labels[answered] != yt[answered]).mean())
    err_all = float((np.array([r["top_k"][0][0] for r in res]) != yt).mean())
    test = {"n": n, "refused_by_preprocess": len(refused_t), "no_digit": verdicts["no digit"],
            "unsure": verdicts["unsure"], "rejected_share": float((~answered).mean()),
            "error_without_reject": err_all, "error_on_the_rest": err_rest}

    imgs, kinds = pages(args.pages, seed=2)
    xp, refused_p = preprocessed(imgs)
    kept_kinds = [k for i, k in enumerate(kinds) if i not in set(refused_p)]
    rp = predictor.predict(xp) if len(xp) else []
    by_kind: dict[str, list[int]] = {k: [0, 0] for k in dict.fromkeys(kinds)}
    for i in refused_p:
        by_kind[kinds[i]][0] += 1
    for k, r in zip(kept_kinds, rp):
        by_kind[k][0] += r["label"] is None
    for k in kinds:
        by_kind[k][1] += 1
    non = {"n": args.pages, "refused_by_preprocess": len(refused_p),
           "rejected": sum(v[0] for v in by_kind.values()),
           "rejected_share": sum(v[0] for v in by_kind.values()) / args.pages,
           "by_kind": {k: v[0] / v[1] for k, v in by_kind.items()}}

    corrupted = {}
    for name, sev in PROBE:
        rc = predictor.predict(corrupt(xt[:2000], name, sev))
        corrupted[f"{name} {sev:g}"] = float(np.mean([r["label"] is None for r in rc]))

    rows = [["MNIST test digits rejected", f"{test['rejected_share'] * 100:.2f}%",
             f"{test['no_digit']} no digit, {test['unsure']} unsure of {n}"],
            ["test error on the rest", f"{err_rest * 100:.2f}%", f"without reject {err_all * 100:.2f}%"],
            ["non-digit pages rejected", f"{non['rejected_share'] * 100:.1f}%",
             ", ".join(f"{k} {v * 100:.0f}%" for k, v in non["by_kind"].items())]]
    markdown_table(["", "value", "detail"], rows)
    print("corrupted test digits rejected (first 2000):",
          ", ".join(f"{k} {v * 100:.1f}%" for k, v in corrupted.items()))
    result = {**machine_info(1), "model": loaded.name, "calibration": rej.calibration,
              "thresholds": {"no_digit": rej.no_digit, "unsure": rej.unsure},
              "test": test, "non_digits": non, "corrupted_rejected": corrupted,
              "seconds": round(time.time() - t0, 1)}
    write_result(args.out or RESULTS / f"reject-{loaded.name}.json", result)
    if args.write:
        # The operating point travels with the calibration: `predict --json` states it.
        rej.calibration["measured"] = {
            "test_digits_rejected_share": test["rejected_share"],
            "test_error_on_the_rest": err_rest, "test_error_without_reject": err_all,
            "non_digit_pages_rejected_share": non["rejected_share"],
            "by": "benchmarks/bench_reject.py (MNIST test set; non-digit pages of seed 2)"}
        file = path_for(loaded.path, loaded.run_dir)
        file.write_text(rej.to_json() + "\n")
        print(f"wrote {file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
