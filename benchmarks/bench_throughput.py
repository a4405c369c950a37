"""Train and inference images/s: NumPy engine, PyTorch engine and the plain script (issue #7, run 6).

One run measures, one after the other, each in its own fresh process (so each peak RSS is its
own): the NumPy engine (``lenet5.scratch``, no torch imported) and the PyTorch engine on
``lenet5-1998`` and on the ``best`` preset's ``lenet5-modern`` (batch-norm, dropout 0.1), and
the plain PyTorch script of ``plain_lenet5.py``. A training step is forward, loss (MAP for the
RBF head, cross-entropy for logits), backward and an update (plain SGD in both engines, as in
``bench_scratch.py``; the plain script's own Adam step); inference is an eval-mode forward. Batch
1, 64, 256 and 1024, random inputs; each figure is the best of a few timed loops after a
warm-up (``common.best_rate``). A batch-norm model cannot train at batch 1 (one value per
channel after C5), so that cell is empty. Peak RSS is the process's maximum resident set after
all its measurements (framework, model and batches up to 1024; no dataset held).

    python benchmarks/bench_throughput.py [--quick] [--threads 1] [--case N ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from pathlib import Path

from common import (
    RESULTS,
    best_rate,
    child_json,
    load_average,
    machine_info,
    markdown_table,
    write_result,
)

HERE = Path(__file__).resolve().parent
BATCHES = (1, 64, 256, 1024)
LR = 1e-3
MODERN = {"activation": "relu", "pool": "max", "batchnorm": True, "dropout": 0.1}  # preset best
CASES = [  # (engine, model label, model name, config)
    ("numpy", "lenet5-1998", "lenet5-1998", {}),
    ("torch", "lenet5-1998", "lenet5-1998", {}),
    ("numpy", "lenet5-modern (best)", "lenet5-modern", MODERN),
    ("torch", "lenet5-modern (best)", "lenet5-modern", MODERN),
    ("plain", "plain script LeNet-5", None, {}),
]


def numpy_fns(name: str, config: dict, batch: int):
    import numpy as np

    from lenet5.scratch import build
    from lenet5.scratch.losses import cross_entropy, map_loss
    from lenet5.scratch.optim import SGD

    model = build(name, config, seed=0)
    opt = SGD(model.params(), lr=LR)
    loss = map_loss if model.head == "rbf" else cross_entropy
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 1, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch)

    def train():
        model.train(True)
        _, dout = loss(model.forward(x, train=True), y)
        opt.step(model.backward(dout))

    def infer():
        model.train(False)
        model.forward(x)

    return train, infer


def torch_fns(name: str | None, config: dict, batch: int):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(batch)
    if name is None:  # the plain script: its model, its 28x28 input, its Adam step
        import plain_lenet5

        model = plain_lenet5.build_model()
        opt = torch.optim.Adam(model.parameters(), lr=LR)
        x = torch.randn(batch, 1, 28, 28, generator=gen)
        y = torch.randint(0, 10, (batch,), generator=gen)

        def train():
            plain_lenet5.train_step(model, opt, x, y)
    else:
        from lenet5.models import create_model
        from lenet5.training.losses import map_loss

        model = create_model(name, **config)
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        loss = (lambda out, t: map_loss(out, t, 0.1)) if name == "lenet5-1998" else F.cross_entropy
        x = torch.randn(batch, 1, 32, 32, generator=gen)
        y = torch.randint(0, 10, (batch,), generator=gen)

        def train():
            model.train()
            opt.zero_grad(set_to_none=True)
            loss(model(x), y).backward()
            opt.step()

    def infer():
        model.eval()
        with torch.inference_mode():
            model(x)

    return train, infer


def child(engine: str, name: str | None, config: dict, seconds: float, repeats: int, threads: int) -> None:
    """(Subprocess) measure one engine and model; print one JSON object."""
    if engine != "numpy":
        import torch

        torch.set_num_threads(threads)
    rows = []
    for batch in BATCHES:
        train, infer = (numpy_fns if engine == "numpy" else torch_fns)(name, config, batch)
        trainable = batch > 1 or not config.get("batchnorm")
        rows.append({"batch": batch,
                     "train_images_per_s": best_rate(train, batch, seconds, repeats) if trainable else None,
                     "infer_images_per_s": best_rate(infer, batch, seconds, repeats)})
    print(json.dumps({"rows": rows, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "torch_imported": "torch" in sys.modules}))


def fmt(v: float | None) -> str:
    return f"{v:,.0f}" if v else "-"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short timings (under a minute)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=str(RESULTS / "throughput.json"))
    p.add_argument("--case", type=int, action="append", choices=range(len(CASES)),
                   help="measure only these rows of CASES (0-based; default all)")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    seconds, repeats = (0.15, 1) if args.quick else (1.5, 3)
    if args.child is not None:
        engine, _, name, config = CASES[args.child]
        child(engine, name, config, seconds, repeats, args.threads)
        return 0

    env = {**os.environ, **{v: str(args.threads) for v in
                            ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    info = machine_info(args.threads)
    results = []
    for i, (engine, label, _, _) in enumerate(CASES):
        if args.case and i not in args.case:
            continue
        cmd = [sys.executable, __file__, "--child", str(i), "--threads", str(args.threads)]
        measured = child_json(cmd + (["--quick"] if args.quick else []), env=env, cwd=HERE)
        results.append({"engine": engine, "model": label, **measured})

    print(f"\nimages/s, {args.threads} thread(s), load average {info['load_average_1min']:.1f} at start\n")
    markdown_table(
        ["engine", "model", *(f"train b{b}" for b in BATCHES), *(f"infer b{b}" for b in BATCHES),
         "peak RSS MiB"],
        [(r["engine"], r["model"], *(fmt(row["train_images_per_s"]) for row in r["rows"]),
          *(fmt(row["infer_images_per_s"]) for row in r["rows"]), f"{r['peak_rss_mib']:,.0f}")
         for r in results])

    write_result(args.json, {**info, "quick": args.quick, "seconds_per_repeat": seconds,
                             "repeats": repeats, "lr": LR, "results": results,
                             "load_average_1min_at_end": load_average()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
