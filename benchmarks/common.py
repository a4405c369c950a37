"""The benchmark harness: what every benchmark records and how it times, written once.

- :func:`machine_info`: command, git commit, CPU, cores, threads and the 1-minute load average,
  the head of every result JSON; :func:`write_result` writes that JSON.
- :func:`parse_sets`: ``--set KEY=VALUE`` read and checked exactly as ``lenet5 train --set``.
- :func:`best_rate`: images per second, best of a few timed loops after a warm-up.
- :func:`run_timed`: a fresh process whose output lines are stamped with the seconds since it
  was spawned (interpreter start, imports and data all count); :func:`child_json`: a helper
  process that answers with one JSON line.
- :func:`markdown_table`: the table each benchmark prints.
- :func:`serve_process`: ``lenet5 serve`` on a free local port, started and awaited by the
  same code the web-demo tests use (``tests/serve_support.py``), so there is one copy.

Scripts run from any directory (``python benchmarks/X.py``); Python puts this folder on the
path, so ``from common import ...`` works in each of them.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


def load_average() -> float | None:
    """The 1-minute load average: other processes skew CPU timings, this says how busy it was."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def machine_info(threads: int) -> dict:
    """Where and how a result was measured: the head of every result JSON."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    cpu = platform.processor()
    if Path("/proc/cpuinfo").is_file():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "git_commit": commit,
        "cpu": cpu, "cores": os.cpu_count(), "threads": threads, "platform": platform.platform(),
        "load_average_1min": load_average(),
    }


def write_result(path: str | Path, result: dict) -> Path:
    """Write ``result`` as indented JSON (creating the folder) and say where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as typed, checked ``TrainConfig`` overrides, as ``lenet5 train``
    reads them (``model_args.NAME=VALUE`` goes into the model options); a bad one is refused."""
    from lenet5.commands.train import parse_sets as parse

    return parse(list(items))


def best_rate(fn: Callable[[], object], batch: int, seconds: float, repeats: int) -> float:
    """Images per second: the best of ``repeats`` timed loops of about ``seconds`` each."""
    fn()  # warm-up: the first call pays for allocations and kernel selection
    start = time.perf_counter()
    fn()
    calls = max(1, int(seconds / max(time.perf_counter() - start, 1e-6)))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        rates.append(calls * batch / (time.perf_counter() - start))
    return max(rates)


def child_json(cmd: Sequence[str], **kwargs) -> dict:
    """Run a helper process that prints one JSON object as its last line; return it."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, **kwargs)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_timed(cmd: Sequence[str], **kwargs) -> dict:
    """Run ``cmd`` as a fresh process: every output line (stdout and stderr together) with the
    seconds since just before the spawn at which it arrived, the wall time and the load average
    before it started. A failure raises with the output's tail."""
    load = load_average()
    # Unbuffered, so a line arrives when it is printed, not when a pipe buffer fills.
    kwargs["env"] = {**(kwargs.get("env") or os.environ), "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, **kwargs)
    lines = [(time.perf_counter() - t0, line.rstrip("\n")) for line in proc.stdout]
    returncode = proc.wait()
    wall = time.perf_counter() - t0
    if returncode:
        tail = "\n".join(text for _, text in lines[-30:])
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({returncode}):\n{tail}")
    return {"command": [str(c) for c in cmd], "lines": lines, "process_seconds": wall,
            "load_average_1min_before": load}


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


def serve_process(args: Sequence[str], log: Path, timeout: float = 120.0):
    """``lenet5 serve ARGS`` on a free 127.0.0.1 port as a context manager (``.port``, ``.url``,
    ``.proc``): up once its banner says every worker is ready and /healthz answers."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.serve_support import ServerProcess

    return ServerProcess(list(args), log, timeout=timeout)


def run_rows(run: str | Path) -> list[dict]:
    """The per-epoch rows of a run directory's ``metrics.jsonl`` (none yet: [])."""
    path = Path(run) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def with_earlier_probes(path: str | Path, probes: dict, only: bool) -> dict:
    """``probes`` added to those already in the JSON at ``path`` when only some were run."""
    path = Path(path)
    if only and path.exists():
        return {**json.loads(path.read_text()).get("probes", {}), **probes}
    return probes



@contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """The repository at commit ``rev``, checked out in a temporary git worktree (removed after):
    for ``--before REV`` measurements of the package as it was."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), rev], cwd=REPO,
                       check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO)


def tree_env(rev: str, tree: Path) -> dict:
    """The environment that makes a child import the package at ``tree``, a :func:`worktree`
    of ``rev`` (checked: an editable install could otherwise win over ``PYTHONPATH``)."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    where = child_json([sys.executable, "-c", "import json, lenet5; print(json.dumps(lenet5.__file__))"],
                       env=env)
    if not where.startswith(str(tree)):
        raise SystemExit(f"--before {rev}: the child imported {where}, not the tree at {tree}")
    return env
