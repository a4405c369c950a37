"""``lenet5 serve --workers N``: N processes listening on one port, supervised by the parent.

The real command in a subprocess: every worker listens on the port, each answers, a worker
that dies is replaced, SIGTERM stops them all, and a busy port is a clear error."""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from lenet5.serve import workers
from tests.serve_support import ServerProcess, bundled_checkpoint

linux_only = pytest.mark.skipif(not workers.balanced(), reason="SO_REUSEPORT balancing is Linux's")


def children(pid: int) -> dict[int, str]:
    """Live child processes of ``pid``: {pid: command line}."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out[int(d.name)] = cmd
    return out


def worker_pids(pid: int) -> set[int]:
    return {c for c, cmd in children(pid).items() if "spawn_main" in cmd}


def listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on 127.0.0.1:port (from /proc/net/tcp; state 0A is LISTEN)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1] == f"0100007F:{port:04X}" and f[3] == "0A":
            inodes.add(f[9])
    return inodes


def listens(pid: int, inodes: set[str]) -> bool:
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd).removeprefix("socket:[").rstrip("]") in inodes for fd in fds.iterdir())
    except OSError:
        return False


def wait_for(cond, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.slow
@linux_only
def test_workers_share_the_port_are_replaced_and_stop_together(tmp_path):
    name, ckpt = bundled_checkpoint()
    pixels = {"pixels": np.eye(28)[::-1].tolist(), "preprocess": True}
    with ServerProcess(["--checkpoint", str(ckpt), "--workers", "2"], tmp_path / "serve.log") as server:
        assert "(2 processes)" in server.log_text()
        pids = worker_pids(server.proc.pid)
        assert len(pids) == 2, children(server.proc.pid)
        inodes = listening_inodes(server.port)
        assert len(inodes) == 2 and all(listens(p, inodes) for p in pids)  # a socket each
        # Each new connection goes to one of them; every answer is the same model's.
        answers = [httpx.post(f"{server.url}/api/predict", json=pixels, timeout=30).json()
                   for _ in range(8)]
        assert len({(a["label"], tuple(a["probs"])) for a in answers}) == 1

        killed = pids.pop()
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: len(worker_pids(server.proc.pid) - {killed}) == 2
                 and len(listening_inodes(server.port)) == 2)
        new = worker_pids(server.proc.pid) - pids - {killed}
        assert len(new) == 1 and listens(new.pop(), listening_inodes(server.port))
        assert f"worker {killed} exited" in server.log_text()
        assert httpx.post(f"{server.url}/api/predict", json=pixels, timeout=30).status_code == 200

        all_workers = worker_pids(server.proc.pid)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        assert not any(Path(f"/proc/{p}").exists() and "spawn_main" in
                       Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
                       for p in all_workers)
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", server.port))


@pytest.mark.slow
@linux_only
def test_workers_stop_when_the_parent_is_killed(tmp_path):
    """SIGKILL gives the parent no chance to stop its workers: they stop themselves (the kernel
    tells them, PR_SET_PDEATHSIG) and the port is free for the next start."""
    with ServerProcess(["--checkpoint", str(bundled_checkpoint()[1]), "--workers", "2"],
                       tmp_path / "serve.log") as server:
        pids = worker_pids(server.proc.pid)
        assert len(pids) == 2
        server.proc.kill()
        server.proc.wait(10)
        wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in pids), timeout=30)
        assert not listening_inodes(server.port)
    with socket.socket() as s:  # free again
        s.bind(("127.0.0.1", server.port))


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 2])
def test_a_busy_port_is_a_clear_error_before_any_banner(n):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "lenet5", "serve", "--checkpoint", str(bundled_checkpoint()[1]),
             "--workers", str(n), "--port", str(port)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == (
        f"lenet5: error: cannot listen on 127.0.0.1:{port}: Address already in use")
    assert "http://" not in run.stdout + run.stderr  # no banner with a URL that is not ours
    assert "Traceback" not in run.stderr


def test_worker_app_serves_what_the_parent_was_asked(monkeypatch):
    """The factory uvicorn's own workers call where SO_REUSEPORT does not balance."""
    from lenet5.serve.server import WORKER_ENV, worker_app

    ckpt = bundled_checkpoint()[1]
    monkeypatch.setenv(WORKER_ENV, f'{{"checkpoints": ["{ckpt}"], "models": [], "threads": 1}}')
    try:
        app = worker_app()
    finally:
        gc.unfreeze()  # build_app froze this process's objects, as a server's would be
    assert list(app.state.models) == [ckpt.stem]
