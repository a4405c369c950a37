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
   then the same with ``--cuda-graph``; then two passes of each, the first paying the
   process's one-time GPU costs, the second the steady state;
3. throughput: ``lenet5 train --device cuda --model lenet5-modern --epochs 2`` at batch 256 and
   1,024 on all 60,000 images, the second epoch's images per second;
4. ``cuda_speedrun.py``: the same fast recipe as one loop of device work alone, eagerly and
   replayed as a CUDA graph (and in bfloat16), seeds 0-2 on the test set; larger batches on a
   validation split only (the first 50,000 training images, scored on the last 10,000).

Each step's failure is recorded and the next still runs; the JSON is rewritten after each.

Without a CUDA device it says so, writes a JSON saying so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

from common import RESULTS, machine_info, markdown_table, write_result

HERE = Path(__file__).resolve().parent


def cuda_tests(data_dir: str | None, log: Path) -> dict:
    """``pytest tests/test_cuda.py`` in a fresh process; its whole output goes to ``log``."""
    env = {**os.environ, **({"LENET5_DATA_DIR": str(Path(data_dir).resolve())} if data_dir else {})}
    # In this process, one GPU: without pyproject's "-n 2" (pytest-xdist may be missing there).
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-o", "addopts=-ra --strict-markers",
                           str(HERE.parent / "tests" / "test_cuda.py")],
                          capture_output=True, text=True, cwd=HERE.parent, env=env)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + proc.stderr)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    return {"returncode": proc.returncode, "summary": tail, "log": str(log)}


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
    p.add_argument("--skip", default="", help="steps to leave out, comma-separated: tests, "
                   "time_to_99, time_to_99_graph, passes, throughput, speedrun")
    args = p.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    import torch

    info = machine_info(threads=torch.get_num_threads())
    if not torch.cuda.is_available():
        print(f"no CUDA device (torch {torch.__version__}, built with CUDA "
              f"{torch.version.cuda}): nothing measured")
        write_result(args.json, {**info, "cuda": False, "torch": torch.__version__})
        return 0
    gpu = torch.cuda.get_device_name(0)
    print(f"{gpu}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    result = {**info, "cuda": True, "gpu": gpu, "torch": torch.__version__}

    def step(name, fn):
        try:
            result[name] = fn()
        except Exception as e:  # noqa: BLE001 - a failing step must not lose the others
            result[name] = {"error": f"{type(e).__name__}: {e}",
                            "traceback": traceback.format_exc()[-3000:]}
            print(f"{name} failed: {result[name]['traceback']}", flush=True)
        write_result(args.json, result)

    if "tests" not in skip:
        step("tests", lambda: cuda_tests(args.data_dir, Path(args.json).with_suffix(".tests.log")))
        print(f"CUDA tests: {result['tests'].get('summary')}", flush=True)

    sys.path.insert(0, str(HERE))
    from bench_time99 import train_fast

    common = ["--data-dir", args.data_dir] if args.data_dir else []

    def time99(extra):
        runs = []
        with tempfile.TemporaryDirectory() as tmp:
            for seed in range(args.seeds):
                runs.append(train_fast(Path(tmp) / f"s{seed}", common,
                                       ["--device", "cuda", "--engine", "torch",
                                        "--seed", str(seed), *extra], 0.99))
                print(f"  time to 99% {' '.join(extra)}, seed {seed}: "
                      f"{runs[-1]['seconds_to_target']}", flush=True)
        return runs

    for name, extra in (("time_to_99", []), ("time_to_99_graph", ["--cuda-graph"])):
        if name not in skip:
            step(name, lambda extra=extra: time99(extra))
    def passes(extra):
        """Two passes of the fast recipe: the first pays the process's one-time GPU costs
        (kernel loading, cuDNN's choices, the capture), the second is the steady state."""
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "lenet5", "train", "--preset", "fast", "--device",
                   "cuda", "--engine", "torch", "--epochs", "2", "--no-progress", "--out",
                   f"{tmp}/run", *common, *extra]
            subprocess.run(cmd, check=True, capture_output=True)
            rows = [json.loads(line) for line in Path(f"{tmp}/run/metrics.jsonl").read_text()
                    .splitlines() if line.strip()]
        return {"command": cmd, "pass_seconds": [r["epoch_seconds"] for r in rows],
                "test_accuracy": [1 - r["test_error"] for r in rows]}

    if "passes" not in skip:
        step("passes", lambda: {name: [passes(extra) for _ in range(2)]
                                for name, extra in (("eager", []), ("graph", ["--cuda-graph"]))})
    if "throughput" not in skip:
        step("throughput", lambda: {str(b): throughput(args.data_dir, b) for b in (256, 1024)})

    def speedrun():
        import cuda_speedrun

        rows = []
        cuda_speedrun.main([*common, "--json", str(Path(args.json).with_suffix(".speedrun.json"))],
                           rows)
        return rows

    if "speedrun" not in skip:
        step("speedrun", speedrun)

    print(f"\n{gpu}, torch {torch.__version__}: CUDA tests "
          f"{result.get('tests', {}).get('summary', 'skipped')}")
    rows = [(f"lenet5 train --preset fast --device cuda{flag} --seed {i}",
             f"{100 * r['test_accuracy']:.2f}",
             f"{r['seconds_to_target']:.2f}" if r["seconds_to_target"] else "not reached",
             f"{r['breakdown']['train']:.2f}", f"{r['breakdown']['start']:.2f}")
            for name, flag in (("time_to_99", ""), ("time_to_99_graph", " --cuda-graph"))
            if isinstance(result.get(name), list) for i, r in enumerate(result[name])]
    markdown_table(["command", "test accuracy %", "seconds from process start",
                    "training pass (s)", "start-up (s)"], rows)
    for name, runs in (result["passes"].items() if "error" not in result.get("passes", {"error": 1})
                       else []):
        print(f"two passes, {name}: " + "; ".join(
            " then ".join(f"{t:.3f} s" for t in r["pass_seconds"]) for r in runs))
    rates = result.get("throughput", {})
    for batch, r in (rates if "error" not in rates else {}).items():
        print(f"throughput, lenet5-modern, batch {batch}: "
              f"{r.get('images_per_s', float('nan')):,.0f} training images/s")
    speed = result["speedrun"] if isinstance(result.get("speedrun"), list) else []
    markdown_table(["resident loop (cuda_speedrun.py)", "split", "seed", "accuracy %",
                    "s to 99%", "train s (last pass)", "capture s"],
                   [(r["label"], r["split"], r.get("seed"),
                     f"{100 * r['accuracy']:.2f}" if "accuracy" in r else r.get("error", "")[:60],
                     f"{r['seconds_to_99']:.3f}" if r.get("seconds_to_99") else "-",
                     f"{r['evals'][-1]['train_s']:.3f}" if "evals" in r else "-",
                     f"{r.get('capture_s', 0):.2f}") for r in speed])
    return 0 if result.get("tests", {}).get("returncode", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
