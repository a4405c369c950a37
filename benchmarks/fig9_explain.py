"""Measurements behind the Fig. 9 rows that differ from the paper (issue 16, docs/results.md).

Each subcommand tunes on a validation split (the first 50,000 training digits against the last
10,000) and, with ``--test``, reports the chosen setting once on the test set (trained or fitted
on all 60,000). Every result is printed as a table and written as JSON under
``benchmarks/results/`` with the command, commit and machine (``common.py``).

- ``mlp``: a network trained the 1998 way, none of which the ``lenet5 compare`` MLP rows use
  (those: Adam, softmax cross-entropy, cosine): squashing units f(a) = 1.7159 tanh(2a / 3) on
  every layer, the outputs included; the mean squared error to +-1 targets; plain SGD (no
  momentum) on single patterns (``--batch 1``) in a new random order each pass; the paper's
  LeNet-5 learning-rate shape over the passes (x1 for 2 passes, x0.4 for 3, x0.2 for 3, x0.1 for
  4, x0.02 after); weights uniform in +-2.4 / fan-in (the paper's Appendix). ``--hidden``
  gives the hidden widths (none: a linear classifier on squashed outputs, the single-layer
  network). Hand-written NumPy, so the recipe is all on one page.
- ``knn``: the k-NN rows' votes (``models.baselines.NearestNeighbours``) for k = 1..5;
  ``--stored N ...`` adds the test error with only the first N training digits stored.
- ``ridge``: the least-squares linear classifier's ridge, chosen on validation.
- ``box``: how much ink a 20x20 window of the 28x28 field leaves out: the central one, or the
  one centred on the ink's bounding box (MNIST's digit box), raw and deslanted.

    python benchmarks/fig9_explain.py mlp --hidden 300 --lr 0.01 0.003 --test
    python benchmarks/fig9_explain.py knn --test
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from common import RESULTS, machine_info, markdown_table, write_result
from lenet5.data.datasets import load_split
from lenet5.data.transforms import Normalization, to_unit
from lenet5.models.baselines import Retina, least_squares, plus_minus

VAL = 10000
SHAPE = ((2, 1.0), (3, 0.4), (3, 0.2), (4, 0.1))  # the paper's LeNet-5 rate: passes, factor
A, S = 1.7159, 2.0 / 3.0  # the paper's squashing function A tanh(S a)


def inputs(split: str, data_dir: str | None, size: int = 28, deslant: bool = False,
           box: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(N, size * size)`` float32 vectors of the normalised ("paper") field, and labels."""
    xs, ys = load_split("mnist", split, data_dir)
    retina, norm = Retina(size, deslant, box), Normalization.make("paper")
    with torch.no_grad():
        x = torch.cat([retina(norm(to_unit(xs[i : i + 5000]))) for i in range(0, len(ys), 5000)])
    return x.numpy(), ys.astype(np.int64)


def splits(args, test: bool):
    """``(train x, train y, eval x, eval y)``: validation split, or all 60,000 against test."""
    x, y = inputs("train", args.data_dir, args.size, args.deslant, args.box)
    if not test:
        return x[:-VAL], y[:-VAL], x[-VAL:], y[-VAL:]
    xt, yt = inputs("test", args.data_dir, args.size, args.deslant, args.box)
    return x, y, xt, yt


# ----------------------------------------------------------------------------- mlp (1998 recipe)


def rate(lr: float, epoch: int) -> float:
    """The rate of pass ``epoch`` (0-based): the paper's LeNet-5 shape scaled to ``lr``."""
    for passes, factor in SHAPE:
        if epoch < passes:
            return lr * factor
        epoch -= passes
    return lr * 0.02


def forward(ws, x):
    """Activations of every layer (the input first) for rows ``x``: f(x W + b) each."""
    acts = [x]
    for w, b in ws:
        acts.append(A * np.tanh(S * (acts[-1] @ w + b)))
    return acts


