"""Load test of ``lenet5 serve``: many concurrent clients, valid and invalid requests mixed.

Starts the real server (``python -m lenet5 serve --workers N``: uvicorn, torch 1 thread per
process) on a free 127.0.0.1 port (``common.serve_process``: the web-demo tests' own start-up), once for each ``--workers`` count (default 1 and 2, side by
side in one run); then ``--clients`` concurrent clients (one asyncio task and keep-alive
connection each, in this process, sending requests encoded beforehand) send ``--requests``
requests of each of two mixes, one after the other:

- ``api``: 50% a 112x112 PNG of a handwritten MNIST test digit (dark on white, as the page
  draws it), multipart upload; 25% JSON ``{"pixels": 28x28}`` of an MNIST test digit;
  25% invalid;
- ``page``: the same, but the uploads ask for ``?features=1&encoding=uint8`` as the page does
  (the answer then carries the 28x28 input and the 6+16 C1/C3 maps: 7,088 numbers, one byte
  each in base64, ~10 kB of JSON).

Invalid requests, each expecting its own 4xx: not an image (422), truncated PNG (422), wrong
shape (422), NaN (422), missing field (422), unsupported content type (415), and 1 request in
100 a body over the 2 MB limit (413).

For each mix it reports throughput and client-side latency percentiles (p50/p95/p99, per kind
and overall), the server's own ``latency_ms``, CPU time per request of server and client,
every status seen, and what must be zero: 5xx answers, dropped connections (refused, reset or
cut short), answers with an unexpected status, and error answers without a JSON message. The
target is p99 under 50 ms on the project's 2-core machine, client and server sharing it.

    python benchmarks/bench_serve.py [--requests 2000] [--clients 16] [--workers 1 2]
                                     [--checkpoint CKPT] [--out benchmarks/results/serve.json]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import json
import os
import platform
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from common import machine_info, serve_process, write_result
from lenet5 import __version__
from lenet5.data.datasets import load_split

REPO = Path(__file__).resolve().parents[1]
LIMIT = 2 * 1024 * 1024
TARGET_P99_MS = 50.0
LATENCY = re.compile(rb'"latency_ms":\s*([0-9.]+)')


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def canvas_png(x28: np.ndarray) -> bytes:
    """An MNIST digit as the page sends its canvas: a 112x112 PNG, black ink on white."""
    big = Image.fromarray(np.uint8(255 - x28 * 255)).resize((112, 112), Image.Resampling.BICUBIC)
    return png(np.asarray(big))


def encoded(params: dict | None = None, **kw) -> bytes:
    """One complete HTTP/1.1 request to /api/predict, as bytes: httpx encodes the body
    (json=, files= or content=), so the clients spend no time encoding during the run."""
    req = httpx.Request("POST", "http://127.0.0.1/api/predict", params=params, **kw)
    body = req.read()
    head = (f"POST {req.url.raw_path.decode()} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: {req.headers['content-type']}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


MIXES = ("api", "page")


def build_requests(n: int, data_dir: Path, seed: int, mix: str) -> list[dict]:
    """``n`` requests of ``mix`` (encoded body + kind + expected status), drawn with ``seed``."""
    images, _ = load_split("mnist", "test", data_dir, download=False)
    digits = images[:200].astype(np.float32) / 255.0
    pngs = [canvas_png(x) for x in digits]
    params = {"features": "1", "encoding": "uint8"} if mix == "page" else None
    upload_kind = "png+features" if mix == "page" else "png"
    uploads = [encoded(params, files={"image": ("digit.png", p, "image/png")}) for p in pngs]
    pixels = [encoded(json={"pixels": np.round(x, 3).tolist()}) for x in digits]
    good = np.zeros((28, 28))
    good[8:20, 13:15] = 1.0
    invalid = [
        ("not-an-image", 422, encoded(files={"image": ("a.png", b"this is text, not a picture", "image/png")})),
        ("truncated-png", 422, encoded(files={"image": ("a.png", pngs[0][: len(pngs[0]) // 2], "image/png")})),
        ("wrong-shape", 422, encoded(json={"pixels": good[:27].tolist()})),
        ("nan", 422, encoded(content=json.dumps({"pixels": np.full((28, 28), np.nan).tolist()}).encode(),
                             headers={"content-type": "application/json"})),
        ("missing-field", 422, encoded(json={"pixel": good.tolist()})),
        ("bad-content-type", 415, encoded(content=b"0 1 0", headers={"content-type": "text/plain"})),
    ]
    oversize = encoded(content=b"\0" * (LIMIT + 1), headers={"content-type": "image/png"})
    rng = random.Random(seed)
    reqs = []
    for i in range(n):
        u = rng.random()
        if i % 100 == 99:
            reqs.append({"kind": "over-2MB", "expect": 413, "raw": oversize})
        elif u < 0.5:
            reqs.append({"kind": upload_kind, "expect": 200,
                         "raw": uploads[rng.randrange(len(uploads))]})
        elif u < 0.75:
            reqs.append({"kind": "json-pixels", "expect": 200, "raw": pixels[rng.randrange(len(pixels))]})
        else:
            kind, status, raw = invalid[rng.randrange(len(invalid))]
            reqs.append({"kind": kind, "expect": status, "raw": raw})
    return reqs


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process and its live child processes have used (Linux), or None."""
    stats = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(d.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid, ticks
    if pid not in stats:
        return None
    tree, todo = set(), [pid]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo += [c for c, (ppid, _) in stats.items() if ppid == p and c not in tree]
    return sum(stats[p][1] for p in tree) / os.sysconf("SC_CLK_TCK")


def server_stack() -> str:
    """What uvicorn runs on here: its C parser and libuv loop if installed, else pure Python."""
    found = {m: importlib.util.find_spec(m) is not None for m in ("httptools", "uvloop")}
    return (("httptools" if found["httptools"] else "h11") + ", "
            + ("uvloop" if found["uvloop"] else "asyncio"))


class Connection:
    """A keep-alive HTTP/1.1 connection that sends ready-made requests and reads the answers
    (uvicorn always sends Content-Length). Lighter than an HTTP library, so the client takes as
    little as possible of the CPU the server shares with it."""

    def __init__(self, port: int):
        self.port, self.reader, self.writer = port, None, None

    async def request(self, raw: bytes) -> tuple[int, dict, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(raw)
        await self.writer.drain()
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = dict((k.strip().lower(), v.strip()) for k, v in (h.split(":", 1) for h in head[1:] if h))
        body = await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()
            self.writer = None


async def run_load(port: int, reqs: list[dict], clients: int) -> tuple[list[dict], float]:
    """Send every request; ``clients`` tasks, each with its own keep-alive connection."""
    results: list[dict] = []
    queue: asyncio.Queue = asyncio.Queue()
    for r in reqs:
        queue.put_nowait(r)

    async def client() -> None:
        conn = Connection(port)
        while not queue.empty():
            r = queue.get_nowait()
            t0 = time.perf_counter()
            status, server_ms, error = None, None, None
            try:
                status, headers, body = await conn.request(r["raw"])
                if status == 200:  # an answer: read its latency without parsing 40 kB of maps
                    server_ms = float(LATENCY.search(body).group(1))
                elif not json.loads(body).get("error"):  # errors are JSON saying what was wrong
                    error = f"{status} without an error message"
            except (OSError, EOFError, asyncio.IncompleteReadError, ValueError, AttributeError) as e:
                error = f"{type(e).__name__}: {e}"  # refused, reset, cut short, garbled: dropped
                await conn.close()
            ms = (time.perf_counter() - t0) * 1e3
            results.append({"kind": r["kind"], "expect": r["expect"], "status": status, "ms": ms,
                            "server_ms": server_ms, "error": error})
        await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return results, time.perf_counter() - t0


def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


def summarize(results: list[dict], seconds: float, clients: int) -> dict:
    statuses = Counter(str(r["status"]) for r in results)
    by_kind = {}
    for kind in sorted({r["kind"] for r in results}):
        rows = [r for r in results if r["kind"] == kind and r["status"] is not None]
        if rows:
            by_kind[kind] = {**percentiles([r["ms"] for r in rows]), "expect": rows[0]["expect"]}
    answered = [r["ms"] for r in results if r["status"] is not None]
    server = [r["server_ms"] for r in results if r["server_ms"] is not None]
    return {
        "requests": len(results), "clients": clients, "seconds": seconds,
        "throughput_rps": len(results) / seconds,
        "latency": percentiles(answered), "server_latency": percentiles(server) if server else None,
        "by_kind": by_kind, "statuses": dict(statuses),
        "valid": sum(r["expect"] == 200 for r in results),
        "invalid": sum(r["expect"] != 200 for r in results),
        "count_5xx": sum(r["status"] is not None and r["status"] >= 500 for r in results),
        "dropped_connections": sum(r["status"] is None for r in results),
        "unexpected_status": sum(r["status"] is not None and r["status"] != r["expect"] for r in results),
        "answers_without_error_message": sum(r["status"] is not None and r["error"] is not None
                                             for r in results),
        "errors": sorted({r["error"] for r in results if r["error"]})[:10],
        "target_p99_ms": TARGET_P99_MS,
    }


def print_table(s: dict) -> None:
    print(f"{s['requests']:,} requests from {s['clients']} clients in {s['seconds']:.2f} s: "
          f"{s['throughput_rps']:,.0f} requests/s ({s['valid']:,} valid, {s['invalid']:,} invalid)")
    print(f"{'kind':<22}{'expect':>7}{'n':>6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    rows = [*s["by_kind"].items(), ("all", {**s["latency"], "expect": "-"})]
    for kind, k in rows:
        print(f"{kind:<22}{k['expect']:>7}{k['n']:>6}{k['p50_ms']:>9.1f}{k['p95_ms']:>9.1f}"
              f"{k['p99_ms']:>9.1f}{k['max_ms']:>9.1f}")
    if s["server_latency"]:
        v = s["server_latency"]
        print(f"server-side latency_ms of valid requests: p50 {v['p50_ms']:.1f}, p95 {v['p95_ms']:.1f}, "
              f"p99 {v['p99_ms']:.1f}")
    print(f"statuses {s['statuses']} | 5xx {s['count_5xx']} | dropped connections "
          f"{s['dropped_connections']} | unexpected status {s['unexpected_status']}")
    if s.get("server_cpu_ms_per_request") is not None:
        print(f"CPU per request: server {s['server_cpu_ms_per_request']:.2f} ms, "
              f"client {s['client_cpu_ms_per_request']:.2f} ms")
    ok = s["latency"]["p99_ms"] < TARGET_P99_MS
    print(f"p99 {s['latency']['p99_ms']:.1f} ms: {'meets' if ok else 'MISSES'} the "
          f"{TARGET_P99_MS:.0f} ms target")
    for e in s["errors"]:
        print("  error:", e)


def run_server(args, workers: int, mixes: dict) -> dict:
    """Start ``lenet5 serve --workers N``, run every mix against it, stop it: the run's summary."""
    log = Path(args.out).with_suffix(f".server{workers}.log.tmp")
    log.parent.mkdir(parents=True, exist_ok=True)
    serve_args = ["--workers", str(workers)] if workers != 1 else []  # (older: 1 process only)
    serve_args += ["--checkpoint", args.checkpoint] if args.checkpoint else []
    summaries = {}
    with serve_process(serve_args, log) as server:
        port, proc = server.port, server.proc
        model = httpx.get(f"http://127.0.0.1:{port}/api/models").json()[0]
        for mix, reqs in mixes.items():
            asyncio.run(run_load(port, reqs[: args.warmup], args.clients))
            load_before = os.getloadavg()[0]
            server_cpu, client_cpu = cpu_seconds(proc.pid), time.process_time()
            results, seconds = asyncio.run(run_load(port, reqs[args.warmup :], args.clients))
            server_cpu = cpu_seconds(proc.pid) - server_cpu if server_cpu is not None else None
            client_cpu = time.process_time() - client_cpu
            s = summaries[mix] = summarize(results, seconds, args.clients)
            # CPU time per request says what each side costs, whatever else the machine is doing.
            s["server_cpu_ms_per_request"] = server_cpu / len(results) * 1e3 if server_cpu else None
            s["client_cpu_ms_per_request"] = client_cpu / len(results) * 1e3
            s["load_average_1min_before"] = load_before
            s["load_average_1min_after"] = os.getloadavg()[0]
            print(f"\n== {workers} server process{'es' if workers > 1 else ''}, mix '{mix}' ==")
            print_table(s)
        alive = httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    log.unlink(missing_ok=True)
    return {"workers": workers, "model": model, "server_alive_after": alive, "mixes": summaries}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="server processes (lenet5 serve --workers); each count is a run")
    parser.add_argument("--checkpoint", help="run directory or .safetensors (default: every bundled "
                                             "model, requests to the first)")
    parser.add_argument("--data-dir", default=os.environ.get("LENET5_DATA_DIR") or str(REPO.parent / "shared" / "data"))
    parser.add_argument("--warmup", type=int, default=100, help="requests sent first, not counted")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/serve.json", help="JSON to write")
    args = parser.parse_args(argv)

    mixes = {m: build_requests(args.warmup + args.requests, Path(args.data_dir), args.seed, m)
             for m in MIXES}
    info = machine_info(threads=1)
    runs = [run_server(args, w, mixes) for w in args.workers]
    print(f"\n{'processes':>9} {'mix':>5} {'requests/s':>11} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'server CPU ms/req':>18} {'5xx':>4} {'dropped':>8}")
    for run in runs:
        for mix, s in run["mixes"].items():
            print(f"{run['workers']:>9} {mix:>5} {s['throughput_rps']:>11.0f} {s['latency']['p50_ms']:>7.1f} "
                  f"{s['latency']['p99_ms']:>7.1f} {s['server_cpu_ms_per_request'] or float('nan'):>18.2f} "
                  f"{s['count_5xx']:>4} {s['dropped_connections']:>8}")
    doc = {"benchmark": "serve", "runs": runs,
           "environment": {**info, "server": f"lenet5 serve --workers N: uvicorn ({server_stack()}), "
                                              "torch 1 thread per process",
                           "client": "asyncio keep-alive connections, same machine",
                           "versions": {"lenet5": __version__, "python": platform.python_version()}}}
    write_result(args.out, doc)
    bad = any(s["count_5xx"] or s["dropped_connections"] or s["unexpected_status"]
              or s["answers_without_error_message"] for run in runs for s in run["mixes"].values())
    return 1 if bad or not all(run["server_alive_after"] for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
