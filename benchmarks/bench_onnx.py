"""Inference throughput: onnxruntime vs PyTorch, side by side, on CPU.

For each model (the 1998 RBF network and the modern one with batch-norm) this builds a
checkpoint, exports it with :func:`lenet5.inference.export.export_onnx` (exactly what ``lenet5 export``
writes) and times the same forward pass in PyTorch (eval mode, no_grad) and in onnxruntime at
batch 1 (latency-bound, one request at a time) and batch 1024 (throughput-bound). Weights are
freshly initialised: the cost of a forward pass does not depend on their values. Each figure is
the best of a few repeats, after a warm-up, so that one-off costs and noise from other
processes count as little as possible.

    python benchmarks/bench_onnx.py [--quick] [--threads N] [--out benchmarks/results/onnx.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from common import best_rate, machine_info, write_result
from lenet5 import __version__
from lenet5.checkpoint import save_checkpoint
from lenet5.data.transforms import Normalization
from lenet5.inference.export import export_onnx
from lenet5.models import create_model, get_entry, make_config

MODELS = {  # label -> (registry name, model options)
    "lenet5-1998": ("lenet5-1998", {}),
    "modern-batchnorm": ("lenet5-modern", {"activation": "relu", "pool": "max", "batchnorm": True}),
}
BATCHES = (1, 1024)


def build_onnx(label: str, folder: Path) -> tuple[torch.nn.Module, Path]:
    """(PyTorch model in eval mode, its exported ONNX file)."""
    name, options = MODELS[label]
    torch.manual_seed(0)
    config = make_config(name, options).to_dict()
    model = create_model(name, **config).eval()
    entry = get_entry(name)
    meta = {"model": name, "model_config": config, "head": entry.head, "dataset": "mnist",
            "normalization": Normalization.make(entry.normalization).to_dict(), "epoch": 0}
    ckpt = save_checkpoint(folder / label, model.state_dict(), meta)
    return model, export_onnx(ckpt, folder / f"{label}.onnx")


def bench_model(label: str, folder: Path, threads: int, seconds: float, repeats: int) -> list:
    import onnxruntime as ort

    model, onnx_path = build_onnx(label, folder)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    rows = []
    for batch in BATCHES:
        x = torch.randn(batch, 1, 32, 32, generator=torch.Generator().manual_seed(batch))
        feed = {"image": x.numpy()}

        def run_torch(x=x):
            with torch.no_grad():
                model(x)

        def run_onnx(feed=feed):
            session.run(None, feed)

        torch_rate = best_rate(run_torch, batch, seconds, repeats)
        onnx_rate = best_rate(run_onnx, batch, seconds, repeats)
        rows.append({"model": label, "batch": batch, "torch_images_per_s": torch_rate,
                     "onnxruntime_images_per_s": onnx_rate, "speedup": onnx_rate / torch_rate})
    return rows


def environment(threads: int) -> dict:
    import onnx
    import onnxruntime

    return {
        **machine_info(threads),
        "versions": {"lenet5": __version__, "python": platform.python_version(),
                     "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                     "onnx": onnx.__version__, "numpy": np.__version__},
    }


def print_table(rows: list[dict]) -> None:
    print(f"{'model':<18}{'batch':>6}{'torch img/s':>14}{'onnxruntime img/s':>20}{'speedup':>9}")
    for r in rows:
        print(f"{r['model']:<18}{r['batch']:>6}{r['torch_images_per_s']:>14,.0f}"
              f"{r['onnxruntime_images_per_s']:>20,.0f}{r['speedup']:>8.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short timings (under a minute)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for both PyTorch and onnxruntime (default: all cores)")
    parser.add_argument("--out", default="benchmarks/results/onnx.json", help="JSON to write")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    env = environment(args.threads)  # the commit and load as the run starts
    seconds, repeats = (0.5, 3) if args.quick else (2.0, 5)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label in MODELS:
            rows += bench_model(label, Path(tmp), args.threads, seconds, repeats)
    print_table(rows)
    write_result(args.out, {**env, "quick": args.quick, "seconds_per_repeat": seconds,
                            "repeats": repeats, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