def error(ws, x, y) -> float:
    out = np.concatenate([forward(ws, x[i : i + 2000])[-1] for i in range(0, len(y), 2000)])
    return 100.0 * float(np.mean(out.argmax(1) != y))


def train_mlp(x, y, hidden, lr, epochs, batch, seed, log=print, fresh=None):
    """SGD on 0.5 |f(...) - t|^2 (t: +-1), per pattern or per ``batch`` patterns (mean);
    ``fresh(epoch)``, if given, makes each pass's inputs (distorted copies of ``x``)."""
    rng = np.random.default_rng(seed)
    widths = (x.shape[1], *hidden, 10)
    ws = []
    for cin, cout in zip(widths, widths[1:]):
        r = 2.4 / cin
        ws.append((rng.uniform(-r, r, (cin, cout)).astype(np.float32),
                   rng.uniform(-r, r, cout).astype(np.float32)))
    targets = (2.0 * np.eye(10, dtype=np.float32) - 1.0)[y]
    for epoch in range(epochs):
        eta = np.float32(rate(lr, epoch) / batch)
        t0 = time.perf_counter()
        order = rng.permutation(len(y))
        xs = fresh(epoch) if fresh else x
        for i in range(0, len(y), batch):
            idx = order[i : i + batch]
            acts = forward(ws, xs[idx])
            delta = (acts[-1] - targets[idx]) * (S / A) * (A * A - acts[-1] ** 2)  # dE/da
            for layer in range(len(ws) - 1, -1, -1):
                w, b = ws[layer]
                below = acts[layer]
                if layer:  # back-propagate before this layer's weights change
                    back = (delta @ w.T) * (S / A) * (A * A - below**2)
                w -= eta * (below.T @ delta)
                b -= eta * delta.sum(0)
                if layer:
                    delta = back
        log(f"  pass {epoch + 1}: rate {rate(lr, epoch):g}, {time.perf_counter() - t0:.0f} s")
    return ws


def distorted(args, test: bool):
    """``fresh(epoch)``: the training split's digits, a new affine distortion of each per pass
    (the ``--distort`` defaults of ``lenet5 train``, as the compare rows' "distortions")."""
    from lenet5.data.transforms import Distortion

    xs, _ = load_split("mnist", "train", args.data_dir)
    unit = to_unit(xs if test else xs[:-VAL])
    retina, norm, distortion = Retina(args.size, args.deslant, args.box), \
        Normalization.make("paper"), Distortion()
    g = torch.Generator().manual_seed(args.seed)

    def fresh(epoch: int) -> np.ndarray:
        with torch.no_grad():
            return torch.cat([retina(norm(distortion(unit[i : i + 5000], g)))
                              for i in range(0, len(unit), 5000)]).numpy()

    return fresh


def cmd_mlp(args) -> dict:
    name = "-".join(map(str, (args.size * args.size, *args.hidden, 10)))
    x, y, xv, yv = splits(args, test=False)
    rows, tried = [], []
    for lr in args.lr:
        t0 = time.perf_counter()
        ws = train_mlp(x, y, args.hidden, lr, args.epochs, args.batch, args.seed,
                       fresh=distorted(args, False) if args.distort else None)
        val, train_err = error(ws, xv, yv), error(ws, x, y)
        tried.append({"lr": lr, "val_error": val, "train_error": train_err,
                      "seconds": time.perf_counter() - t0})
        rows.append([name, lr, "validation", f"{val:.2f}", f"{train_err:.2f}",
                     f"{time.perf_counter() - t0:.0f}"])
        print(f"{name} lr {lr}: validation {val:.2f}%, training {train_err:.2f}%", flush=True)
    result = {"what": name, "recipe": {"units": "1.7159 tanh(2a/3), outputs too",
                                       "loss": "0.5 |out - t|^2, t = +-1", "optimizer": "sgd",
                                       "batch": args.batch, "epochs": args.epochs,
                                       "schedule": "x1 2, x0.4 3, x0.2 3, x0.1 4, x0.02 after",
                                       "init": "uniform +-2.4/fan-in", "seed": args.seed,
                                       "deslant": args.deslant, "box": args.box,
                                       "distort": args.distort,
                                       "size": args.size}, "validation": tried}
    if args.test:
        best = min(tried, key=lambda t: t["val_error"])["lr"]
        x, y, xt, yt = splits(args, test=True)
        t0 = time.perf_counter()
        ws = train_mlp(x, y, args.hidden, best, args.epochs, args.batch, args.seed,
                       fresh=distorted(args, True) if args.distort else None)
        result["test"] = {"lr": best, "test_error": error(ws, xt, yt),
                          "train_error": error(ws, x, y), "seconds": time.perf_counter() - t0}
        rows.append([name, best, "test (60,000 training)", f"{result['test']['test_error']:.2f}",
                     f"{result['test']['train_error']:.2f}", f"{result['test']['seconds']:.0f}"])
    markdown_table(["net", "lr", "measured on", "error %", "training error %", "seconds"], rows)
    return result


