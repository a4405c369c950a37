"""Engines side by side: the compiled engine (Numba) vs the NumPy engine vs PyTorch, one thread.

Training throughput (patterns per second of the whole step: forward, loss, backward, update):

- lenet5-1998, MAP loss + SDLM (h_kk from 500 patterns, frozen), batch 1, 16, 64 and 256;
  the compiled engine both as a whole pass in one call (``CompiledModel.train_pass``: pattern
  loading and normalisation from the uint8 images included; also distorted at batch 1) and as
  one Python call per step (``forward``/``backward``/``step``, what ``train_step`` does);
  NumPy and PyTorch one step per call on a normalised in-memory batch;
- lenet5-modern (ReLU, max-pool), cross-entropy + Adam, batch 64 and 256.

Evaluation throughput of lenet5-1998 and lenet5-modern (eval-mode forward, images per second):
the compiled engine from raw images (``evaluate_images``: the eval-only kernels of
``lenet5.compiled.infer_1998`` and ``infer_modern``) and per batch of 256 (``forward``: the exact training
kernels, which also keep every activation for a backward pass), NumPy and PyTorch per batch
of 256. The compile time is reported apart: a fresh process with an empty
Numba cache times its first 1998 pass and evaluation (the compiled code is then cached on
disk, so later runs only load it); the first calls in this process say how long loading took.
Each rate is the best of a few timed repeats after a warm-up. Real MNIST when ``--data-dir``
holds it, else random digits (throughput only).

    python benchmarks/bench_engines.py [--quick] [--data-dir DIR] [--no-cold-compile]
                                       [--only train|eval] [--out benchmarks/results/engines.json]

On a shared machine, pin it to one core at real-time priority so other work cannot take the
core mid-measurement (as root): ``chrt -f 10 taskset -c 1 python benchmarks/bench_engines.py``.
"""

from __future__ import annotations

import argparse
import os
import sys

PARSER = argparse.ArgumentParser(description=__doc__.splitlines()[0])
PARSER.add_argument("--quick", action="store_true", help="short timings (under a minute)")
PARSER.add_argument("--data-dir", default=None, help="data root holding mnist/ (default: lenet5's)")
PARSER.add_argument("--out", "--json", dest="out", default="benchmarks/results/engines.json",
                    help="JSON to write")
PARSER.add_argument("--only", choices=("train", "eval"), default=None,
                    help="only the training rows or only the evaluation row")
PARSER.add_argument("--no-cold-compile", action="store_true",
                    help="skip the compile-time measurement in a fresh process")
PARSER.add_argument("--cold-compile-child", action="store_true", help=argparse.SUPPRESS)
if __name__ == "__main__":
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[_var] = "1"

import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402

import numpy as np  # noqa: E402

from common import best_rate, child_json, machine_info, markdown_table, write_result  # noqa: E402

SHIFT, SCALE = 0.1 / 1.275, 1.275  # the paper's normalisation
TRAIN_BATCHES, MODERN_BATCHES, EVAL_BATCH = (1, 16, 64, 256), (64, 256), 256


