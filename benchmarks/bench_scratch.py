"""Training and inference throughput: the NumPy engine vs PyTorch on lenet5-1998, side by side.

Both engines run the same step on the same in-memory batch: forward, MAP loss, backward and a
plain SGD update (``lenet5.scratch`` by hand; PyTorch with ``create_model`` and
``torch.optim.SGD``), at batch 64, 256 and 1024, and an eval-mode forward at batch 1, 64, 256
and 1024. Each figure is the best of a few timed repeats after a warm-up. NumPy's BLAS and
PyTorch get the same number of threads (``--threads``; the BLAS thread count must be set before
NumPy is imported, hence the early argument parse). The peak resident memory of the NumPy
engine over an epoch of the 60,000 training images at batch 1024 is measured in a subprocess
that imports no torch (``--quick``: 20 steps, enough to reach the peak). ``--profile`` instead
runs cProfile over 40 NumPy training steps at batch 256 and prints where the time goes.

    python benchmarks/bench_scratch.py [--quick] [--threads N] [--out benchmarks/results/scratch.json]
    python benchmarks/bench_scratch.py --profile [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys

PARSER = argparse.ArgumentParser(description=__doc__.splitlines()[0])
PARSER.add_argument("--quick", action="store_true", help="short timings (under a minute)")
PARSER.add_argument("--threads", type=int, default=1, help="BLAS/torch threads (default 1)")
PARSER.add_argument("--out", default="benchmarks/results/scratch.json", help="JSON to write")
PARSER.add_argument("--profile", action="store_true",
                    help="cProfile NumPy training steps (batch 256) instead of timing")
PARSER.add_argument("--memory-steps", type=int, default=None, help=argparse.SUPPRESS)
if __name__ == "__main__":
    _threads = str(PARSER.parse_known_args()[0].threads)
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _threads

import ast  # noqa: E402
import cProfile  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import resource  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from common import best_rate, child_json, machine_info, write_result  # noqa: E402
from lenet5.scratch import build  # noqa: E402
from lenet5.scratch.losses import map_loss  # noqa: E402
from lenet5.scratch.optim import SGD  # noqa: E402

TRAIN_BATCHES, INFER_BATCHES = (64, 256, 1024), (1, 64, 256, 1024)
LR = 1e-3


def numpy_fns(batch: int):
    model = build("lenet5-1998", seed=0)
    opt = SGD(model.params(), lr=LR)
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, 1, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch)

    def train():
        _, dout = map_loss(model.forward(x, train=True), y, 0.1)
        opt.step(model.backward(dout))

    return train, lambda: model.forward(x)


def torch_fns(batch: int):
    import torch

    from lenet5.models import create_model
    from lenet5.training.losses import map_loss as torch_map_loss

    torch.manual_seed(0)
    model = create_model("lenet5-1998")
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(batch)
    x, y = torch.randn(batch, 1, 32, 32, generator=gen), torch.randint(0, 10, (batch,), generator=gen)

    def train():
        opt.zero_grad(set_to_none=True)
        torch_map_loss(model(x), y, 0.1).backward()
        opt.step()

    def infer():
        with torch.no_grad():
            model(x)

    return train, infer


def measure(seconds: float, repeats: int) -> list[dict]:
    rows = []
    for mode, batches in (("train", TRAIN_BATCHES), ("infer", INFER_BATCHES)):
        for batch in batches:
            rates = {}
            for engine, fns in (("numpy", numpy_fns), ("torch", torch_fns)):
                train, infer = fns(batch)
                rates[engine] = best_rate(train if mode == "train" else infer, batch, seconds, repeats)
            rows.append({"mode": mode, "batch": batch, "numpy_images_per_s": rates["numpy"],
                         "torch_images_per_s": rates["torch"],
                         "numpy_over_torch": rates["numpy"] / rates["torch"]})
    return rows


def memory_run(steps: int | None, batch: int = 1024) -> None:
    """(Subprocess) an epoch of 60,000 images held in memory; prints the peak RSS in MiB."""
    assert "torch" not in sys.modules
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60_000, 1, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 60_000)
    model = build("lenet5-1998", seed=0)
    opt = SGD(model.params(), lr=LR)
    starts = range(0, len(x), batch)
    for start in list(starts)[:steps]:
        _, dout = map_loss(model.forward(x[start : start + batch], train=True), y[start : start + batch])
        opt.step(model.backward(dout))
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "steps": len(list(starts)[:steps]), "batch": batch}))


def peak_memory(steps: int | None, threads: int) -> dict:
    return child_json([sys.executable, __file__, "--threads", str(threads),
                       "--memory-steps", str(steps or 0)])


def environment(threads: int) -> dict:
    import torch

    from lenet5 import __version__

    torch.set_num_threads(threads)
    return {
        **machine_info(threads),
        "versions": {"lenet5": __version__, "python": platform.python_version(),
                     "numpy": np.__version__, "torch": torch.__version__},
        "model": "lenet5-1998", "dtype": "float32", "step": "forward + MAP loss + backward + SGD",
    }


def print_table(rows: list[dict], memory: dict) -> None:
    print(f"{'mode':<7}{'batch':>6}{'numpy img/s':>14}{'torch img/s':>14}{'numpy/torch':>13}")
    for r in rows:
        print(f"{r['mode']:<7}{r['batch']:>6}{r['numpy_images_per_s']:>14,.0f}"
              f"{r['torch_images_per_s']:>14,.0f}{r['numpy_over_torch']:>12.2f}x")
    print(f"numpy peak RSS, {memory['steps']} steps of batch {memory['batch']} with 60,000 "
          f"images in memory: {memory['peak_rss_mib']:,.0f} MiB")


def qualname(file: str, line: int, func: str) -> str:
    """``Class.method`` for a function defined at ``file:line`` (pstats gives no class)."""
    path = Path(file)
    if not line or not path.is_file():
        return func
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.lineno == line:
                    return f"{node.name}.{func}"
    return func


def profile(steps: int = 40, batch: int = 256, top: int = 10) -> None:
    """Share of the time of ``steps`` NumPy training steps by function (own time, cProfile)."""
    train, _ = numpy_fns(batch)
    train()  # warm-up: buffers allocated
    prof = cProfile.Profile()
    prof.runcall(lambda: [train() for _ in range(steps)])
    stats = pstats.Stats(prof)
    total = stats.total_tt
    print(f"{steps} training steps of lenet5-1998 at batch {batch}: {total:.2f} s "
          f"({steps * batch / total:,.0f} img/s under the profiler)")
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    for (file, line, func), (_, calls, own, cum, _) in rows:
        where = f"{qualname(file, line, func)} ({Path(file).name}:{line})" if line else func
        print(f"{100 * own / total:5.1f}%  own {own:6.2f} s  cum {cum:6.2f} s  {calls:>5} calls  {where}")


def main(argv: list[str] | None = None) -> int:
    args = PARSER.parse_args(argv)
    if args.memory_steps is not None:
        memory_run(args.memory_steps or None)
        return 0
    if args.profile:
        profile()
        return 0
    env = environment(args.threads)
    seconds, repeats = (0.4, 2) if args.quick else (2.0, 4)
    rows = measure(seconds, repeats)
    memory = peak_memory(20 if args.quick else None, args.threads)
    print_table(rows, memory)
    write_result(args.out, {**env, "quick": args.quick, "seconds_per_repeat": seconds,
                            "repeats": repeats, "results": rows, "numpy_peak_memory": memory})
    return 0


if __name__ == "__main__":
    sys.exit(main())