# ----------------------------------------------------------------------------- k-NN


def knn_votes(labels: torch.Tensor, k: int) -> torch.Tensor:
    """The k-NN rows' decision (``NearestNeighbours.forward`` less the confidence term): the
    votes of the k nearest, ties to the class of the nearest."""
    votes = torch.zeros(labels.shape[0], 10, dtype=torch.float64)
    votes.scatter_add_(1, labels[:, :k], torch.ones(labels.shape[0], k, dtype=torch.float64))
    return (votes + 0.5 * torch.nn.functional.one_hot(labels[:, 0], 10)).argmax(1)


def knn_errors(x, y, xe, ye) -> tuple[dict[int, float], float]:
    """Test-error % of the k-NN rows' votes for k = 1..5, storing ``x`` (8-bit levels, as the
    rows do) and querying ``xe``; and the seconds the search took."""
    from lenet5.models.baselines import NearestNeighbours

    head = NearestNeighbours(len(y), x.shape[1], 3)
    head.store(torch.from_numpy(x), torch.from_numpy(y))
    t0 = time.perf_counter()
    with torch.no_grad():
        idx = torch.cat([head.nearest(torch.from_numpy(xe[i : i + 1000]), 5)[1]
                         for i in range(0, len(ye), 1000)])
    labels = head.labels[idx]
    errs = {k: 100.0 * float((knn_votes(labels, k).numpy() != ye).mean()) for k in range(1, 6)}
    return errs, time.perf_counter() - t0


def cmd_knn(args) -> dict:
    result, rows = {"what": "k-NN Euclidean", "deslant": args.deslant}, []
    for where in ("validation", "test") if args.test else ("validation",):
        x, y, xe, ye = splits(args, test=where == "test")
        errs, seconds = knn_errors(x, y, xe, ye)
        result[where] = {"errors": errs, "seconds": seconds}
        rows += [[where, len(y), k, f"{e:.2f}", int(round(e * len(ye) / 100))]
                 for k, e in errs.items()]
    if args.stored:
        # How the error grows as fewer digits are stored (the first N of the 60,000): a
        # diagnostic of the paper's figure, not a setting chosen on it.
        x, y, xe, ye = splits(args, test=True)
        result["stored"] = {}
        for n in args.stored:
            errs, _ = knn_errors(x[:n], y[:n], xe, ye)
            result["stored"][n] = errs
            rows += [[f"test, first {n:,} stored", n, k, f"{e:.2f}",
                      int(round(e * len(ye) / 100))] for k, e in errs.items()]
    markdown_table(["measured on", "stored", "k", "error %", "errors"], rows)
    return result


# ----------------------------------------------------------------------------- ridge


