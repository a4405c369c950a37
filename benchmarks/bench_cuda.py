"""The prepared GPU check (issue 14): the CUDA tests, time to 99% on the GPU, and throughput.

For a session lent a GPU machine, in one short call from the repository root (the device tool
copies the working tree; the data must travel with it, so first copy the MNIST files into the
git-ignored ``.data/``: ``mkdir -p .data && cp -r ../shared/data/mnist .data/``, then carry
``.data``)::

    python -m pip install -q -c constraints.txt -e . && \\
    python benchmarks/bench_cuda.py --data-dir .data --json "$OUT/cuda.json"

(``constraints.txt`` pins the CPU build of torch; on a machine whose torch already has CUDA,
skip the install or install without ``-c``.) What it does, each step in a fresh process:

1. ``pytest tests/test_cuda.py``: forward and gradients on the GPU against the CPU, ``lenet5
   train --device cuda`` (with and without bfloat16 autocast) learning and its checkpoint
   loading on the CPU, the bundled model's outputs on both;
2. time to 99%: ``lenet5 train --preset fast --device cuda --engine torch`` for seeds 0-2, the
   clock from just before the process starts (as ``bench_time99.py``), and the training pass
   alone (the data sit in device memory for the whole run: the loop loads each split once);
3. throughput: ``lenet5 train --device cuda --model lenet5-modern --epochs 2`` at batch 256 and
   1,024 on all 60,000 images, the second epoch's images per second.

Without a CUDA device it says so, writes a JSON saying so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import RESULTS, machine_info, markdown_table, write_result

HERE = Path(__file__).resolve().parent


def cuda_tests(data_dir: str | None) -> dict:
    env = {**os.environ, **({"LENET5_DATA_DIR": str(Path(data_dir).resolve())} if data_dir else {})}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(HERE.parent / "tests" / "test_cuda.py")],
                          capture_output=True, text=True, cwd=HERE.parent, env=env)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    return {"returncode": proc.returncode, "summary": tail}


def throughput(data_dir: str | None, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "lenet5", "train", "--device", "cuda", "--engine", "torch",
               "--model", "lenet5-modern", "--epochs", "2", "--batch-size", str(batch),
               "--eval-batch-size", "10000", "--out", f"{tmp}/run", "--no-progress",
               *(["--data-dir", data_dir] if data_dir else [])]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            return {"command": cmd, "error": proc.stderr[-1000:]}
        rows = [json.loads(line) for line in
                Path(f"{tmp}/run/metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"command": cmd, "images_per_s": rows[-1]["images_per_s"],
            "test_error": rows[-1]["test_error"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--json", default=str(RESULTS / "cuda.json"))
    args = p.parse_args(argv)
    import torch

    info = machine_info(threads=torch.get_num_threads())
    if not torch.cuda.is_available():
        print(f"no CUDA device (torch {torch.__version__}, built with CUDA "
              f"{torch.version.cuda}): nothing measured")
        write_result(args.json, {**info, "cuda": False, "torch": torch.__version__})
        return 0
    gpu = torch.cuda.get_device_name(0)
    print(f"{gpu}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    tests = cuda_tests(args.data_dir)
    print(f"CUDA tests: {tests['summary']}", flush=True)

    sys.path.insert(0, str(HERE))
    from bench_time99 import train_fast

    common = ["--data-dir", args.data_dir] if args.data_dir else []
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            runs.append(train_fast(Path(tmp) / f"s{seed}", common,
                                   ["--device", "cuda", "--engine", "torch", "--seed", str(seed)],
                                   0.99))
            print(f"  time to 99%, seed {seed}: done", flush=True)
    rates = {batch: throughput(args.data_dir, batch) for batch in (256, 1024)}

    rows = [(f"lenet5 train --preset fast --device cuda --seed {i}",
             f"{100 * r['test_accuracy']:.2f}",
             f"{r['seconds_to_target']:.2f}" if r["seconds_to_target"] else "not reached",
             f"{r['breakdown']['train']:.2f}", f"{r['breakdown']['start']:.2f}")
            for i, r in enumerate(runs)]
    print(f"\ntime to 99% on {gpu}:")
    markdown_table(["command", "test accuracy %", "seconds from process start",
                    "training pass (s)", "start-up (s)"], rows)
    for batch, r in rates.items():
        print(f"throughput, lenet5-modern, batch {batch}: "
              f"{r.get('images_per_s', float('nan')):,.0f} training images/s")
    write_result(args.json, {**info, "cuda": True, "gpu": gpu, "torch": torch.__version__,
                             "tests": tests, "time_to_99": runs,
                             "throughput": {str(b): r for b, r in rates.items()}})
    return 0 if tests["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