def load_digits(data_dir: str | None, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``n`` training images (uint8, 28x28) and labels; random ones when MNIST is missing."""
    try:
        from lenet5.data import load_split

        images, labels = load_split("mnist", "train", data_dir, download=False)
        return images[:n], labels[:n].astype(np.int64), "mnist"
    except Exception as e:  # noqa: BLE001 - any failure: fall back, and say so
        print(f"(no MNIST: {e}; random digits)")
        rng = np.random.default_rng(0)
        return (rng.integers(0, 256, (n, 28, 28)).astype(np.uint8), rng.integers(0, 10, n),
                "random")


def normalised(images: np.ndarray) -> np.ndarray:
    """``(N, 1, 32, 32) float32``: /255, padded with background, the paper's affine map."""
    x = np.zeros((len(images), 1, 32, 32), np.float32)
    x[:, 0, 2:30, 2:30] = images / np.float32(255)
    return (x - np.float32(SHIFT)) * np.float32(SCALE)


# ----------------------------------------------------------------------------- one engine each


def compiled_fns(name: str, batch: int, images, labels, x, y, n_pass: int):
    """(whole pass of n_pass patterns, one per-step call, eval forward) of the compiled engine."""
    from lenet5.compiled import build, make_optimizer
    from lenet5.scratch import losses as NL

    model = build(name, seed=0)
    if name == "lenet5-1998":
        opt = make_optimizer(model, "sdlm", 5e-4, mu=0.02)
        opt.set_curvature(model.curvature(images, np.arange(500), (SHIFT, SCALE)))
        loss = NL.map_loss
    else:
        opt = make_optimizer(model, "adam", 1e-3)
        loss = NL.cross_entropy
    order = np.random.default_rng(batch).permutation(len(images))[:n_pass]

    def whole_pass(distortion=None):
        model.train_pass(images, labels, order, opt, batch_size=batch, distortion=distortion,
                         normalization=(SHIFT, SCALE))

    def step():
        _, dout = loss(model.forward(x[:batch], train=True), y[:batch])
        model.backward(dout)
        opt.step()

    return model, whole_pass, step


def numpy_fns(name: str, batch: int, x, y):
    from lenet5.scratch import build
    from lenet5.scratch import losses as NL
    from lenet5.scratch import optim as NO

    model = build(name, seed=0)
    if name == "lenet5-1998":
        opt = NO.SDLM(model.params(), 5e-4, 0.02)
        opt.set_curvature(NO.estimate_curvature(model, x[:500]))
        loss = NL.map_loss
    else:
        opt, loss = NO.Adam(model.params(), 1e-3), NL.cross_entropy

    def step():
        _, dout = loss(model.forward(x[:batch], train=True), y[:batch])
        opt.step(model.backward(dout))

    return model, step


def torch_fns(name: str, batch: int, x, y):
    import torch

    from lenet5.models import create_model
    from lenet5.training import losses as TL
    from lenet5.training import optim as TO

    torch.manual_seed(0)
    model = create_model(name)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    if name == "lenet5-1998":
        opt = TO.SDLM(model.parameters(), lr=5e-4, mu=0.02)
        opt.set_curvature(TO.estimate_curvature(model, xt[:500]))
        loss = TL.make_loss("map", 0.1)
    else:
        opt, loss = torch.optim.Adam(model.parameters(), lr=1e-3), TL.make_loss("ce")
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        loss(model(xt[:batch]), yt[:batch]).backward()
        opt.step()

    def infer():
        model.eval()
        with torch.no_grad():
            model(xt[:EVAL_BATCH])
        model.train()

    return step, infer


# ----------------------------------------------------------------------------- measurements


def cold_compile() -> dict:
    """(Child process, empty Numba cache) seconds to the first 1998 pass and evaluation."""
    t0 = time.perf_counter()
    from lenet5.compiled import build, make_optimizer

    imported = time.perf_counter()
    images, labels, _ = load_digits(None, 600)
    model = build("lenet5-1998", seed=0)
    opt = make_optimizer(model, "sdlm", 5e-4)
    opt.set_curvature(model.curvature(images, np.arange(100)))
    curvature = time.perf_counter()
    model.train_pass(images, labels, np.arange(100), opt)
    trained = time.perf_counter()
    model.evaluate_images(images[:100])
    evaluated = time.perf_counter()
    return {"import_s": imported - t0, "curvature_s": curvature - imported,
            "train_pass_s": trained - curvature, "evaluate_s": evaluated - trained,
            "total_s": evaluated - t0}


def measure(args) -> dict:
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)
    seconds, repeats = (0.25, 2) if args.quick else (0.6, 3)
    n_pass = 1000 if args.quick else 3000
    images, labels, source = load_digits(args.data_dir, 10_000)
    x, y = normalised(images[:1024]), labels[:1024]

    t0 = time.perf_counter()  # the first calls: Numba loads the cached code (or compiles it)
    model, whole_pass, step = compiled_fns("lenet5-1998", 1, images, labels, x, y, 10)
    whole_pass()
    step()
    model.evaluate_images(images[:10])
    first_calls = time.perf_counter() - t0

    rows = []
    trained = () if args.only == "eval" else (("lenet5-1998", TRAIN_BATCHES),
                                              ("lenet5-modern", MODERN_BATCHES))
    for name, batches in trained:
        for batch in batches:
            model, whole_pass, step = compiled_fns(name, batch, images, labels, x, y, n_pass)
            row = {"model": name, "mode": "train", "batch": batch,
                   "compiled_pass": best_rate(whole_pass, n_pass, seconds, repeats),
                   "compiled_steps": best_rate(step, batch, seconds, repeats),
                   "numpy": best_rate(numpy_fns(name, batch, x, y)[1], batch, seconds, repeats),
                   "torch": best_rate(torch_fns(name, batch, x, y)[0], batch, seconds, repeats)}
            if name == "lenet5-1998" and batch == 1:
                from lenet5.data.transforms import Distortion

                distorted = partial(whole_pass, Distortion())
                row["compiled_pass_distorted"] = best_rate(distorted, n_pass, seconds, repeats)
            rows.append(row)
            print(f"  {name} batch {batch}: done", flush=True)
    if args.only == "train":
        return {"rows": rows, "data": source, "first_calls_in_process_s": first_calls,
                "pass_patterns": n_pass, "seconds": seconds, "repeats": repeats}
    for name in ("lenet5-1998", "lenet5-modern"):
        model, _, _ = compiled_fns(name, EVAL_BATCH, images, labels, x, y, 10)
        np_model, _ = numpy_fns(name, EVAL_BATCH, x, y)
        rows.append({"model": name, "mode": "eval", "batch": EVAL_BATCH,
                     "compiled_pass": best_rate(partial(model.evaluate_images, images),
                                                len(images), seconds, repeats),
                     "compiled_steps": best_rate(partial(model.forward, x[:EVAL_BATCH]),
                                                 EVAL_BATCH, seconds, repeats),
                     "numpy": best_rate(partial(np_model.forward, x[:EVAL_BATCH]), EVAL_BATCH,
                                        seconds, repeats),
                     "torch": best_rate(torch_fns(name, EVAL_BATCH, x, y)[1], EVAL_BATCH,
                                        seconds, repeats)})
    return {"rows": rows, "data": source, "first_calls_in_process_s": first_calls,
            "pass_patterns": n_pass, "seconds": seconds, "repeats": repeats}


