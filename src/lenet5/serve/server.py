"""What a server process runs: its models, the app with them loaded, uvicorn's settings.

Shared by the single process and every ``--workers`` process (:mod:`.launch` starts them):
models load through the front door (:func:`lenet5.inference.load.load`), every connection runs
under the deadlines of :mod:`.timeouts`, and :func:`bind` names the address in its error.
"""

from __future__ import annotations

import gc
import json
import os
import socket
from functools import partial

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