def cmd_ridge(args) -> dict:
    result, rows = {"what": "least-squares linear, +-1 targets", "deslant": args.deslant}, []
    x, y, xv, yv = (torch.from_numpy(a) for a in splits(args, test=False))
    tried = {}
    for ridge in args.ridge:
        w = least_squares(x, plus_minus(y), ridge).float()
        err = 100.0 * float(((xv @ w[:, :-1].T + w[:, -1]).argmax(1) != yv).float().mean())
        tried[ridge] = err
        rows.append(["validation", ridge, f"{err:.2f}"])
    result["validation"] = tried
    if args.test:
        best = min(tried, key=tried.get)
        x, y, xt, yt = (torch.from_numpy(a) for a in splits(args, test=True))
        w = least_squares(x, plus_minus(y), best).float()
        err = 100.0 * float(((xt @ w[:, :-1].T + w[:, -1]).argmax(1) != yt).float().mean())
        result["test"] = {"ridge": best, "test_error": err}
        rows.append(["test", best, f"{err:.2f}"])
    markdown_table(["measured on", "ridge (x N)", "error %"], rows)
    return result


# ----------------------------------------------------------------------------- box


def cmd_box(args) -> dict:
    """The ink (above the background) each 20x20 window of ``Retina`` leaves out."""
    xs, _ = load_split("mnist", "train", args.data_dir)
    x = Normalization.make("paper")(to_unit(xs))
    rows, result = [], {"what": "ink outside the 20x20 window (training set)"}
    for deslant in (False, True):
        for box in ("centre", "ink"):
            field, window = Retina(28, deslant), Retina(20, deslant, box)
            with torch.no_grad():
                whole = torch.cat([field(x[i : i + 5000]) for i in range(0, len(x), 5000)])
                part = torch.cat([window(x[i : i + 5000]) for i in range(0, len(x), 5000)])
            lo = whole.amin(1, keepdim=True)
            ink, kept = (whole - lo).sum(1), (part - lo).clamp_min(0).sum(1)
            lost = 1 - kept / ink.clamp_min(1e-9)
            name = f"{'deslanted' if deslant else 'raw'}, {box}"
            result[name] = {"ink_outside": float(1 - kept.sum() / ink.sum()),
                            "digits_over_1pct": float((lost > 0.01).float().mean()),
                            "worst": float(lost.max())}
            r = result[name]
            rows.append([name, f"{100 * r['ink_outside']:.3f}%",
                         f"{100 * r['digits_over_1pct']:.2f}%", f"{100 * r['worst']:.1f}%"])
    markdown_table(["field, window", "ink outside", "digits losing > 1% of their ink", "worst"],
                   rows)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=("mlp", "knn", "ridge", "box"))
    p.add_argument("--data-dir")
    p.add_argument("--test", action="store_true", help="also report the chosen setting on test")
    p.add_argument("--deslant", action="store_true")
    p.add_argument("--distort", action="store_true", help="mlp: a new distortion each pass")
    p.add_argument("--size", type=int, default=28, help="input side (20: see --box)")
    p.add_argument("--box", default="", choices=("", "centre", "ink"),
                   help="a size x size window, not resized (models.baselines.Retina)")
    p.add_argument("--hidden", type=int, nargs="*", default=[300], help="hidden widths (none: linear)")
    p.add_argument("--lr", type=float, nargs="+", default=[0.01], help="rates tried on validation")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ridge", type=float, nargs="+", default=[1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    p.add_argument("--stored", type=int, nargs="*", default=[],
                   help="knn: also the test error storing only the first N training digits")
    p.add_argument("--tag", default="", help="suffix of the JSON file's name")
    args = p.parse_args()
    torch.set_num_threads(1)
    result = {"what": args.what}
    result.update({"cmd_mlp": cmd_mlp, "cmd_knn": cmd_knn, "cmd_ridge": cmd_ridge,
                   "cmd_box": cmd_box}[f"cmd_{args.what}"](args))
    tag = f"-{args.tag}" if args.tag else ""
    write_result(RESULTS / f"fig9-{args.what}{tag}.json", {**machine_info(1), **result})


if __name__ == "__main__":
    main()