def main() -> None:
    args = PARSER.parse_args()
    if args.cold_compile_child:
        print(json.dumps(cold_compile()))
        return
    import numba
    import torch

    from lenet5 import __version__

    info = machine_info(threads=1)
    compile_info = None
    if not args.no_cold_compile:
        print("compiling in a fresh process (empty Numba cache) ...", flush=True)
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache, "OPENBLAS_NUM_THREADS": "1"}
            compile_info = child_json([sys.executable, __file__, "--cold-compile-child"], env=env)
    print("timing ...", flush=True)
    result = measure(args)
    head = ["model", "mode", "batch", "compiled: pass", "compiled: per step", "NumPy", "PyTorch",
            "compiled pass / NumPy"]
    table = []
    for r in result["rows"]:
        table.append([r["model"], r["mode"], r["batch"], f"{r['compiled_pass']:,.0f}",
                      f"{r['compiled_steps']:,.0f}", f"{r['numpy']:,.0f}", f"{r['torch']:,.0f}",
                      f"{r['compiled_pass'] / r['numpy']:.1f}x"])
    print()
    print("patterns (train) or images (eval) per second, one thread, float32:")
    markdown_table(head, table)
    distorted = [r for r in result["rows"] if "compiled_pass_distorted" in r]
    for r in distorted:
        print(f"\nlenet5-1998 batch 1, compiled pass with distortions: "
              f"{r['compiled_pass_distorted']:,.0f} patterns/s "
              f"({r['compiled_pass_distorted'] / r['compiled_pass']:.2f} of undistorted)")
    if compile_info:
        c = compile_info
        print(f"\ncompile, fresh process, empty cache: {c['total_s']:.1f} s (import "
              f"{c['import_s']:.1f}, curvature {c['curvature_s']:.1f}, train pass "
              f"{c['train_pass_s']:.1f}, evaluate {c['evaluate_s']:.1f})")
    print(f"first calls in this process (cached code): {result['first_calls_in_process_s']:.1f} s")
    write_result(args.out, {
        **info, "load_average": list(os.getloadavg()), "machine": platform.machine(),
        "versions": {"lenet5": __version__, "python": platform.python_version(),
                     "numpy": np.__version__, "numba": numba.__version__,
                     "torch": torch.__version__},
        "dtype": "float32", "compile": compile_info, **result,
        "units": "patterns per second (train), images per second (eval); best of repeats",
        "steps": {"lenet5-1998": "MAP loss + SDLM (mu 0.02, eta 5e-4)",
                  "lenet5-modern": "cross-entropy + Adam (lr 1e-3)"},
    })


if __name__ == "__main__":
    main()
