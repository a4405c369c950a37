"""Where a training step of the compiled ``lenet5-modern`` goes, layer by layer, and C3 per
pattern against C3 in SIMD lanes, side by side in one process (issue 14).

Times, in milliseconds per batch of ``--batch`` patterns of real MNIST (float32, Numba threads
as ``--threads``): the whole forward and backward of ``kernels_modern``, and the parts that
dominate them, each called alone on the batch the forward pass left in the workspace:

- C1 forward and backward (per pattern, :func:`blocks.conv_forward_batch` / ``conv_backward_batch``);
- C3 forward and backward per pattern (the kernels ``conv_lanes`` replaced) and in lanes
  (``conv_lanes.conv3_forward`` / ``conv3_backward``): the ratio is the table's last column;
- batch-norm and activation (C1's and C3's), pooling, C5's backward.

    python benchmarks/bench_layers.py --data-dir ../shared/data
    python benchmarks/bench_layers.py --data-dir ../shared/data --threads 2 --batch 256
    python benchmarks/bench_layers.py --data-dir ../shared/data --quick      # plumbing only
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

from common import RESULTS, machine_info, markdown_table, write_result
from lenet5.compiled import blocks, conv_lanes
from lenet5.compiled import kernels_modern as KM
from lenet5.compiled.layers import PAD
from lenet5.compiled.model import CompiledModel
from lenet5.data.datasets import load_split


def timed(fn, seconds: float = 0.5, repeats: int = 3) -> float:
    """Milliseconds per call: the best of ``repeats`` loops of about ``seconds``."""
    fn()
    start = time.perf_counter()
    fn()
    calls = max(1, int(seconds / max(time.perf_counter() - start, 1e-6)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="Numba threads (default 1)")
    p.add_argument("--batchnorm", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--quick", action="store_true", help="batch 8, short timing loops (plumbing)")
    p.add_argument("--json", default=str(RESULTS / "layers.json"))
    args = p.parse_args()
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))

    n = 8 if args.quick else args.batch
    seconds, repeats = (0.02, 1) if args.quick else (0.5, 3)
    images, labels = load_split("mnist", "train", args.data_dir)
    m = CompiledModel("lenet5-modern", {"batchnorm": args.batchnorm}, np.float32, seed=0)
    m.train_pass(images, labels.astype(np.int64), np.arange(4 * n), _sgd(m), batch_size=n,
                 normalization=(0.1307, 1 / 0.3081))  # trained a little: realistic activations
    x = ((images[:n].astype(np.float32) / 255 - 0.1307) / 0.3081)
    field = np.zeros((n, 1, 32, 32), np.float32)
    field[:, 0, 2:30, 2:30] = x
    w = m._workspace(n)
    out = m.forward(field, train=True)
    dout = np.random.default_rng(0).standard_normal(out.shape).astype(np.float32) / n
    m.backward(dout)

    P, G = KM.views(m.theta, m.offs, m.widths), KM.views(m.grad, m.offs, m.widths)
    w1, w3 = int(m.widths[0]), int(m.widths[1])
    pairs1, pairs3 = KM._pairs(w1, 1), KM._pairs(w3, w1)
    x1 = w.x.reshape(w.x.shape[0], 1, 1024)
    no_dx = w.no_dx.reshape(0, 0, 0)
    bn, act = m.bn, m.act
    d3 = w.dy3.copy()  # C3's output gradient, kept: the calls below overwrite the workspace's
    dp1 = np.zeros_like(w.dp1)

    def per_pattern_c3_backward():
        dp1[:n] = 0
        blocks.conv_backward_batch(w.p1, 14, P.c3w, d3, *pairs3, G.c3w, G.c3b, dp1, n)

    parts = {
        "forward (whole)": lambda: KM.forward(m.theta, m.offs, m.widths, m.stats, m.counts, act,
                                              m.pool, bn, m.p, True, w, n),
        "backward (whole)": lambda: KM.backward(m.theta, m.grad, m.offs, m.widths, act, m.pool,
                                                bn, m.p, True, w, n),
        "C1 forward": lambda: blocks.conv_forward_batch(x1, 32, P.c1w, P.c1b, *pairs1, w.z1, n),
        "C1 backward": lambda: blocks.conv_backward_batch(x1, 32, P.c1w, w.dy1, *pairs1, G.c1w,
                                                          G.c1b, no_dx, n),
        "C3 forward, per pattern": lambda: blocks.conv_forward_batch(
            w.p1, 14, P.c3w, P.c3b, *pairs3, w.z3, n),
        "C3 forward, lanes": lambda: conv_lanes.conv3_forward(w.p1, P.c3w, P.c3b, w.z3, n),
        "C3 backward, per pattern": per_pattern_c3_backward,
        "C3 backward, lanes": lambda: conv_lanes.conv3_backward(w.p1, P.c3w, d3, G.c3w, G.c3b,
                                                                dp1, n),
        "C1 batch-norm + activation": lambda: KM._norm_act(
            w.z1[:n], w.y1[:n], 28, 32, 28, P.n1w, P.n1b, m.stats, m.counts, 0, m.widths, act,
            bn, True, w.bn),
        "C3 batch-norm + activation": lambda: KM._norm_act(
            w.z3[:n], w.y3[:n], 10, 14, 10, P.n3w, P.n3b, m.stats, m.counts, 1, m.widths, act,
            bn, True, w.bn),
        "S2 and S4 pooling": lambda: (
            blocks.pool_forward(m.pool, w.y1[:n], 32, 28, w.p1[:n], w.a1[:n]),
            blocks.pool_forward(m.pool, w.y3[:n], 14, 10, w.p3[:n], w.a3[:n])),
        "C5 backward": lambda: blocks.linear_backward_batch(
            P.c5w, w.p3[:n].reshape(n, w3 * 25), w.d5[:n], G.c5w, G.c5b, w.dp3[:n]),
    }
    assert w.dy3.shape[2] == PAD + 140 + PAD
    ms = {name: timed(fn, seconds, repeats) for name, fn in parts.items()}
    rows = [[name, f"{v:.3f}"] for name, v in ms.items()]
    print(f"lenet5-modern{' (batch-norm)' if bn else ''}, batch {n}, {args.threads} Numba "
          f"thread(s), ms per batch:")
    markdown_table(["part", "ms / batch"], rows)
    speedup = {k: ms[f"C3 {k}, per pattern"] / ms[f"C3 {k}, lanes"] for k in ("forward", "backward")}
    print(f"C3 in lanes against per pattern: forward {speedup['forward']:.2f}x, "
          f"backward {speedup['backward']:.2f}x")
    write_result(args.json, {**machine_info(threads=args.threads), "batch": n, "batchnorm": bn,
                             "ms_per_batch": ms, "c3_lanes_speedup": speedup})
    return 0


def _sgd(model):
    from lenet5.compiled.optim import make_optimizer

    return make_optimizer(model, "sgd", 0.01, 0.9, True, 0.0, 0.02)


if __name__ == "__main__":
    raise SystemExit(main())
