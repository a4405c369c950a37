"""``lenet5 serve``: the draw-a-digit page and prediction API, run by uvicorn."""

from __future__ import annotations

import gc
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("serve", help="web demo: draw a digit, watch LeNet-5 read it (and a JSON API)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="CKPT",
                   help="run directory or .safetensors file to serve (repeatable)")
    p.add_argument("--model", action="append", default=[], metavar="NAME",
                   help="bundled model to serve (repeatable; default: every bundled model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)


def load_predictors(checkpoints: list[str], names: list[str]) -> list:
    """Checkpoints first, then bundled models by name; neither given: every bundled model."""
    from ..predict import Predictor

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


def cmd_serve(args) -> int:
    import torch
    import uvicorn

    from ..serve import create_app

    torch.set_num_threads(args.threads)
    predictors = load_predictors(args.checkpoint, args.model)  # once, before the first request
    app = create_app(predictors)
    # Everything loaded so far lives as long as the server: keep it out of the garbage
    # collector's scans, which otherwise stall requests (p99 latency halves under load).
    gc.collect()
    gc.freeze()
    print(f"lenet5 serve: {', '.join(app.state.models)} at http://{args.host}:{args.port}/",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
