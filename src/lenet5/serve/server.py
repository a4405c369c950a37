"""Running the demo: which models to serve, the app with them loaded, and uvicorn around it.

``lenet5 serve`` (:mod:`lenet5.commands.serve`) only parses its flags and calls :func:`serve`.
The listening socket is bound before anything is printed, so a port that is taken is a one-line
error and never follows a banner with the URL. Every connection runs under the deadlines of
:mod:`.timeouts`.
"""

from __future__ import annotations

import gc
import json
import os
import socket
from dataclasses import asdict
from functools import partial
from pathlib import Path

from .timeouts import DeadlineProtocol, Timeouts

# What a uvicorn-workers process serves (the fallback where SO_REUSEPORT does not balance):
# set by the parent, read by worker_app in each process.
WORKER_ENV = "LENET5_SERVE_WORKER"


def load_predictors(checkpoints: list[str], names: list[str]) -> list:
    """Checkpoints first, then bundled models by name, each through the one front door
    (:func:`lenet5.inference.load.load`, which checks it); neither given: every bundled model,
    the default one (the one ``lenet5 models`` marks) first, so it is what the page shows."""
    from ..inference.predict import Predictor

    predictors = [Predictor.load(source) for source in [*checkpoints, *names]]
    if not predictors:
        from ..weights import bundled_models, default_name

        models = bundled_models()
        if not models:
            raise ValueError("no bundled models found; pass --checkpoint CKPT")
        first = default_name(models)
        order = [first] + [m["name"] for m in models if m["name"] != first]
        predictors = [Predictor.load(n) for n in order]
    return predictors


def build_app(checkpoints: list[str], names: list[str], threads: int):
    """The app with its models loaded (once, before the first request)."""
    import torch

    from .app import create_app

    torch.set_num_threads(threads)
    app = create_app(load_predictors(checkpoints, names))
    # Everything loaded so far lives as long as the server: keep it out of the garbage
    # collector's scans, which otherwise stall requests (p99 latency halves under load).
    gc.collect()
    gc.freeze()
    return app


def worker_app():
    """uvicorn's app factory in each of its ``--workers`` processes: what the parent serves."""
    spec = json.loads(os.environ[WORKER_ENV])
    return build_app(spec["checkpoints"], spec["models"], spec["threads"])


def uvicorn_options(timeouts: Timeouts, log_level: str) -> dict:
    """uvicorn settings shared by every way of running: our connection deadlines, its own
    keep-alive timer set to the same idle time."""
    return {"http": partial(DeadlineProtocol, timeouts=timeouts), "log_level": log_level,
            "timeout_keep_alive": timeouts.idle, "timeout_graceful_shutdown": 5}


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), or an OSError that names them."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # (not SO_REUSEPORT)
        sock.bind((host, port))
        sock.listen(2048)
    except (OSError, OverflowError) as e:  # taken, not ours, no such address, port > 65535
        sock.close()
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise OSError(f"cannot listen on {host}:{port}: {why}") from None
    return sock


def serve(checkpoints: list[str], names: list[str], *, host: str, port: int, threads: int = 1,
          workers: int = 1, log_level: str = "info", timeouts: Timeouts | None = None) -> int:
    """Load the models, listen, print where, and serve until stopped; returns the exit status."""
    import uvicorn

    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    timeouts = timeouts or Timeouts()
    checkpoints = [str(Path(c).resolve()) for c in checkpoints]
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
    from . import workers as pool

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
