"""``lenet5 train``: flags override a TOML config, which overrides a preset and the defaults."""

from __future__ import annotations

import argparse
import json
import os

from ..config import PRESETS, TrainConfig, resolve_config


def register(sub) -> None:
    d = TrainConfig()
    p = sub.add_parser("train", help="train a model (PyTorch or NumPy engine)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       argument_default=argparse.SUPPRESS)
    p.add_argument("--model", help=f"registered model (default {d.model}; see `lenet5 models`)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="named recipe (see README)")
    p.add_argument("--config", dest="config_file", help="TOML file with TrainConfig keys")
    p.add_argument("--engine", choices=["torch", "numpy"])
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"])
    p.add_argument("--data-dir")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw", "sdlm"])
    p.add_argument("--lr", type=float)
    p.add_argument("--schedule", choices=["none", "paper", "step", "cosine", "onecycle"])
    p.add_argument("--loss", choices=["map", "mle", "ce"])
    p.add_argument("--distort", action="store_true", help="random affine distortions (paper III-C)")
    p.add_argument("--seed", type=int)
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--limit-train", type=int, help="train on the first N images only")
    p.add_argument("--val-split", type=int, help="hold out the last N training images")
    p.add_argument("--out", help="run directory (default runs/<preset-or-model>-<time>)")
    p.add_argument("--resume", help="run directory to continue")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished run in --out (refused without it)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, help="CPU threads for torch and NumPy's BLAS")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    p.add_argument("--ema", type=float, metavar="DECAY",
                   help="evaluate and save an exponential moving average of the weights")
    p.add_argument("--nproc", type=int, help="launch N processes through torchrun (DDP)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other TrainConfig field, value parsed as JSON (repeatable); "
                        "model options as model_args.NAME=VALUE")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_train)


def parse_sets(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if key.startswith("model_args."):
            out.setdefault("model_args", {})[key.split(".", 1)[1]] = value
        else:
            out[key] = value
    return out


def cmd_train(args) -> int:
    overrides = {k: v for k, v in vars(args).items() if k not in ("func", "command", "config_file", "set", "argv")}
    overrides.update(parse_sets(getattr(args, "set", [])))
    nproc = overrides.pop("nproc", None)
    if nproc and nproc > 1 and "WORLD_SIZE" not in os.environ:  # never relaunch from a rank
        from ..training.distributed import launch_torchrun

        argv = args.argv[args.argv.index("train") + 1 :]
        return launch_torchrun(nproc, argv)
    if overrides.get("resume") and not getattr(args, "config_file", None):
        # A resumed run continues with the config it was started with, plus explicit flags.
        from ..checkpoint import read_checkpoint

        saved = read_checkpoint(overrides["resume"])[2]["train_config"]
        saved.update({k: v for k, v in overrides.items() if k not in ("preset",)})
        overrides = saved
    cfg = resolve_config(file=getattr(args, "config_file", None), overrides=overrides)
    from ..training.loop import train

    train(cfg)
    return 0
