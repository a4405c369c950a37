"""``lenet5 serve``: the draw-a-digit page and prediction API, run by uvicorn."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

# What a --workers process serves: set by the parent, read by worker_app in each process.
WORKER_ENV = "LENET5_SERVE_WORKER"


def register(sub) -> None:
    p = sub.add_parser("serve", help="web demo: draw a digit, watch LeNet-5 read it (and a JSON API)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="CKPT",
                   help="run directory or .safetensors file to serve (repeatable)")
    p.add_argument("--model", action="append", default=[], metavar="NAME",
                   help="bundled model to serve (repeatable; default: every bundled model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (default 1)")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes sharing the port, each with its own copy of the models "
                        "(default 1; one per core serves the most requests per second)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)


def load_predictors(checkpoints: list[str], names: list[str]) -> list:
    """Checkpoints first, then bundled models by name; neither given: every bundled model."""
    from ..inference.predict import Predictor

    predictors = [Predictor.from_checkpoint(c, run_name(c)) for c in checkpoints]
    predictors += [Predictor.bundled(n) for n in names]
    if not predictors:
        from ..weights import bundled_models

        predictors = [Predictor.bundled(m["name"]) for m in bundled_models()]
        if not predictors:
            raise ValueError("no bundled models found; pass --checkpoint CKPT")
    return predictors


def run_name(path: str) -> str:
    """``runs/bn`` and ``runs/bn/checkpoint.safetensors`` are both called ``bn``."""
    p = Path(path).resolve()
    return p.parent.name if p.is_file() and p.stem == "checkpoint" else (p.stem if p.is_file() else p.name)


def build_app(checkpoints: list[str], names: list[str], threads: int):
    """The app with its models loaded (once, before the first request)."""
    import torch

    from ..serve import create_app

    torch.set_num_threads(threads)
    app = create_app(load_predictors(checkpoints, names))
    # Everything loaded so far lives as long as the server: keep it out of the garbage
    # collector's scans, which otherwise stall requests (p99 latency halves under load).
    gc.collect()
    gc.freeze()
    return app


def worker_app():
    """uvicorn's app factory in each ``--workers`` process: what the parent was asked to serve."""
    spec = json.loads(os.environ[WORKER_ENV])
    return build_app(spec["checkpoints"], spec["models"], spec["threads"])


def cmd_serve(args) -> int:
    import uvicorn

    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    checkpoints = [str(Path(c).resolve()) for c in args.checkpoint]
    app = build_app(checkpoints, args.model, args.threads)  # a bad checkpoint fails here, once
    url = f"http://{args.host}:{args.port}/"
    names = ", ".join(app.state.models)
    if args.workers == 1:
        print(f"lenet5 serve: {names} at {url}", flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
        return 0
    # Several processes, each loading the models itself (a LeNet-5 is a quarter of a megabyte).
    del app
    from ..serve import workers

    spec = {"checkpoints": checkpoints, "models": args.model, "threads": args.threads}
    banner = f"lenet5 serve: {names} at {url} ({args.workers} processes)"
    if workers.balanced():
        return workers.run(spec, args.host, args.port, args.workers, args.log_level, banner)
    os.environ[WORKER_ENV] = json.dumps(spec)  # elsewhere: uvicorn's workers, one shared socket
    print(banner, flush=True)
    uvicorn.run("lenet5.commands.serve:worker_app", factory=True, workers=args.workers,
                host=args.host, port=args.port, log_level=args.log_level)
    return 0
