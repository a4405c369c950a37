"""``lenet5 serve --workers N``: N server processes on one port, each connection to one of them.

One process runs one thread of Python at a time (the GIL), so a single server uses about one
core however many threads it has; on the 2-core machine it saturated at about one core while
the other sat partly idle. N processes get N cores.

On Linux each process listens on its own socket bound with ``SO_REUSEPORT`` and the kernel
hands every new connection to one of them by a hash of its addresses, so keep-alive clients
that connect together are spread evenly on average. (uvicorn's own ``--workers`` shares one
socket, and whichever process wakes first accepts every connection waiting: 16 clients that
connect at once often all landed on one process, and p99 latency under load swung between
45 and 93 ms from run to run; docs/results.md.) Elsewhere it falls back to uvicorn's workers.

Each process loads the models itself once, before it listens, and says so to the parent, which
prints the address when all are ready. The parent supervises: a worker that dies is started
again; Ctrl-C or SIGTERM stops them all. A parent that is killed outright (SIGKILL, the OOM
killer) cannot stop them, so each worker asks the kernel for a SIGTERM when its parent dies
(``prctl(PR_SET_PDEATHSIG)``): no worker is left serving the port.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import queue
import signal
import socket
import sys
import time

RESTART_PAUSE_S = 1.0  # between restarts of a worker that keeps dying
READY_TIMEOUT_S = 300.0


def balanced() -> bool:
    """Whether the kernel spreads connections over SO_REUSEPORT sockets (Linux does)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port) that other workers may bind too."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def check_port_free(host: str, port: int) -> None:
    """Fail early, with the usual error, if something that is not us listens on the port:
    a plain bind (no SO_REUSEPORT) conflicts with any socket already bound there."""
    from .server import bind

    bind(host, port).close()


def _die_with_parent(parent: int) -> None:
    """Have the kernel send this process SIGTERM when ``parent`` dies (Linux)."""
    pr_set_pdeathsig = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc/musl
        pass
    if os.getppid() != parent:  # it died before we asked
        os._exit(0)


def _worker(spec: dict, host: str, port: int, log_level: str, ready, parent: int) -> None:
    """One server process: load the models, listen, tell the parent, serve until stopped."""
    import uvicorn

    from .server import build_app, uvicorn_options
    from .timeouts import Timeouts

    _die_with_parent(parent)
    app = build_app(spec["checkpoints"], spec["models"], spec["threads"])
    sock = listen_socket(host, port)
    ready.put(os.getpid())
    config = uvicorn.Config(app, **uvicorn_options(Timeouts(**spec["timeouts"]), log_level))
    uvicorn.Server(config).run(sockets=[sock])


def run(spec: dict, host: str, port: int, workers: int, log_level: str, banner: str) -> int:
    """Start ``workers`` processes serving ``spec`` (checkpoints, bundled model names, torch
    threads and :class:`~.timeouts.Timeouts` fields) and supervise them until Ctrl-C or
    SIGTERM; returns the exit status."""
    check_port_free(host, port)
    ctx = mp.get_context("spawn")  # a fresh interpreter each: no torch state copied by fork
    ready = ctx.Queue()
    stopping = False

    def start() -> mp.Process:
        p = ctx.Process(target=_worker, args=(spec, host, port, log_level, ready, os.getpid()),
                        name="lenet5-serve-worker")
        p.start()
        return p

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    procs = []
    while len(procs) < workers and not stopping:  # Ctrl-C or SIGTERM also stops the starting
        procs.append(start())
    try:
        deadline, up = time.monotonic() + READY_TIMEOUT_S, 0
        while up < workers and not stopping:
            if any(p.exitcode is not None for p in procs):
                print("lenet5 serve: a worker exited while starting; see its error above",
                      file=sys.stderr, flush=True)
                return 1
            if time.monotonic() > deadline:
                print("lenet5 serve: workers not ready in time", file=sys.stderr, flush=True)
                return 1
            try:
                ready.get(timeout=0.2)
                up += 1
            except queue.Empty:
                pass
        if not stopping:
            print(banner, flush=True)
        while not stopping:
            time.sleep(0.2)
            for i, p in enumerate(procs):
                if p.exitcode is not None and not stopping:
                    print(f"lenet5 serve: worker {p.pid} exited ({p.exitcode}); starting another",
                          file=sys.stderr, flush=True)
                    time.sleep(RESTART_PAUSE_S)
                    procs[i] = start()
        return 0
    finally:
        for p in procs:
            if p.exitcode is None:
                p.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        for p in procs:
            p.join(10)
            if p.exitcode is None:
                p.kill()
                p.join()
        for s, handler in old.items():
            signal.signal(s, handler)
