"""``lenet5 serve``: load the models, listen, say where, serve until stopped.

``lenet5 serve`` (:mod:`lenet5.commands.serve`) only parses its flags and calls :func:`serve`.
The listening socket is bound before anything is printed, so a port that is taken is a one-line
error and never follows a banner with the URL. With ``--workers N`` the processes are started
and supervised by :mod:`.workers` (Linux), elsewhere by uvicorn's own supervisor.
"""

from __future__ import annotations

import gc
import json
import os
from dataclasses import asdict
from pathlib import Path

from . import workers as pool
from .server import WORKER_ENV, bind, build_app, uvicorn_options
from .timeouts import Timeouts

MAX_THREADS = 1024  # as lenet5 train's --threads


def max_workers() -> int:
    """The most processes ``--workers`` may ask for: 4 per core this process may use (one per
    core serves the most requests per second, docs/results.md; more only costs memory)."""
    from ..training.threads import usable_cores

    return 4 * usable_cores()


def serve(checkpoints: list[str], names: list[str], *, host: str, port: int, threads: int = 1,
          workers: int = 1, log_level: str = "info", timeouts: Timeouts | None = None) -> int:
    """Load the models, listen, print where, and serve until stopped; returns the exit status."""
    import uvicorn

    most = max_workers()
    if not 1 <= workers <= most:
        raise ValueError(f"--workers must be from 1 to {most} (4 per core here: each "
                         f"is a process with its own PyTorch, about 300 MB), got {workers}")
    if not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"--threads must be from 1 to {MAX_THREADS}, got {threads}")
    timeouts = timeouts or Timeouts()
    # Absolute, as every process is to read the same files (a bundled name stays a name).
    checkpoints = [str(Path(c).resolve()) if Path(c).exists() else c for c in checkpoints]
    url = f"http://{host}:{port}/"
    if workers == 1:
        app = build_app(checkpoints, names, threads)  # a bad checkpoint fails here, once
        sock = bind(host, port)
        print(f"lenet5 serve: {', '.join(app.state.models)} at {url}", flush=True)
        config = uvicorn.Config(app, **uvicorn_options(timeouts, log_level))
        uvicorn.Server(config).run(sockets=[sock])
        return 0
    # Several processes, each loading the models itself (a LeNet-5 is a quarter of a megabyte);
    # loaded here once first, so that a bad checkpoint is one error, not one per worker.
    models = list(build_app(checkpoints, names, threads).state.models)
    gc.unfreeze()
    spec = {"checkpoints": checkpoints, "models": names, "threads": threads,
            "timeouts": asdict(timeouts)}
    banner = f"lenet5 serve: {', '.join(models)} at {url} ({workers} processes)"
    if pool.balanced():
        return pool.run(spec, host, port, workers, log_level, banner)
    sock = bind(host, port)  # elsewhere: uvicorn's workers, one shared socket
    os.environ[WORKER_ENV] = json.dumps(spec)
    print(banner, flush=True)
    config = uvicorn.Config("lenet5.serve.server:worker_app", factory=True, workers=workers,
                            **uvicorn_options(timeouts, log_level))
    from uvicorn.supervisors import Multiprocess

    Multiprocess(config, sockets=[sock]).run()
    return 0
